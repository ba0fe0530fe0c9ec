//! Reading a live WebM stream (MediaRecorder's) as it arrives in pieces,
//! into the items a rewrite needs: headers, top-level elements, clusters and
//! their blocks. Live streams give the Segment and each Cluster an unknown
//! size: a Cluster ends where the next Level 1 element (4-byte ID) or a new
//! EBML header begins. A recorder restart shows as a new EBML header.
//!
//! Memory stays bounded: only the element being read is buffered, and one
//! element larger than [`MAX_ELEMENT`] is an error, not an allocation.

use super::ebml::{self, ElementId, Parsed, Size, ids};

/// The largest single element kept whole (a block, Tracks, Tags…).
pub const MAX_ELEMENT: u64 = 16 * 1024 * 1024;

/// One piece of the stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// An EBML header (a new recorder stream begins), whole.
    EbmlHeader(Vec<u8>),
    /// A Segment begins; its children follow.
    SegmentStart,
    /// A whole element at the Segment's level other than a Cluster (Info,
    /// Tracks, Tags, SeekHead, Cues, Void…), header included.
    TopLevel { id: ElementId, bytes: Vec<u8> },
    /// A Cluster begins; its children follow.
    ClusterStart,
    /// The current Cluster's Timecode.
    ClusterTimecode(u64),
    /// A SimpleBlock or BlockGroup of the current Cluster, header included.
    Block { id: ElementId, bytes: Vec<u8> },
    /// Another child of the current Cluster (Position, PrevSize, Void…).
    ClusterOther { id: ElementId, bytes: Vec<u8> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("not EBML: {0}")]
    Ebml(#[from] ebml::EbmlError),
    #[error("element {id:#x} of {size} bytes is over the {MAX_ELEMENT}-byte limit")]
    TooLarge { id: ElementId, size: u64 },
    #[error("element {0:#x} inside a Cluster has an unknown size")]
    UnknownSizeChild(ElementId),
    #[error("the stream ends inside an element ({0} bytes left over)")]
    Truncated(usize),
    #[error("a Timecode that is not an unsigned integer")]
    BadTimecode,
    #[error("element {0:#x} does not belong here (misread or damaged bytes)")]
    Unexpected(ElementId),
}

/// What may stand among a Segment's children. Anything else means the
/// bytes are not what they seem (e.g. a stream cut mid-element and another
/// begun), and reading on would misplace the rest.
const SEGMENT_CHILDREN: [ElementId; 9] = [
    ids::SEEK_HEAD,
    ids::INFO,
    ids::TRACKS,
    ids::CUES,
    ids::TAGS,
    ids::CHAPTERS,
    ids::ATTACHMENTS,
    ids::VOID,
    ids::CRC32,
];

/// What may stand inside a Cluster.
const CLUSTER_CHILDREN: [ElementId; 9] = [
    ids::TIMECODE,
    ids::SIMPLE_BLOCK,
    ids::BLOCK_GROUP,
    ids::POSITION,
    ids::PREV_SIZE,
    ids::SILENT_TRACKS,
    ids::ENCRYPTED_BLOCK,
    ids::VOID,
    ids::CRC32,
];

/// Where the scanner is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before or between streams, or among the Segment's children.
    Top,
    /// Inside a Cluster of unknown size.
    ClusterOpen,
    /// Inside a Cluster that ends at this stream offset.
    ClusterUntil(u64),
}

#[derive(Debug)]
pub struct Scanner {
    buf: Vec<u8>,
    /// Bytes of `buf` already read (dropped on the next push, so reading
    /// many small elements does not move the rest each time).
    read: usize,
    /// Stream offset of `buf[read]`.
    offset: u64,
    place: Place,
}

impl Default for Scanner {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            read: 0,
            offset: 0,
            place: Place::Top,
        }
    }
}

