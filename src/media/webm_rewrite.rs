//! Rewriting a live WebM recording (unknown sizes, no Duration, no Cues)
//! into a file players can measure and seek: a known-size Segment, a
//! SeekHead, Info with the real Duration, the Tracks as recorded, Clusters of
//! at most [`CLUSTER_SPAN_MS`] with known sizes, and Cues with a point per
//! Cluster. Several recorder streams (restarts) become one timeline, each
//! later stream shifted to follow the one before.
//!
//! Streaming in two passes with flat memory: [`Rewriter::push`] takes the
//! source in pieces and writes finished Clusters to a body sink (at most one
//! Cluster is held); [`Rewriter::finish`] returns what goes before the body
//! (it needs the Duration) and the Cues that go after it.

use super::ebml::{self, ElementId, Parsed, ids};
use super::opus;
use super::webm_scan::{Item, ScanError, Scanner};

/// Longest span of one output Cluster: a seek lands within this.
pub const CLUSTER_SPAN_MS: i64 = 5_000;
/// The Matroska default timecode scale: 1 ms per tick.
const DEFAULT_SCALE_NS: u64 = 1_000_000;
const APP: &str = "spool";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("{0}")]
    Scan(#[from] ScanError),
    #[error("the stream has no {0}")]
    Missing(&'static str),
    #[error("a block before any Cluster timecode")]
    BlockOutsideCluster,
    #[error("a block this rewrite does not handle: {0}")]
    UnsupportedBlock(&'static str),
    #[error("the recording has more than one track")]
    SeveralTracks,
    #[error("a later recorder stream has other tracks than the first")]
    TracksChanged,
    #[error("a timecode scale of 0")]
    BadScale,
}

/// The parts of the rewritten file around the body of Clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// EBML header, Segment header, SeekHead, Info, Tracks.
    pub head: Vec<u8>,
    /// The Cues element, written after the body.
    pub tail: Vec<u8>,
    pub duration_ms: i64,
}

/// A Cluster being assembled.
#[derive(Debug, Default)]
struct OutCluster {
    /// Timecode in ticks.
    start: i64,
    blocks: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct Rewriter {
    scanner: Scanner,
    ebml_header: Option<Vec<u8>>,
    scale_ns: Option<u64>,
    tracks: Option<Vec<u8>>,
    /// The one track's number, from the first block.
    track: Option<u64>,
    streams: u32,
    /// Ticks added to the current stream's times (the earlier streams' length).
    shift: i64,
    /// End of the timeline so far, in ticks (last block's time plus its duration).
    end: i64,
    cluster_time: Option<i64>,
    cluster: Option<OutCluster>,
    /// (time in ticks, offset in the body) of each Cluster written.
    cues: Vec<(i64, u64)>,
    body_len: u64,
}

impl Rewriter {
    /// Takes the next bytes of the source; finished Clusters go to `body`.
    pub fn push(&mut self, bytes: &[u8], body: &mut Vec<u8>) -> Result<(), RewriteError> {
        self.scanner.push(bytes);
        while let Some(item) = self.scanner.next_item()? {
            self.on_item(item, body)?;
        }
        Ok(())
    }

    /// The next push begins a new recorder stream (a chunk flagged so): a
    /// partial element the last stream ended in is dropped, not misread.
    pub fn start_stream(&mut self) {
        let dropped = self.scanner.start_stream();
        if dropped > 0 {
            tracing::info!(
                bytes = dropped,
                "a recorder stream ended mid-element; its unfinished tail was dropped"
            );
        }
    }

    fn on_item(&mut self, item: Item, body: &mut Vec<u8>) -> Result<(), RewriteError> {
        match item {
            Item::EbmlHeader(bytes) => {
                self.streams += 1;
                if self.ebml_header.is_none() {
                    self.ebml_header = Some(bytes);
                }
                // A new recorder stream follows the timeline so far.
                self.shift = self.end;
                self.cluster_time = None;
            }
            Item::SegmentStart | Item::ClusterStart | Item::ClusterOther { .. } => {}
            Item::TopLevel { id, bytes } => self.on_top_level(id, bytes)?,
            Item::ClusterTimecode(time) => self.cluster_time = Some(time as i64),
            Item::Block { id, bytes } => self.on_block(id, &bytes, body)?,
        }
        Ok(())
    }

    fn on_top_level(&mut self, id: ElementId, bytes: Vec<u8>) -> Result<(), RewriteError> {
        match id {
            ids::INFO => {
                let scale = find_uint(&bytes, ids::TIMECODE_SCALE).unwrap_or(DEFAULT_SCALE_NS);
                if scale == 0 {
                    return Err(RewriteError::BadScale);
                }
                if self.scale_ns.is_some_and(|first| first != scale) {
                    return Err(RewriteError::TracksChanged);
                }
                self.scale_ns = Some(scale);
            }
            ids::TRACKS => match &self.tracks {
                None => self.tracks = Some(bytes),
                Some(first) if codec_private(first) == codec_private(&bytes) => {}
                Some(_) => return Err(RewriteError::TracksChanged),
            },
            // SeekHead, Cues, Tags, Void of the source: rewritten or dropped.
            _ => {}
        }
        Ok(())
    }

    fn on_block(
        &mut self,
        id: ElementId,
        bytes: &[u8],
        body: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let cluster_time = self.cluster_time.ok_or(RewriteError::BlockOutsideCluster)?;
        let element = Element::parse(bytes)?;
        // A BlockGroup (e.g. a last packet with DiscardPadding) keeps its
        // other children; only its Block's time changes.
        let block_data = match id {
            ids::SIMPLE_BLOCK => element.data,
            _ => find_child(bytes, &[BLOCK])
                .ok_or(RewriteError::UnsupportedBlock("BlockGroup without a Block"))?,
        };
        let block = Block::parse(block_data)?;
        match self.track {
            None => self.track = Some(block.track),
            Some(track) if track != block.track => return Err(RewriteError::SeveralTracks),
            Some(_) => {}
        }
        let scale = self.scale_ns.unwrap_or(DEFAULT_SCALE_NS);
        let time = self.shift + cluster_time + i64::from(block.relative_time);
        let duration_ns = opus::packet_duration_ns(block.frame).unwrap_or(0);
        self.end = self.end.max(time + (duration_ns / scale) as i64);
        let cluster = self.cluster_for(time, scale, body);
        let retimed = block.retimed((time - cluster.start) as i16);
        match id {
            ids::SIMPLE_BLOCK => {
                ebml::write_element(&mut cluster.blocks, ids::SIMPLE_BLOCK, &retimed)
            }
            _ => {
                let mut group = Vec::with_capacity(element.data.len());
                for child in children(element.data) {
                    let child = child?;
                    if child.id == BLOCK {
                        ebml::write_element(&mut group, BLOCK, &retimed);
                    } else {
                        group.extend_from_slice(child.whole);
                    }
                }
                ebml::write_element(&mut cluster.blocks, ids::BLOCK_GROUP, &group);
            }
        }
        Ok(())
    }

    /// The Cluster a block at `time` goes in: the current one while it spans
    /// less than [`CLUSTER_SPAN_MS`] (and relative times fit 16 bits), else a new one.
    fn cluster_for(&mut self, time: i64, scale: u64, body: &mut Vec<u8>) -> &mut OutCluster {
        let span = (CLUSTER_SPAN_MS * 1_000_000 / scale as i64).min(i64::from(i16::MAX));
        let fits = self
            .cluster
            .as_ref()
            .is_some_and(|c| time >= c.start && time - c.start < span);
        if !fits {
            self.flush_cluster(body);
            self.cluster = Some(OutCluster {
                start: time,
                blocks: Vec::new(),
            });
        }
        self.cluster.as_mut().expect("a cluster is open")
    }

    /// Writes the Cluster being assembled, if any, and notes its Cue.
    fn flush_cluster(&mut self, body: &mut Vec<u8>) {
        let Some(cluster) = self.cluster.take() else {
            return;
        };
        let mut data = Vec::with_capacity(cluster.blocks.len() + 10);
        ebml::write_uint(&mut data, ids::TIMECODE, cluster.start as u64);
        data.extend_from_slice(&cluster.blocks);
        let before = body.len();
        ebml::write_element(body, ids::CLUSTER, &data);
        self.cues.push((cluster.start, self.body_len));
        self.body_len += (body.len() - before) as u64;
    }

    /// Flushes the last Cluster into `body` and lays out the rest of the file.
    pub fn finish(mut self, body: &mut Vec<u8>) -> Result<Layout, RewriteError> {
        self.scanner.finish()?;
        self.flush_cluster(body);
        let ebml_header = self
            .ebml_header
            .take()
            .ok_or(RewriteError::Missing("EBML header"))?;
        let tracks = self.tracks.take().ok_or(RewriteError::Missing("Tracks"))?;
        let track = self.track.ok_or(RewriteError::Missing("audio block"))?;
        let scale = self.scale_ns.unwrap_or(DEFAULT_SCALE_NS);

        let mut info = Vec::new();
        ebml::write_uint(&mut info, ids::TIMECODE_SCALE, scale);
        ebml::write_element(&mut info, ids::MUXING_APP, APP.as_bytes());
        ebml::write_element(&mut info, ids::WRITING_APP, APP.as_bytes());
        ebml::write_float(&mut info, ids::DURATION, self.end as f64);
        let mut info_element = Vec::new();
        ebml::write_element(&mut info_element, ids::INFO, &info);

        // The SeekHead's positions are written in 8 bytes, so its size does
        // not depend on them.
        let seek_head_len =
            seek_head(&[(ids::INFO, 0), (ids::TRACKS, 0), (ids::CUES, 0)]).len() as u64;
        let info_at = seek_head_len;
        let tracks_at = info_at + info_element.len() as u64;
        let body_at = tracks_at + tracks.len() as u64;
        let cues_at = body_at + self.body_len;
        let seek = seek_head(&[
            (ids::INFO, info_at),
            (ids::TRACKS, tracks_at),
            (ids::CUES, cues_at),
        ]);
        let tail = cues(&self.cues, track, body_at);
        let segment_len = cues_at + tail.len() as u64;

        let mut head = ebml_header;
        ebml::write_id(&mut head, ids::SEGMENT);
        ebml::write_size_as(&mut head, segment_len, 8);
        head.extend_from_slice(&seek);
        head.extend_from_slice(&info_element);
        head.extend_from_slice(&tracks);
        let duration_ms = (self.end as u128 * u128::from(scale) / 1_000_000) as i64;
        Ok(Layout {
            head,
            tail,
            duration_ms,
        })
    }
}

/// The Block inside a BlockGroup.
const BLOCK: ElementId = 0xA1;

/// An element's ID, data, and whole bytes.
struct Element<'a> {
    id: ElementId,
    data: &'a [u8],
    whole: &'a [u8],
}

impl<'a> Element<'a> {
    /// The element at the start of `bytes` (which must hold all of it).
    fn parse(bytes: &'a [u8]) -> Result<Self, RewriteError> {
        let header = match ebml::read_header(bytes).map_err(ScanError::from)? {
            Parsed::Done(header, _) => header,
            Parsed::NeedMore => return Err(RewriteError::UnsupportedBlock("truncated")),
        };
        let ebml::Size::Known(size) = header.size else {
            return Err(RewriteError::UnsupportedBlock("unknown size"));
        };
        let end = usize::try_from(size)
            .ok()
            .and_then(|size| header.len.checked_add(size))
            .filter(|&end| end <= bytes.len())
            .ok_or(RewriteError::UnsupportedBlock("truncated"))?;
        Ok(Self {
            id: header.id,
            data: &bytes[header.len..end],
            whole: &bytes[..end],
        })
    }
}

/// The child elements of a master element's data, in order.
fn children(mut data: &[u8]) -> impl Iterator<Item = Result<Element<'_>, RewriteError>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let child = Element::parse(data);
        match &child {
            Ok(element) => data = &data[element.whole.len()..],
            Err(_) => data = &[],
        }
        Some(child)
    })
}

