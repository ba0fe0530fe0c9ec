//! The admin CLI against the real binary: tables for people, `--json` for
//! scripts, the server's message and a non-zero exit on failure.

use serde_json::{Value, json};

use crate::helpers::ServerProcess;

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn spool(server: &ServerProcess, dir: &std::path::Path, args: &[&str]) -> Run {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_spool"))
        .args(args)
        .args(["--server", &server.base, "--data-dir"])
        .arg(dir)
        .env_remove("SPOOL_ADMIN_TOKEN")
        .output()
        .await
        .unwrap();
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn the_cli_lists_shows_finalizes_deletes_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &[]).await;
    let (id, token) = server.create_session().await;
    let mut ws = server.connect(&id, &token).await;
    assert_eq!(ws.recv_json().await["type"], "ready");
    ws.send_chunk(0, b"first").await;
    ws.send_chunk(2, b"third").await;
    ws.wait_ack(1).await;

    // The token comes from the data directory's admin-token file.
    let listed = spool(&server, dir.path(), &["sessions", "list", "--json"]).await;
    assert!(listed.ok, "{}", listed.stderr);
    let list: Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(list["sessions"][0]["id"], id.as_str());
    let table = spool(
        &server,
        dir.path(),
        &["sessions", "list", "--state", "recording"],
    )
    .await;
    let mut lines = table.stdout.lines();
    assert!(lines.next().unwrap().starts_with("ID "), "{}", table.stdout);
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with(&format!("{id}  recording")),
        "{}",
        table.stdout
    );

    let shown = spool(&server, dir.path(), &["sessions", "show", &id, "--json"]).await;
    let session: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(session["missing"], json!([[1, 1]]));
    let shown = spool(&server, dir.path(), &["sessions", "show", &id]).await;
    assert!(
        shown.stdout.contains("missing          1-1"),
        "{}",
        shown.stdout
    );

    let stats = spool(&server, dir.path(), &["stats", "--json"]).await;
    let stats: Value = serde_json::from_str(&stats.stdout).unwrap();
    assert_eq!(stats["sessions"]["recording"], 1);

    let finalized = spool(&server, dir.path(), &["sessions", "finalize", &id]).await;
    assert!(
        finalized.ok && finalized.stdout.contains(&id),
        "{}",
        finalized.stderr
    );
    drop(ws);
    let ready = server.wait_ready(&id, &token).await;
    assert_eq!(ready["recording"]["complete"], false);

    let deleted = spool(&server, dir.path(), &["sessions", "delete", &id]).await;
    assert!(deleted.ok, "{}", deleted.stderr);
    let gone = spool(&server, dir.path(), &["sessions", "show", &id]).await;
    assert!(!gone.ok);
    assert!(gone.stderr.contains("no such session"), "{}", gone.stderr);
    let bad = spool(
        &server,
        dir.path(),
        &["sessions", "list", "--state", "done"],
    )
    .await;
    assert!(!bad.ok && bad.stderr.contains("state:"), "{}", bad.stderr);
    server.kill9().await;
}

#[tokio::test]
async fn the_cli_without_a_token_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path(), &["--admin-token", "configured-secret"]).await;
    let elsewhere = tempfile::tempdir().unwrap();
    let run = spool(&server, elsewhere.path(), &["stats"]).await;
    assert!(!run.ok);
    assert!(run.stderr.contains("--admin-token"), "{}", run.stderr);
    server.kill9().await;
}
