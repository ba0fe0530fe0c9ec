//! The writer's batch in PostgreSQL: one transaction per batch, in a fixed
//! handful of statements whatever its size.
//!
//! Every node has a writer, so two batches may touch one session (a
//! takeover in flight). Each batch first locks the rows of the sessions it
//! changes, in key order: batches on one session run one after the other
//! and never deadlock. Chunks go in with one multi-row `INSERT … ON CONFLICT
//! DO NOTHING`; a key already stored is then a duplicate or a conflict by
//! its CRC, and nothing stored is ever overwritten.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use sqlx::postgres::PgConnection;
use sqlx::{Connection, Row};

use super::batch::{self, Committed, Decision, Gate, PrefixMove, Write};
use super::finalize::{MarkedReady, RecordingFacts};
use super::sessions::Seen;
use super::webhooks::EventFor;
use crate::domain::{ChunkFrame, SessionState};

/// A chunk that passed its gate, first of its key in the batch.
struct Candidate<'a> {
    position: usize,
    session: i64,
    chunk: &'a ChunkFrame,
}

pub async fn commit_batch(
    conn: &mut PgConnection,
    writes: &[Write<'_>],
) -> anyhow::Result<Committed> {
    let now = super::now_ms();
    let mut tx = conn.begin().await.context("beginning the batch")?;
    let mut gates = lock_sessions(&mut tx, writes)
        .await
        .context("reading the sessions' state")?;
    let gated: HashSet<i64> = writes.iter().filter_map(Write::gated_session).collect();
    gates.retain(|seq, _| gated.contains(seq));
    let before: HashMap<i64, (i64, Option<i64>)> = gates
        .iter()
        .map(|(seq, gate)| (*seq, (gate.committed, gate.max_index)))
        .collect();

    let mut decisions = Vec::with_capacity(writes.len());
    let mut candidates = Vec::new();
    // Later requests for a key a candidate holds: (position, key, crc).
    let mut repeats = Vec::new();
    let mut first_of_key: HashSet<(i64, u32)> = HashSet::new();
    let mut touched = Vec::new();
    for (position, write) in writes.iter().enumerate() {
        let decision = match write {
            Write::Chunk { session, chunk } => {
                match batch::gate_chunk(gates.get_mut(session), chunk) {
                    Some(refused) => refused,
                    None => {
                        let key = (*session, chunk.index);
                        if first_of_key.insert(key) {
                            candidates.push(Candidate {
                                position,
                                session: *session,
                                chunk,
                            });
                        } else {
                            repeats.push((position, key, chunk.crc32c));
                        }
                        Decision::Stored // settled below
                    }
                }
            }
            Write::Finish { session, chunks } => {
                match batch::gate_finish(gates.get(session), *chunks) {
                    Some(decided) => decided,
                    None => {
                        set_finished(&mut tx, *session, *chunks, now)
                            .await
                            .context("recording finish")?;
                        if let Some(gate) = gates.get_mut(session) {
                            gate.expected_chunks = Some(*chunks);
                        }
                        Decision::Finished(*chunks)
                    }
                }
            }
            Write::DeleteChunks { session, limit } => Decision::Deleted(
                delete_slice(&mut tx, *session, *limit)
                    .await
                    .context("deleting chunks")?,
            ),
            Write::MarkReady {
                session,
                claimed_at,
                facts,
                now,
                event,
            } => Decision::MarkedReady(
                mark_ready(&mut tx, *session, *claimed_at, facts, *now, *event)
                    .await
                    .context("marking a session ready")?,
            ),
            Write::Touch { session, connected } => {
                touched.push((*session, *connected));
                Decision::Touched
            }
        };
        decisions.push(decision);
    }

    let inserted = insert_new(&mut tx, &candidates)
        .await
        .context("storing chunks")?;
    let held: Vec<(i64, u32)> = candidates
        .iter()
        .map(|c| (c.session, c.chunk.index))
        .filter(|key| !inserted.contains(key))
        .collect();
    let stored_crcs = stored_crcs(&mut tx, &held)
        .await
        .context("reading stored chunks' CRCs")?;

    // The CRC each key holds now: what was there, or what this batch stored.
    let mut holds: HashMap<(i64, u32), u32> = stored_crcs;
    let mut added: HashMap<i64, Added> = HashMap::new();
    for c in &candidates {
        let key = (c.session, c.chunk.index);
        decisions[c.position] = if inserted.contains(&key) {
            holds.insert(key, c.chunk.crc32c);
            let added = added.entry(c.session).or_default();
            added.chunks += 1;
            added.bytes += c.chunk.payload.len() as i64;
            added.indexes.push(i64::from(c.chunk.index));
            Decision::Stored
        } else {
            same_crc(holds.get(&key), c.chunk.crc32c)
        };
    }
    for (position, key, crc) in repeats {
        decisions[position] = same_crc(holds.get(&key), crc);
    }

    let mut committed = HashMap::new();
    let mut any_complete = false;
    for (session, gate) in &gates {
        let before = before[session];
        let value = match added.get_mut(session) {
            Some(added) => {
                added.indexes.sort_unstable();
                let value = match batch::prefix_move(before, &added.indexes) {
                    PrefixMove::To(end) => end,
                    PrefixMove::AskTable => contiguous_end(&mut tx, *session, before.0)
                        .await
                        .context("reading the stored prefix")?,
                };
                added.committed = value;
                value
            }
            None => before.0,
        };
        any_complete |= gate.expected_chunks.is_some_and(|n| value >= n);
        committed.insert(*session, value);
    }
    apply_added(&mut tx, &added, now)
        .await
        .context("moving the sessions' counters")?;
    record_seen(&mut tx, &batch::seen(touched), now)
        .await
        .context("marking sessions seen")?;
    tx.commit().await.context("committing the batch")?;
    Ok(Committed {
        decisions,
        committed,
        any_complete,
        stored_rows: inserted.len(),
    })
}

fn same_crc(held: Option<&u32>, crc: u32) -> Decision {
    match held {
        Some(&held) if held == crc => Decision::Duplicate,
        Some(_) => Decision::Conflict,
        // Unreachable: a key not inserted is held. Refuse rather than ack.
        None => Decision::Conflict,
    }
}

/// Locks the row of every session the batch changes, in key order, and
/// returns their gates.
async fn lock_sessions(
    conn: &mut PgConnection,
    writes: &[Write<'_>],
) -> sqlx::Result<HashMap<i64, Gate>> {
    let mut seqs: Vec<i64> = writes.iter().map(Write::session).collect();
    seqs.sort_unstable();
    seqs.dedup();
    let rows = sqlx::query(
        "SELECT seq, state, expected_chunks, max_index, committed, finalize_claimed_at
         FROM sessions WHERE seq = ANY($1) ORDER BY seq FOR UPDATE",
    )
    .bind(&seqs)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let gate = Gate {
                state: row.try_get::<SessionState, _>("state")?,
                expected_chunks: row.try_get("expected_chunks")?,
                max_index: row.try_get("max_index")?,
                committed: row.try_get("committed")?,
                claimed: row
                    .try_get::<Option<i64>, _>("finalize_claimed_at")?
                    .is_some(),
            };
            Ok((row.try_get("seq")?, gate))
        })
        .collect()
}