/// A (Simple)Block's data: the track number (as written), the relative
/// time, and the rest (flags and frame), which is copied unchanged.
struct Block<'a> {
    track: u64,
    track_vint: &'a [u8],
    relative_time: i16,
    rest: &'a [u8],
    frame: &'a [u8],
}

impl<'a> Block<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, RewriteError> {
        let first = *data
            .first()
            .ok_or(RewriteError::UnsupportedBlock("empty"))?;
        let vint_len = first.leading_zeros() as usize + 1;
        if first == 0 || data.len() < vint_len + 3 {
            return Err(RewriteError::UnsupportedBlock("short"));
        }
        let track_vint = &data[..vint_len];
        let track = ebml::read_uint(track_vint).unwrap_or(0) & !(1u64 << (7 * vint_len));
        let relative_time = i16::from_be_bytes([data[vint_len], data[vint_len + 1]]);
        let rest = &data[vint_len + 2..];
        if rest[0] & 0x06 != 0 {
            return Err(RewriteError::UnsupportedBlock("laced"));
        }
        Ok(Self {
            track,
            track_vint,
            relative_time,
            rest,
            frame: &rest[1..],
        })
    }

    /// The same block with another relative time.
    fn retimed(&self, relative_time: i16) -> Vec<u8> {
        let mut data = Vec::with_capacity(self.track_vint.len() + 2 + self.rest.len());
        data.extend_from_slice(self.track_vint);
        data.extend_from_slice(&relative_time.to_be_bytes());
        data.extend_from_slice(self.rest);
        data
    }
}

