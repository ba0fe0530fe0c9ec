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