/// Inserts the candidates in one statement; returns the keys it stored
/// (the others were stored already).
async fn insert_new(
    conn: &mut PgConnection,
    candidates: &[Candidate<'_>],
) -> sqlx::Result<HashSet<(i64, u32)>> {
    if candidates.is_empty() {
        return Ok(HashSet::new());
    }
    let sessions: Vec<i64> = candidates.iter().map(|c| c.session).collect();
    let indexes: Vec<i64> = candidates
        .iter()
        .map(|c| i64::from(c.chunk.index))
        .collect();
    let crcs: Vec<i64> = candidates
        .iter()
        .map(|c| i64::from(c.chunk.crc32c))
        .collect();
    let flags: Vec<i64> = candidates
        .iter()
        .map(|c| i64::from(c.chunk.flags))
        .collect();
    let payloads: Vec<&[u8]> = candidates.iter().map(|c| &c.chunk.payload[..]).collect();
    let rows = sqlx::query(
        "INSERT INTO chunks (session, idx, crc, flags, payload)
         SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bytea[])
         ON CONFLICT (session, idx) DO NOTHING
         RETURNING session, idx",
    )
    .bind(&sessions)
    .bind(&indexes)
    .bind(&crcs)
    .bind(&flags)
    .bind(&payloads)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("session")?,
                row.try_get::<i64, _>("idx")? as u32,
            ))
        })
        .collect()
}

/// The CRCs stored at `keys`.
async fn stored_crcs(
    conn: &mut PgConnection,
    keys: &[(i64, u32)],
) -> sqlx::Result<HashMap<(i64, u32), u32>> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let sessions: Vec<i64> = keys.iter().map(|k| k.0).collect();
    let indexes: Vec<i64> = keys.iter().map(|k| i64::from(k.1)).collect();
    let rows = sqlx::query(
        "SELECT c.session, c.idx, c.crc FROM chunks c
         JOIN UNNEST($1::bigint[], $2::bigint[]) AS k(session, idx)
           ON c.session = k.session AND c.idx = k.idx",
    )
    .bind(&sessions)
    .bind(&indexes)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            let key = (
                row.try_get("session")?,
                row.try_get::<i64, _>("idx")? as u32,
            );
            Ok((key, row.try_get::<i64, _>("crc")? as u32))
        })
        .collect()
}

/// The end of the contiguous run of stored chunks that starts at `from`.
async fn contiguous_end(conn: &mut PgConnection, seq: i64, from: i64) -> sqlx::Result<i64> {
    let stored: Vec<i64> =
        sqlx::query_scalar("SELECT idx FROM chunks WHERE session = $1 AND idx >= $2 ORDER BY idx")
            .bind(seq)
            .bind(from)
            .fetch_all(conn)
            .await?;
    Ok(batch::run_end(from, &stored))
}

/// What one batch did to a session's counters.
#[derive(Debug, Default)]
struct Added {
    committed: i64,
    chunks: i64,
    bytes: i64,
    /// The indexes it stored.
    indexes: Vec<i64>,
}