fn seek_head(entries: &[(ElementId, u64)]) -> Vec<u8> {
    let mut seeks = Vec::new();
    for &(id, position) in entries {
        let mut seek = Vec::new();
        let mut id_bytes = Vec::new();
        ebml::write_id(&mut id_bytes, id);
        ebml::write_element(&mut seek, ids::SEEK_ID, &id_bytes);
        ebml::write_element(&mut seek, ids::SEEK_POSITION, &position.to_be_bytes());
        ebml::write_element(&mut seeks, ids::SEEK, &seek);
    }
    let mut out = Vec::new();
    ebml::write_element(&mut out, ids::SEEK_HEAD, &seeks);
    out
}

/// A CuePoint per Cluster; positions are relative to the Segment's data.
fn cues(points: &[(i64, u64)], track: u64, body_at: u64) -> Vec<u8> {
    let mut all = Vec::new();
    for &(time, offset) in points {
        let mut positions = Vec::new();
        ebml::write_uint(&mut positions, ids::CUE_TRACK, track);
        ebml::write_uint(&mut positions, ids::CUE_CLUSTER_POSITION, body_at + offset);
        let mut point = Vec::new();
        ebml::write_uint(&mut point, ids::CUE_TIME, time as u64);
        ebml::write_element(&mut point, ids::CUE_TRACK_POSITIONS, &positions);
        ebml::write_element(&mut all, ids::CUE_POINT, &point);
    }
    let mut out = Vec::new();
    ebml::write_element(&mut out, ids::CUES, &all);
    out
}

