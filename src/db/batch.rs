//! The writer's batch as both databases see it: what it asks ([`Write`]),
//! what they decide for each request ([`Decision`]), and the decisions that
//! need no query (the session's gate, a finish, who connected). SQLite and
//! PostgreSQL differ only in how they find out what is stored.

use std::collections::HashMap;

use super::finalize::{MarkedReady, RecordingFacts};
use super::sessions::{ClientInfo, Seen};
use super::webhooks::EventFor;
use crate::domain::{ChunkFrame, SessionState};

/// One request of a batch, all committed in one transaction.
pub enum Write<'a> {
    Chunk {
        session: i64,
        chunk: &'a ChunkFrame,
    },
    /// Declares the session's chunk count.
    Finish {
        session: i64,
        chunks: i64,
    },
    /// A client connected (`connected` says who) or is still connected.
    Touch {
        session: i64,
        connected: Option<&'a ClientInfo>,
    },
    /// Marks a finalized session ready, if the step's claim (taken at
    /// `claimed_at`) still holds; records the webhook event with `event`.
    MarkReady {
        session: i64,
        claimed_at: i64,
        facts: &'a RecordingFacts,
        now: i64,
        event: Option<&'a EventFor>,
    },
    /// Deletes up to `limit` of the session's chunks.
    DeleteChunks {
        session: i64,
        limit: i64,
    },
}

impl Write<'_> {
    /// The session whose gate (state, counters) the request needs.
    pub fn gated_session(&self) -> Option<i64> {
        match self {
            Self::Chunk { session, .. } | Self::Finish { session, .. } => Some(*session),
            Self::Touch { .. } | Self::MarkReady { .. } | Self::DeleteChunks { .. } => None,
        }
    }

    /// The session whose row the request may change.
    pub fn session(&self) -> i64 {
        match self {
            Self::Chunk { session, .. }
            | Self::Finish { session, .. }
            | Self::Touch { session, .. }
            | Self::MarkReady { session, .. }
            | Self::DeleteChunks { session, .. } => *session,
        }
    }
}

/// What the transaction decided for each request, before `committed` is known.
#[derive(Debug, Clone)]
pub enum Decision {
    Stored,
    Duplicate,
    Conflict,
    NotAccepting(SessionState),
    BeyondFinish(i64),
    Unknown,
    Finished(i64),
    CountMismatch(i64),
    BelowReceived(i64),
    /// A touch: nothing to answer.
    Touched,
    /// This many chunks were deleted.
    Deleted(u64),
    MarkedReady(MarkedReady),
}

/// A committed batch.
pub struct Committed {
    /// One per request, in order.
    pub decisions: Vec<Decision>,
    /// Each gated session's stored prefix after the commit.
    pub committed: HashMap<i64, i64>,
    /// Some finished session now holds every chunk it declared.
    pub any_complete: bool,
    /// Chunk rows the batch stored.
    pub stored_rows: usize,
}

/// What the writer needs to know about a session before storing into it.
#[derive(Debug, Clone)]
pub struct Gate {
    pub state: SessionState,
    pub expected_chunks: Option<i64>,
    pub max_index: Option<i64>,
    /// Every index below this is stored.
    pub committed: i64,
    /// The finalize job has taken the session: no chunk may be added.
    pub claimed: bool,
}

/// Why the session's gate refuses the chunk, or `None` if it may be stored.
pub fn gate_chunk(gate: Option<&mut Gate>, chunk: &ChunkFrame) -> Option<Decision> {
    let Some(gate) = gate else {
        return Some(Decision::Unknown);
    };
    let state = gate.state;
    if !state.accepts_chunks() || gate.claimed {
        return Some(Decision::NotAccepting(state));
    }
    let index = i64::from(chunk.index);
    if let Some(expected) = gate.expected_chunks.filter(|&n| index >= n) {
        return Some(Decision::BeyondFinish(expected));
    }
    // Stored now or already: either way a later finish in this batch must
    // not declare fewer chunks than this.
    gate.max_index = gate.max_index.max(Some(index));
    None
}

/// What a finish decides, or `None` when it is accepted and the count must
/// be recorded (the caller then sets `gate.expected_chunks`).
pub fn gate_finish(gate: Option<&Gate>, chunks: i64) -> Option<Decision> {
    let Some(gate) = gate else {
        return Some(Decision::Unknown);
    };
    if let Some(expected) = gate.expected_chunks {
        return Some(if expected == chunks {
            Decision::Finished(chunks)
        } else {
            Decision::CountMismatch(expected)
        });
    }
    // Claimed (by the idle finalizer): what goes in is already decided.
    if !gate.state.accepts_chunks() || gate.claimed {
        return Some(Decision::NotAccepting(gate.state));
    }
    if let Some(max_index) = gate.max_index.filter(|&max| max >= chunks) {
        return Some(Decision::BelowReceived(max_index));
    }
    None
}

/// Whether a session whose stored chunks were `(committed, max_index)`
/// before this batch may hold chunk `index` already: below the prefix, or
/// among stored chunks past a gap. Anything else is certainly new.
pub fn may_hold((committed, max_index): (i64, Option<i64>), index: i64) -> bool {
    index < committed || max_index.is_some_and(|max| index <= max)
}

/// How a session's stored prefix moves with the indexes this batch stored
/// (`new`, sorted), given `(committed, max_index)` before it.
pub enum PrefixMove {
    /// The prefix ends here; no need to ask the table.
    To(i64),
    /// Chunks past a gap were stored before and this batch filled the gap's
    /// first index: only the table knows how far the run now reaches.
    AskTable,
}

pub fn prefix_move((committed, max_index): (i64, Option<i64>), new: &[i64]) -> PrefixMove {
    if max_index.is_none_or(|max| max < committed) {
        // Nothing was stored past the prefix: it grows by this batch's run.
        PrefixMove::To(run_end(committed, new))
    } else if new.binary_search(&committed).is_err() {
        PrefixMove::To(committed)
    } else {
        PrefixMove::AskTable
    }
}

/// Where the run starting at `from` ends in the sorted `indexes`.
pub fn run_end(from: i64, indexes: &[i64]) -> i64 {
    let mut end = from;
    for &index in indexes {
        if index == end {
            end += 1;
        } else if index > end {
            break;
        }
    }
    end
}

/// The batch's touches, one row per session: connections counted, the
/// last one's client kept.
pub fn seen<'a>(touched: impl IntoIterator<Item = (i64, Option<&'a ClientInfo>)>) -> Vec<Seen> {
    let mut by_session: HashMap<i64, Seen> = HashMap::new();
    for (session, connected) in touched {
        let seen = by_session.entry(session).or_insert_with(|| Seen {
            seq: session,
            connections: 0,
            addr: None,
            user_agent: None,
        });
        if let Some(client) = connected {
            seen.connections += 1;
            seen.addr = Some(client.addr.clone());
            seen.user_agent = client.user_agent.clone();
        }
    }
    by_session.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_ends_at_the_first_missing_index() {
        assert_eq!(run_end(5, &[]), 5);
        assert_eq!(run_end(5, &[6, 7]), 5);
        assert_eq!(run_end(5, &[5, 6, 8, 9]), 7);
        assert_eq!(run_end(0, &[0, 1, 2]), 3);
    }
}