async fn apply_added(
    conn: &mut PgConnection,
    added: &HashMap<i64, Added>,
    now: i64,
) -> sqlx::Result<()> {
    if added.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = added.keys().copied().collect();
    let committed: Vec<i64> = seqs.iter().map(|s| added[s].committed).collect();
    let chunks: Vec<i64> = seqs.iter().map(|s| added[s].chunks).collect();
    let bytes: Vec<i64> = seqs.iter().map(|s| added[s].bytes).collect();
    let max_index: Vec<Option<i64>> = seqs
        .iter()
        .map(|s| added[s].indexes.last().copied())
        .collect();
    sqlx::query(
        "UPDATE sessions AS s SET committed = v.committed,
                chunks_received = s.chunks_received + v.chunks,
                bytes_received = s.bytes_received + v.bytes,
                max_index = CASE WHEN v.max_index IS NULL THEN s.max_index
                                 ELSE GREATEST(COALESCE(s.max_index, -1), v.max_index) END,
                updated_at = $6, last_seen_at = GREATEST(s.last_seen_at, $6)
         FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[])
              AS v(seq, committed, chunks, bytes, max_index)
         WHERE s.seq = v.seq",
    )
    .bind(&seqs)
    .bind(&committed)
    .bind(&chunks)
    .bind(&bytes)
    .bind(&max_index)
    .bind(now)
    .execute(conn)
    .await
    .map(drop)
}

async fn record_seen(conn: &mut PgConnection, seen: &[Seen], now: i64) -> sqlx::Result<()> {
    if seen.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = seen.iter().map(|s| s.seq).collect();
    let connections: Vec<i64> = seen.iter().map(|s| s.connections).collect();
    let addrs: Vec<Option<String>> = seen.iter().map(|s| s.addr.clone()).collect();
    let agents: Vec<Option<String>> = seen.iter().map(|s| s.user_agent.clone()).collect();
    sqlx::query(
        "UPDATE sessions AS s SET connections = s.connections + v.connections,
                last_seen_at = GREATEST(s.last_seen_at, $5),
                last_client_addr = CASE WHEN v.connections > 0 THEN v.addr ELSE s.last_client_addr END,
                last_user_agent = CASE WHEN v.connections > 0 THEN v.agent ELSE s.last_user_agent END
         FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[])
              AS v(seq, connections, addr, agent)
         WHERE s.seq = v.seq",
    )
    .bind(&seqs)
    .bind(&connections)
    .bind(&addrs)
    .bind(&agents)
    .bind(now)
    .execute(conn)
    .await
    .map(drop)
}

async fn set_finished(
    conn: &mut PgConnection,
    seq: i64,
    chunks: i64,
    now: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE sessions SET expected_chunks = $2,
                state = CASE state WHEN 'recording' THEN 'finishing' ELSE state END,
                updated_at = $3, last_seen_at = GREATEST(last_seen_at, $3)
         WHERE seq = $1",
    )
    .bind(seq)
    .bind(chunks)
    .bind(now)
    .execute(conn)
    .await
    .map(drop)
}

async fn delete_slice(conn: &mut PgConnection, seq: i64, limit: i64) -> sqlx::Result<u64> {
    let deleted = sqlx::query(
        "DELETE FROM chunks WHERE session = $1
           AND idx IN (SELECT idx FROM chunks WHERE session = $1 ORDER BY idx LIMIT $2)",
    )
    .bind(seq)
    .bind(limit)
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected())
}

async fn mark_ready(
    conn: &mut PgConnection,
    seq: i64,
    claimed_at: i64,
    facts: &RecordingFacts,
    now: i64,
    event: Option<&EventFor>,
) -> sqlx::Result<MarkedReady> {
    let updated = sqlx::query(
        "UPDATE sessions SET state = 'ready', updated_at = $2, ready_at = $2, recording_bytes = $3,
                recording_sha256 = $4, recording_source_bytes = $5, recording_source_sha256 = $6,
                recording_duration_ms = $7, recording_complete = $8, recording_missing = $9,
                failure_reason = NULL, recording_rewritten = $10, finalize_claimed_at = NULL
         WHERE seq = $1 AND state = 'finishing' AND finalize_claimed_at = $11",
    )
    .bind(seq)
    .bind(now)
    .bind(facts.bytes)
    .bind(&facts.sha256)
    .bind(facts.source_bytes)
    .bind(&facts.source_sha256)
    .bind(facts.duration_ms)
    .bind(facts.complete)
    .bind(&facts.missing_json)
    .bind(facts.rewritten)
    .bind(claimed_at)
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 1 {
        if let Some(event) = event {
            super::postgres::enqueue_for(conn, seq, event).await?;
        }
        return Ok(MarkedReady::Ready);
    }
    let live: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM sessions WHERE seq = $1 AND state != 'deleted'")
            .bind(seq)
            .fetch_optional(conn)
            .await?;
    Ok(if live.is_some() {
        MarkedReady::NotFinishing
    } else {
        MarkedReady::Deleted
    })
}
