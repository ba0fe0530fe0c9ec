//! `spool load` as a user runs it: a few recorders for a few seconds against
//! the real binary, every recording verified; idle sockets; the ceiling.
//! (Timings are the benchmark's business, not this test's.)

use serde_json::Value;

use crate::helpers::ServerProcess;

async fn spool_load(args: &[&str]) -> Value {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "spool load {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn a_short_realistic_run_verifies_every_recording() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--api-key", "load-key"]).await;
    let report = spool_load(&[
        "realistic",
        "--server",
        &server.base,
        "--api-key",
        "load-key",
        "--sessions",
        "6",
        "--rate",
        "10",
        "--seconds",
        "1.5",
        "--ceiling-seconds",
        "0.3",
    ])
    .await;
    assert_eq!(report["verified"], 6, "{report}");
    assert_eq!(report["mismatched"], 0);
    assert_eq!(report["unfinished"], 0);
    assert_eq!(report["chunks_acked"], 6 * 15);
    assert!(report["ack_latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(report["fraction_of_ceiling"].as_f64().unwrap() > 0.0);
    assert_eq!(report["closes"], serde_json::json!({}));
}

#[tokio::test]
async fn saturate_and_idle_runs_report_what_they_did() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--max-sessions-per-minute", "0"]).await;
    let report = spool_load(&[
        "saturate",
        "--server",
        &server.base,
        "--sessions",
        "4",
        "--chunks",
        "50",
        "--window",
        "8",
        "--ceiling-seconds",
        "0",
    ])
    .await;
    assert_eq!(report["verified"], 4, "{report}");
    assert_eq!(report["chunks_acked"], 200);
    assert_eq!(report["ceiling"], Value::Null);

    let idle = spool_load(&[
        "idle",
        "--server",
        &server.base,
        "--sessions",
        "20",
        "--seconds",
        "1",
    ])
    .await;
    assert_eq!(idle["sockets_open"], 20, "{idle}");
    assert_eq!(idle["closed_early"], 0);
    assert!(idle["server_rss_with_sockets_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn the_ceiling_runs_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let ceiling = spool_load(&[
        "ceiling",
        "--seconds",
        "0.3",
        "--dir",
        dir.path().to_str().unwrap(),
    ])
    .await;
    assert!(
        ceiling["rows_per_second"].as_f64().unwrap() > 0.0,
        "{ceiling}"
    );
    assert_eq!(ceiling["batch_rows"], 1000);
}
