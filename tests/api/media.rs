//! Recording files, checked with ffprobe: the WebM rewrite on live WebM made
//! by ffmpeg (`-live 1`: unknown sizes, no Duration, no Cues, like
//! MediaRecorder's) knows the duration, keeps every packet and does not
//! depend on where the source was cut; what cannot be parsed is served byte
//! for byte and flagged; Ogg/Opus keeps its bytes and gets its duration.

use std::path::{Path, PathBuf};
use std::process::Command;

use spool::media::webm_rewrite::Rewriter;

/// ffmpeg and ffprobe, or `None` (said loudly) outside CI when missing.
fn have_ffmpeg() -> bool {
    let found = Command::new("ffprobe").arg("-version").output().is_ok()
        && Command::new("ffmpeg").arg("-version").output().is_ok();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI=true but ffmpeg is not installed"
        );
        eprintln!("\n*** ffmpeg not installed: skipping the WebM rewrite checks ***\n");
    }
    found
}

fn live_webm(dir: &Path, name: &str, seconds: u32, frequency: u32) -> Vec<u8> {
    let path = dir.join(name);
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency={frequency}:duration={seconds}"))
        .args(["-c:a", "libopus", "-b:a", "48k", "-f", "webm", "-live", "1"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(path).unwrap()
}

/// Rewrites `source` fed in pieces cut at `cuts`; returns the whole file and its duration.
fn rewrite(source: &[u8], cuts: &[usize]) -> (Vec<u8>, i64) {
    let mut rewriter = Rewriter::default();
    let mut body = Vec::new();
    let mut from = 0;
    for &cut in cuts.iter().chain([source.len()].iter()) {
        rewriter.push(&source[from..cut], &mut body).unwrap();
        from = cut;
    }
    let layout = rewriter.finish(&mut body).unwrap();
    (
        [layout.head, body, layout.tail].concat(),
        layout.duration_ms,
    )
}

fn probe(path: &Path, entries: &str) -> String {
    let output = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-count_packets",
            "-select_streams",
            "a:0",
            "-show_entries",
            entries,
        ])
        .args(["-of", "default=noprint_wrappers=1:nokey=1"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        output.stderr.is_empty(),
        "ffprobe complained: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Walks the Segment's children: every CueClusterPosition must land on a
/// Cluster, one per Cluster, in order, and the Segment's size must be exact.
fn assert_cues_point_at_clusters(file: &[u8]) {
    use spool::media::ebml::{Parsed, Size, ids, read_header, read_uint};
    let header = |at: usize| match read_header(&file[at..]).unwrap() {
        Parsed::Done(h, _) => h,
        Parsed::NeedMore => panic!("truncated at {at}"),
    };
    let size = |h: spool::media::ebml::Header| match h.size {
        Size::Known(n) => n as usize,
        Size::Unknown => panic!("an unknown size in the rewritten file"),
    };
    let ebml = header(0);
    let segment_at = ebml.len + size(ebml);
    let segment = header(segment_at);
    let data_at = segment_at + segment.len;
    assert_eq!(
        data_at + size(segment),
        file.len(),
        "the Segment's size is not the file's"
    );
    let (mut clusters, mut cue_positions, mut at) = (Vec::new(), Vec::new(), data_at);
    while at < file.len() {
        let child = header(at);
        if child.id == ids::CLUSTER {
            clusters.push(at - data_at);
        }
        if child.id == ids::CUES {
            let mut p = at + child.len;
            while p < at + child.len + size(child) {
                let point = header(p);
                let mut q = p + point.len;
                while q < p + point.len + size(point) {
                    let inner = header(q);
                    if inner.id == ids::CUE_TRACK_POSITIONS {
                        let mut r = q + inner.len;
                        while r < q + inner.len + size(inner) {
                            let leaf = header(r);
                            if leaf.id == ids::CUE_CLUSTER_POSITION {
                                let start = r + leaf.len;
                                cue_positions
                                    .push(read_uint(&file[start..start + size(leaf)]).unwrap()
                                        as usize);
                            }
                            r += leaf.len + size(leaf);
                        }
                    }
                    q += inner.len + size(inner);
                }
                p += point.len + size(point);
            }
        }
        at += child.len + size(child);
    }
    assert!(clusters.len() >= 3, "{} clusters for 12 s", clusters.len());
    assert_eq!(cue_positions, clusters);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_live_webm_gets_a_duration_cues_and_every_packet() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = live_webm(dir.path(), "live.webm", 12, 440);
    let (file, duration_ms) = rewrite(&source, &[]);
    let path = write(dir.path(), "rewritten.webm", &file);

    assert!(
        (11_900..=12_100).contains(&duration_ms),
        "duration {duration_ms} ms"
    );
    let probed: f64 = probe(&path, "format=duration").parse().unwrap();
    assert!(
        (probed * 1000.0 - duration_ms as f64).abs() < 30.0,
        "ffprobe says {probed} s"
    );
    let source_path = write(dir.path(), "source.webm", &source);
    assert_eq!(
        probe(&path, "stream=nb_read_packets"),
        probe(&source_path, "stream=nb_read_packets")
    );
    assert_cues_point_at_clusters(&file);

    // The same bytes however the source was cut.
    let mut state = 7u64;
    for _ in 0..20 {
        let mut cuts = Vec::new();
        let mut at = 0;
        while at < source.len() {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            at += 1 + (state >> 33) as usize % 5000;
            if at < source.len() {
                cuts.push(at);
            }
        }
        assert!(
            rewrite(&source, &cuts).0 == file,
            "cuts {cuts:?} changed the file"
        );
    }
}

#[test]
fn two_recorder_streams_become_one_timeline() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let first = live_webm(dir.path(), "first.webm", 4, 440);
    let second = live_webm(dir.path(), "second.webm", 3, 660);
    let (file, duration_ms) = rewrite(&[first.clone(), second.clone()].concat(), &[first.len()]);
    assert!(
        (6_900..=7_100).contains(&duration_ms),
        "duration {duration_ms} ms"
    );
    let path = write(dir.path(), "joined.webm", &file);
    let probed: f64 = probe(&path, "format=duration").parse().unwrap();
    assert!((probed - 7.0).abs() < 0.1, "ffprobe says {probed} s");
    let packets: u64 = probe(&path, "stream=nb_read_packets").parse().unwrap();
    let first_packets: u64 = probe(
        &write(dir.path(), "a.webm", &first),
        "stream=nb_read_packets",
    )
    .parse()
    .unwrap();
    let second_packets: u64 = probe(
        &write(dir.path(), "b.webm", &second),
        "stream=nb_read_packets",
    )
    .parse()
    .unwrap();
    assert_eq!(packets, first_packets + second_packets);
}

/// What cannot be rewritten is served as the chunks joined, and says so.
#[tokio::test]
async fn an_unparsable_webm_is_served_byte_for_byte_and_flagged() {
    let app = crate::helpers::spawn_app().await;
    let mut cases: Vec<(&str, Vec<Vec<u8>>)> =
        vec![("not WebM at all", crate::helpers::payloads(5, 9))];
    if have_ffmpeg() {
        let dir = tempfile::tempdir().unwrap();
        let live = live_webm(dir.path(), "live.webm", 3, 440);
        let truncated = live[..live.len() - 100].to_vec();
        let mut garbage_after = live.clone();
        garbage_after.extend_from_slice(&[0x00; 64]);
        cases.push((
            "truncated",
            truncated.chunks(4000).map(<[u8]>::to_vec).collect(),
        ));
        cases.push((
            "garbage after a valid stream",
            garbage_after.chunks(4000).map(<[u8]>::to_vec).collect(),
        ));
    }
    for (case, chunks) in cases {
        let (session, status) = app.record("audio/webm;codecs=opus", &chunks).await;
        assert_eq!(status["state"], "ready", "{case}: {status}");
        assert_eq!(status["recording"]["rewritten"], false, "{case}");
        assert_eq!(
            status["recording"]["sha256"], status["recording"]["source_sha256"],
            "{case}"
        );
        assert!(
            app.download(&session).await == chunks.concat(),
            "{case}: not byte for byte"
        );
    }
    let metrics = app.metrics_text().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("spool_rewrite_failures_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// Ogg/Opus is joined as it is, and its duration read from the last granule
/// position minus the pre-skip.
#[tokio::test]
async fn an_ogg_recording_is_joined_as_is_with_its_duration() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tone.ogg");
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=5",
        ])
        .args(["-c:a", "libopus", "-f", "ogg"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let ogg = std::fs::read(&path).unwrap();
    let probed: f64 = probe(&path, "format=duration").parse().unwrap();
    let app = crate::helpers::spawn_app().await;
    let chunks: Vec<Vec<u8>> = ogg.chunks(3000).map(<[u8]>::to_vec).collect();
    let (session, status) = app.record("audio/ogg;codecs=opus", &chunks).await;
    let duration_ms = status["recording"]["duration_ms"].as_i64().unwrap();
    assert!(
        (duration_ms as f64 - probed * 1000.0).abs() <= 25.0,
        "{duration_ms} ms, ffprobe {probed} s"
    );
    assert_eq!(status["recording"]["rewritten"], false);
    assert!(app.download(&session).await == ogg);
}

/// A committed MediaRecorder recording (see `browser::fixtures`): its MIME
/// type and its chunks as the browser emitted them, with their flags.
fn fixture(name: &str) -> (String, Vec<(Vec<u8>, bool)>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mediarecorder");
    let bytes = std::fs::read(dir.join(format!("{name}.bin"))).unwrap();
    let description: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let mut at = 0;
    let mut chunks = Vec::new();
    for chunk in description["chunks"].as_array().unwrap() {
        let len = chunk["bytes"].as_u64().unwrap() as usize;
        chunks.push((
            bytes[at..at + len].to_vec(),
            chunk["new_stream"].as_bool().unwrap(),
        ));
        at += len;
    }
    assert_eq!(
        at,
        bytes.len(),
        "{name}: the index does not cover the bytes"
    );
    let mime_type = description["mime_type"].as_str().unwrap().to_owned();
    (mime_type, chunks)
}

/// The recorder streams in `chunks`, each joined.
fn streams(chunks: &[(Vec<u8>, bool)]) -> Vec<Vec<u8>> {
    let mut streams: Vec<Vec<u8>> = Vec::new();
    for (chunk, new_stream) in chunks {
        if *new_stream || streams.is_empty() {
            streams.push(Vec::new());
        }
        streams.last_mut().unwrap().extend_from_slice(chunk);
    }
    streams
}

/// Size and MD5 of every audio packet, in order (ffmpeg's framemd5).
fn packets(path: &Path) -> Vec<String> {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:a", "-c", "copy", "-f", "framemd5", "-"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ffmpeg failed on {}",
        path.display()
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.rsplitn(3, ',').take(2).collect::<Vec<_>>().join(","))
        .collect()
}

/// The duration of `ffmpeg -c copy`'s remux of `source`, in seconds.
fn remuxed_duration(dir: &Path, source: &Path) -> f64 {
    let remux = dir.join(format!(
        "remux-{}",
        source.file_name().unwrap().to_string_lossy()
    ));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(source)
        .args(["-c", "copy"])
        .arg(&remux)
        .status()
        .unwrap();
    assert!(status.success());
    probe(&remux, "format=duration").parse().unwrap()
}

/// Chromium's own MediaRecorder WebM, uploaded with its chunk boundaries and
/// flags: rewritten, ffprobe finds nothing wrong, the duration is within one
/// Opus frame of ffmpeg's remux of the source, and every packet survives
/// with its bytes — across a restart too.
#[tokio::test]
async fn chromium_webm_is_rewritten_to_match_an_ffmpeg_remux_packet_for_packet() {
    if !have_ffmpeg() {
        return;
    }
    let app = crate::helpers::spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    for name in ["chromium-opus-webm", "chromium-opus-webm-restarted"] {
        let (mime_type, chunks) = fixture(name);
        let (session, status) = app.record_flagged(&mime_type, &chunks).await;
        let recording = &status["recording"];
        assert_eq!(recording["rewritten"], true, "{name}: {status}");
        let file = write(
            dir.path(),
            &format!("{name}.webm"),
            &app.download(&session).await,
        );
        let probed: f64 = probe(&file, "format=duration").parse().unwrap();

        let (mut remuxed, mut source_packets) = (0.0, Vec::new());
        for (i, stream) in streams(&chunks).iter().enumerate() {
            let source = write(dir.path(), &format!("{name}-source-{i}.webm"), stream);
            remuxed += remuxed_duration(dir.path(), &source);
            source_packets.extend(packets(&source));
        }
        let duration_ms = recording["duration_ms"].as_i64().unwrap() as f64;
        assert!(
            (duration_ms - remuxed * 1000.0).abs() <= 20.0,
            "{name}: {duration_ms} ms, the remux {remuxed} s"
        );
        assert!(
            (duration_ms - probed * 1000.0).abs() <= 20.0,
            "{name}: {duration_ms} ms, ffprobe {probed} s"
        );
        assert_eq!(packets(&file), source_packets, "{name}: packets differ");
    }
}

/// Chromium's fragmented MP4 is joined as it is, and its duration read from
/// the fragments.
#[tokio::test]
async fn chromium_mp4_is_joined_as_is_with_its_duration() {
    if !have_ffmpeg() {
        return;
    }
    let (mime_type, chunks) = fixture("chromium-opus-mp4");
    let app = crate::helpers::spawn_app().await;
    let (session, status) = app.record_flagged(&mime_type, &chunks).await;
    let source: Vec<u8> = chunks.iter().flat_map(|(c, _)| c.clone()).collect();
    assert_eq!(status["recording"]["rewritten"], false, "{status}");
    assert!(app.download(&session).await == source);
    let dir = tempfile::tempdir().unwrap();
    let probed: f64 = probe(&write(dir.path(), "source.mp4", &source), "format=duration")
        .parse()
        .unwrap();
    let duration_ms = status["recording"]["duration_ms"].as_i64().unwrap() as f64;
    assert!(
        (duration_ms - probed * 1000.0).abs() <= 20.0,
        "{duration_ms} ms, ffprobe {probed} s"
    );
}

/// A recorder stream cut off mid-block (a tab closed while writing) and a
/// new one after it: the chunk's new-stream flag tells the rewrite where the
/// new stream begins, so the unfinished block is dropped and the rest kept.
/// Without the flag the same bytes cannot be parsed and are served as they came.
#[tokio::test]
async fn the_new_stream_flag_lets_a_stream_cut_mid_block_be_rewritten() {
    if !have_ffmpeg() {
        return;
    }
    let (mime_type, mut chunks) = fixture("chromium-opus-webm-restarted");
    let second = chunks.iter().skip(1).position(|(_, flag)| *flag).unwrap() + 1;
    let cut = &mut chunks[second - 1].0;
    cut.truncate(cut.len() - 10);
    let app = crate::helpers::spawn_app().await;
    let dir = tempfile::tempdir().unwrap();

    let (session, status) = app.record_flagged(&mime_type, &chunks).await;
    assert_eq!(status["recording"]["rewritten"], true, "{status}");
    let file = write(dir.path(), "flagged.webm", &app.download(&session).await);
    let whole = fixture("chromium-opus-webm-restarted").1;
    let [first, later] = &streams(&whole)[..] else {
        panic!("two streams expected")
    };
    let mut expected = packets(&write(dir.path(), "first.webm", first));
    expected.pop(); // the block the cut ended in
    expected.extend(packets(&write(dir.path(), "later.webm", later)));
    assert_eq!(packets(&file), expected);

    chunks[second].1 = false;
    let (session, status) = app.record_flagged(&mime_type, &chunks).await;
    assert_eq!(status["recording"]["rewritten"], false, "{status}");
    let source: Vec<u8> = chunks.iter().flat_map(|(c, _)| c.clone()).collect();
    assert!(app.download(&session).await == source);
}