impl Scanner {
    /// Appends the next bytes of the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.drain(..self.read);
        self.read = 0;
        self.buf.extend_from_slice(bytes);
    }

    /// A new recorder stream begins with the next push: what is left of an
    /// element the last stream did not finish is dropped (it cannot be
    /// played). Returns how many bytes that was.
    pub fn start_stream(&mut self) -> usize {
        let dropped = self.unread().len();
        self.consume(dropped);
        self.place = Place::Top;
        dropped
    }

    fn unread(&self) -> &[u8] {
        &self.buf[self.read..]
    }

    /// The next item, or `None` until more bytes are pushed.
    pub fn next_item(&mut self) -> Result<Option<Item>, ScanError> {
        if let Place::ClusterUntil(end) = self.place
            && self.offset >= end
        {
            self.place = Place::Top;
        }
        let header = match ebml::read_header(self.unread())? {
            Parsed::Done(header, _) => header,
            Parsed::NeedMore => return Ok(None),
        };
        let level1 = header.id > 0x00FF_FFFF;
        if level1 && self.place == Place::ClusterOpen {
            self.place = Place::Top; // a Level 1 element ends an open Cluster
        }
        match (header.id, self.place) {
            (ids::SEGMENT, _) => {
                self.consume(header.len);
                Ok(Some(Item::SegmentStart))
            }
            (ids::CLUSTER, _) => {
                self.consume(header.len);
                self.place = match header.size {
                    Size::Known(size) => Place::ClusterUntil(self.offset + size),
                    Size::Unknown => Place::ClusterOpen,
                };
                Ok(Some(Item::ClusterStart))
            }
            (id, Place::Top) if id != ids::EBML && !SEGMENT_CHILDREN.contains(&id) => {
                Err(ScanError::Unexpected(id))
            }
            (id, Place::ClusterOpen | Place::ClusterUntil(_))
                if !CLUSTER_CHILDREN.contains(&id) =>
            {
                Err(ScanError::Unexpected(id))
            }
            (id, Place::Top) => Ok(self.whole(header)?.map(|bytes| {
                if id == ids::EBML {
                    Item::EbmlHeader(bytes)
                } else {
                    Item::TopLevel { id, bytes }
                }
            })),
            (id, _) => {
                let Some(bytes) = self.whole(header)? else {
                    return Ok(None);
                };
                Ok(Some(match id {
                    ids::TIMECODE => Item::ClusterTimecode(
                        ebml::read_uint(&bytes[header.len..]).ok_or(ScanError::BadTimecode)?,
                    ),
                    ids::SIMPLE_BLOCK | ids::BLOCK_GROUP => Item::Block { id, bytes },
                    _ => Item::ClusterOther { id, bytes },
                }))
            }
        }
    }

    /// Checks that the stream ended between elements.
    pub fn finish(&self) -> Result<(), ScanError> {
        match self.unread().len() {
            0 => Ok(()),
            left => Err(ScanError::Truncated(left)),
        }
    }

    /// The whole element (header and data), once all of it is buffered.
    fn whole(&mut self, header: ebml::Header) -> Result<Option<Vec<u8>>, ScanError> {
        let size = match header.size {
            Size::Known(size) if size <= MAX_ELEMENT => size as usize,
            Size::Known(size) => {
                return Err(ScanError::TooLarge {
                    id: header.id,
                    size,
                });
            }
            Size::Unknown => return Err(ScanError::UnknownSizeChild(header.id)),
        };
        let total = header.len + size;
        let Some(bytes) = self.unread().get(..total) else {
            return Ok(None);
        };
        let bytes = bytes.to_vec();
        self.consume(total);
        Ok(Some(bytes))
    }

    fn consume(&mut self, len: usize) {
        self.read += len;
        self.offset += len as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ebml::{write_element, write_id, write_size_as, write_uint};

    fn unknown_size(out: &mut Vec<u8>, id: ElementId) {
        write_id(out, id);
        out.extend_from_slice(&[0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);
    }

    fn block(track_time: i16, payload: &[u8]) -> Vec<u8> {
        let mut data = vec![0x81];
        data.extend_from_slice(&track_time.to_be_bytes());
        data.push(0x80);
        data.extend_from_slice(payload);
        let mut out = Vec::new();
        write_element(&mut out, ids::SIMPLE_BLOCK, &data);
        out
    }

    /// A live stream as MediaRecorder writes one: unknown-size Segment and
    /// Clusters; then a second stream, as after a recorder restart.
    fn live_stream() -> Vec<u8> {
        let mut out = Vec::new();
        for stream in 0..2u8 {
            write_element(&mut out, ids::EBML, &[0x42, 0x86, 0x81, 0x01]);
            unknown_size(&mut out, ids::SEGMENT);
            let mut info = Vec::new();
            write_uint(&mut info, ids::TIMECODE_SCALE, 1_000_000);
            write_element(&mut out, ids::INFO, &info);
            write_element(&mut out, ids::TRACKS, &[0xAE, 0x80]);
            for cluster in 0..2u64 {
                unknown_size(&mut out, ids::CLUSTER);
                write_uint(&mut out, ids::TIMECODE, cluster * 1000);
                for i in 0..3i16 {
                    out.extend(block(i * 20, &[stream, cluster as u8, i as u8]));
                }
            }
        }
        out
    }

    fn scan_in_pieces(stream: &[u8], cuts: &[usize]) -> Vec<Item> {
        let mut scanner = Scanner::default();
        let mut items = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([stream.len()].iter()) {
            scanner.push(&stream[from..cut]);
            from = cut;
            while let Some(item) = scanner.next_item().unwrap() {
                items.push(item);
            }
        }
        scanner.finish().unwrap();
        items
    }

    #[test]
    fn reads_a_live_stream_the_same_however_it_is_cut() {
        let stream = live_stream();
        let whole = scan_in_pieces(&stream, &[]);
        let kinds: Vec<&str> = whole
            .iter()
            .map(|item| match item {
                Item::EbmlHeader(_) => "ebml",
                Item::SegmentStart => "segment",
                Item::TopLevel { .. } => "top",
                Item::ClusterStart => "cluster",
                Item::ClusterTimecode(_) => "timecode",
                Item::Block { .. } => "block",
                Item::ClusterOther { .. } => "other",
            })
            .collect();
        let one_stream = [
            "ebml", "segment", "top", "top", "cluster", "timecode", "block", "block", "block",
            "cluster", "timecode", "block", "block", "block",
        ];
        assert_eq!(kinds, [one_stream, one_stream].concat());
        assert!(whole.contains(&Item::ClusterTimecode(1000)));
        for cut in 1..stream.len() {
            assert_eq!(scan_in_pieces(&stream, &[cut]), whole, "cut at {cut}");
        }
        let every_byte: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(scan_in_pieces(&stream, &every_byte), whole);
    }

    #[test]
    fn a_known_size_cluster_ends_at_its_size() {
        let mut stream = Vec::new();
        let mut cluster = Vec::new();
        write_uint(&mut cluster, ids::TIMECODE, 5);
        cluster.extend(block(0, b"a"));
        write_id(&mut stream, ids::CLUSTER);
        write_size_as(&mut stream, cluster.len() as u64, 4);
        stream.extend(&cluster);
        write_element(&mut stream, ids::CUES, &[]);
        let items = scan_in_pieces(&stream, &[]);
        assert_eq!(items[1], Item::ClusterTimecode(5));
        assert!(matches!(items[3], Item::TopLevel { id: ids::CUES, .. }));
    }

    #[test]
    fn truncation_and_garbage_are_errors_not_panics() {
        let stream = live_stream();
        let mut scanner = Scanner::default();
        scanner.push(&stream[..stream.len() - 2]);
        while scanner.next_item().unwrap().is_some() {}
        assert!(matches!(scanner.finish(), Err(ScanError::Truncated(_))));

        let mut garbage = Scanner::default();
        garbage.push(&[0x00, 0x01, 0x02]);
        assert!(garbage.next_item().is_err());

        let mut huge = Scanner::default();
        let mut header = Vec::new();
        write_id(&mut header, ids::TRACKS);
        write_size_as(&mut header, MAX_ELEMENT + 1, 8);
        huge.push(&header);
        assert!(matches!(huge.next_item(), Err(ScanError::TooLarge { .. })));

        // An EBML header's child (DocType) where a Cluster's child belongs:
        // a stream was cut mid-element and another begun; never read on.
        let mut misread = Scanner::default();
        let mut stray = Vec::new();
        unknown_size(&mut stray, ids::CLUSTER);
        write_element(&mut stray, 0x4282, b"webm");
        misread.push(&stray);
        assert_eq!(misread.next_item(), Ok(Some(Item::ClusterStart)));
        assert_eq!(misread.next_item(), Err(ScanError::Unexpected(0x4282)));
    }

    #[test]
    fn a_flagged_new_stream_drops_what_the_last_one_left_unfinished() {
        let stream = live_stream();
        let mut scanner = Scanner::default();
        scanner.push(&stream[..stream.len() - 3]);
        while scanner.next_item().unwrap().is_some() {}
        assert!(scanner.start_stream() > 0);
        scanner.push(&stream);
        let mut items = Vec::new();
        while let Some(item) = scanner.next_item().unwrap() {
            items.push(item);
        }
        assert!(matches!(items[0], Item::EbmlHeader(_)));
        assert_eq!(scanner.finish(), Ok(()));
    }
}