/// The first unsigned integer child `id` of a master element (whole bytes).
fn find_uint(element: &[u8], id: ElementId) -> Option<u64> {
    find_child(element, &[id]).and_then(ebml::read_uint)
}

/// OpusHead and the like: what must match for streams to be joined.
fn codec_private(tracks: &[u8]) -> Option<&[u8]> {
    const TRACK_ENTRY: ElementId = 0xAE;
    const CODEC_PRIVATE: ElementId = 0x63A2;
    find_child(tracks, &[TRACK_ENTRY, CODEC_PRIVATE])
}

/// The data of the element at `path` below the master element `element`.
fn find_child<'a>(element: &'a [u8], path: &[ElementId]) -> Option<&'a [u8]> {
    let Ok(Parsed::Done(outer, _)) = ebml::read_header(element) else {
        return None;
    };
    let mut data = element.get(outer.len..)?;
    let (&wanted, rest) = path.split_first()?;
    while !data.is_empty() {
        let Ok(Parsed::Done(child, _)) = ebml::read_header(data) else {
            return None;
        };
        let ebml::Size::Known(size) = child.size else {
            return None;
        };
        let end = child.len.checked_add(usize::try_from(size).ok()?)?;
        let whole = data.get(..end)?;
        if child.id == wanted {
            return if rest.is_empty() {
                Some(&whole[child.len..])
            } else {
                find_child(whole, rest)
            };
        }
        data = &data[end..];
    }
    None
}
