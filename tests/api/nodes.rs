//! Several nodes on one PostgreSQL database and one bucket: any node takes
//! any connection, a newer connection anywhere takes over, and a node that
//! dies mid-upload or mid-finalize loses nothing.
//!
//! These need `SPOOL_TEST_DATABASE` and `SPOOL_TEST_STORAGE` (CI sets both
//! in its PostgreSQL pass). Without them they say so and pass, unless
//! `CI=true`: there a missing database is a broken CI, not a reason to skip.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{
    Inspect, ServerProcess, Ws, eventually, get_bytes, get_json, on_postgres, payloads,
    recordings_of, sha256_hex,
};

const ADMIN_TOKEN: &str = "nodes-test-admin-token-0123456789";

/// Two nodes over their own data directories, sharing the database and
/// bucket named after `shared`.
struct Nodes {
    shared: tempfile::TempDir,
    _dirs: Vec<tempfile::TempDir>,
}

impl Nodes {
    fn available() -> Option<Self> {
        if !on_postgres() || std::env::var_os("SPOOL_TEST_STORAGE").is_none() {
            let why = "several nodes need SPOOL_TEST_DATABASE and SPOOL_TEST_STORAGE \
                       (.ci/run sets both in its PostgreSQL pass)";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true: {why}"
            );
            eprintln!("skipped: {why}");
            return None;
        }
        Some(Self {
            shared: tempfile::tempdir().unwrap(),
            _dirs: Vec::new(),
        })
    }

    async fn start(&mut self, extra: &[&str]) -> ServerProcess {
        let mut args = vec!["--admin-token", ADMIN_TOKEN];
        args.extend_from_slice(extra);
        self.start_in(tempfile::tempdir().unwrap(), &args).await
    }

    /// A node without `--admin-token`, over `dir`.
    async fn start_tokenless(&mut self, dir: tempfile::TempDir) -> ServerProcess {
        self.start_in(dir, &[]).await
    }

    async fn start_in(&mut self, dir: tempfile::TempDir, args: &[&str]) -> ServerProcess {
        let node = ServerProcess::start_node(dir.path(), self.shared.path(), args).await;
        self._dirs.push(dir);
        node
    }
}

/// The status of an admin request to `node` with `token`.
async fn admin_status(node: &ServerProcess, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{}/v1/admin/sessions", node.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Without `--admin-token`, the first node makes the token and every node
/// accepts it; a later node's own token file does not open its admin API.
#[tokio::test]
async fn nodes_without_an_admin_token_share_the_first_ones() {
    let Some(mut nodes) = Nodes::available() else {
        return;
    };
    let first_dir = tempfile::tempdir().unwrap();
    let token_file = first_dir.path().join("admin-token");
    let first = nodes.start_tokenless(first_dir).await;
    let token = std::fs::read_to_string(&token_file).unwrap();
    let token = token.trim();

    let second_dir = tempfile::tempdir().unwrap();
    let second_file = second_dir.path().join("admin-token");
    let second = nodes.start_tokenless(second_dir).await;
    assert!(
        !second_file.exists(),
        "a node that lost the race keeps no token file"
    );
    let other_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        other_dir.path().join("admin-token"),
        "a-token-of-its-own-0123456789\n",
    )
    .unwrap();
    let other = nodes.start_tokenless(other_dir).await;

    for node in [&first, &second, &other] {
        assert_eq!(admin_status(node, token).await, 200);
        assert_eq!(
            admin_status(node, "a-token-of-its-own-0123456789").await,
            401
        );
    }
    assert!(
        other
            .logs()
            .iter()
            .any(|line| line.contains("this node's admin token is not accepted"))
    );
}

/// Nodes given different `--admin-token`s each accept only their own, so a
/// node whose token replaces another's says so; the latest configured
/// token is the one a node without `--admin-token` accepts.
#[tokio::test]
async fn a_node_configured_with_another_admin_token_says_so() {
    let Some(mut nodes) = Nodes::available() else {
        return;
    };
    let first = nodes.start(&[]).await;
    let same = nodes.start(&[]).await;
    let rotated = "a-rotated-admin-token-0123456789";
    let other = nodes
        .start_in(tempfile::tempdir().unwrap(), &["--admin-token", rotated])
        .await;
    let tokenless = nodes.start_tokenless(tempfile::tempdir().unwrap()).await;

    let warned = |node: &ServerProcess| {
        node.logs()
            .iter()
            .any(|line| line.contains("replaces a different token"))
    };
    assert!(
        !warned(&first) && !warned(&same),
        "the same token is no change"
    );
    assert!(warned(&other), "{:#?}", other.logs());
    assert_eq!(admin_status(&first, ADMIN_TOKEN).await, 200);
    assert_eq!(admin_status(&other, ADMIN_TOKEN).await, 401);
    assert_eq!(admin_status(&other, rotated).await, 200);
    assert_eq!(admin_status(&tokenless, rotated).await, 200);
    assert_eq!(admin_status(&tokenless, ADMIN_TOKEN).await, 401);
}

/// A session uploading through node A, cut when A dies, resumed on node B
/// from what the database says is committed, finished there: the recording
/// is every byte sent, in order.
#[tokio::test]
async fn an_upload_cut_on_one_node_resumes_on_another_exactly() {
    let Some(mut nodes) = Nodes::available() else {
        return;
    };
    let a = nodes.start(&[]).await;
    let b = nodes.start(&[]).await;
    let chunks = payloads(80, 11);
    let (id, token) = a.create_session().await;

    let mut on_a = a.connect(&id, &token).await;
    assert_eq!(on_a.recv_json().await["type"], "ready");
    on_a.send_all(&chunks[..40], 0).await;
    on_a.wait_ack(40).await;
    a.kill9().await;

    let mut on_b = b.connect(&id, &token).await;
    let ready = on_b.recv_json().await;
    assert_eq!(ready["type"], "ready");
    assert_eq!(ready["committed"], 40, "B resumes where A's acks ended");
    // The client resends from its oldest unacknowledged chunk; a duplicate
    // of an acknowledged one is dropped.
    on_b.send_all(&chunks, 38).await;
    let finalized = on_b.finish_and_wait_finalized(80).await;
    assert_eq!(finalized["recording"]["complete"], true);

    let joined = chunks.concat();
    let status = get_json(&format!("{}/v1/sessions/{id}", b.base), &token).await;
    assert_eq!(status["recording"]["sha256"], sha256_hex(&joined).as_str());
    let downloaded = get_bytes(&format!("{}/v1/sessions/{id}/recording", b.base), &token).await;
    assert!(
        downloaded == joined,
        "the recording differs from what was sent"
    );
}

/// A newer connection on node B takes over from an older one on node A:
/// A's socket closes with 4499 within a second. Finalized by node A (an
/// admin's "finalize now" there, as the last chunk never came, B's job
/// leaves it alone), the socket on B still hears `finalized`.
#[tokio::test]
async fn a_connection_on_another_node_takes_over_and_hears_finalized() {
    let Some(mut nodes) = Nodes::available() else {
        return;
    };
    let a = nodes.start(&[]).await;
    let b = nodes.start(&[]).await;
    let chunks = payloads(10, 12);
    let (id, token) = a.create_session().await;

    let mut on_a = a.connect(&id, &token).await;
    assert_eq!(on_a.recv_json().await["type"], "ready");
    on_a.send_all(&chunks[..5], 0).await;
    on_a.wait_ack(5).await;

    let mut on_b = b.connect(&id, &token).await;
    assert_eq!(on_b.recv_json().await["committed"], 5);
    let closed = tokio::time::timeout(Duration::from_secs(1), on_a.closed())
        .await
        .expect("node A's socket closes within a second of the takeover on B");
    assert_eq!(closed.code, 4499);

    on_b.send_all(&chunks[..9], 5).await;
    on_b.wait_ack(9).await;
    on_b.send_json(json!({"type": "finish", "chunks": 10}))
        .await;
    assert_eq!(on_b.recv_json().await["type"], "finishing");
    let finalize = reqwest::Client::new()
        .post(format!("{}/v1/admin/sessions/{id}/finalize", a.base))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(finalize.status().is_success(), "{}", finalize.status());
    let finalized = wait_for_finalized(&mut on_b).await;
    assert_eq!(finalized["recording"]["complete"], false);
    assert_eq!(
        finalized["recording"]["sha256"],
        sha256_hex(&chunks[..9].concat()).as_str()
    );
}

/// The node running a session's finalize step is killed in the middle of
/// it: once its lease runs out, the other node finalizes the session, and
/// there is exactly one recording, equal to the chunks.
#[tokio::test]
async fn a_node_killed_mid_finalize_is_finished_by_another() {
    let Some(mut nodes) = Nodes::available() else {
        return;
    };
    let lease = ["--finalize-lease", "3s"];
    let a = nodes.start(&lease).await;
    // Large enough that the join is still running when A dies.
    let chunks: Vec<Vec<u8>> = payloads(600, 13)
        .into_iter()
        .map(|chunk| chunk.repeat(40))
        .collect();
    let (id, token) = a.create_session().await;
    let mut on_a = a.connect(&id, &token).await;
    assert_eq!(on_a.recv_json().await["type"], "ready");
    // Paced, as a recorder sends.
    for (index, chunk) in chunks.iter().enumerate() {
        on_a.send_chunk(index as u32, chunk).await;
        if index % 20 == 19 {
            on_a.wait_ack(index as i64 + 1).await;
        }
    }
    on_a.send_json(json!({"type": "finish", "chunks": chunks.len()}))
        .await;
    assert_eq!(on_a.recv_json().await["type"], "finishing");
    let db = Inspect::open(&nodes.shared.path().join("spool.db")).await;
    eventually("node A claims the session", || async {
        db.finalize_claimed(&id).await
    })
    .await;
    let finished_before_kill = a.logs().iter().any(|line| line.contains("recording ready"));
    assert!(
        !finished_before_kill,
        "the finalize step ended before the kill; the test needs a longer recording"
    );
    a.kill9().await;

    let b = nodes.start(&lease).await;
    let mut on_b = b.connect(&id, &token).await;
    assert_eq!(on_b.recv_json().await["type"], "ready");
    // A client resends its finish after a reconnect; it waits for the lease.
    on_b.send_json(json!({"type": "finish", "chunks": chunks.len()}))
        .await;
    assert_eq!(on_b.recv_json().await["type"], "finishing");
    let finalized = wait_for_finalized(&mut on_b).await;
    let joined = chunks.concat();
    assert_eq!(
        finalized["recording"]["sha256"],
        sha256_hex(&joined).as_str()
    );
    let downloaded = get_bytes(&format!("{}/v1/sessions/{id}/recording", b.base), &token).await;
    assert!(
        downloaded == joined,
        "the recording differs from the chunks"
    );
    let keys = recordings_of(nodes.shared.path())
        .await
        .keys()
        .await
        .unwrap();
    assert_eq!(keys, vec![id.clone()], "exactly one recording");
}

async fn wait_for_finalized(ws: &mut Ws) -> serde_json::Value {
    loop {
        let message = ws.recv_json().await;
        if message["type"] == "finalized" {
            return message;
        }
    }
}

/// `spool migrate-to` on a populated single-node data directory: ready
/// recordings and a recording still in progress move to PostgreSQL and the
/// bucket; a second run copies nothing; a node on the new backends serves
/// the recordings and resumes the live session where its acks ended.
#[tokio::test]
async fn migrate_to_moves_a_single_node_install_to_several_nodes() {
    let Some(mut nodes) = Nodes::available() else {
        return;
    };
    let single = tempfile::tempdir().unwrap();
    let server = ServerProcess::start_plain(single.path(), &[]).await;
    let mut finished = Vec::new();
    for seed in [21, 22] {
        let chunks = payloads(12, seed);
        let (id, token) = server.create_session().await;
        let mut ws = server.connect(&id, &token).await;
        assert_eq!(ws.recv_json().await["type"], "ready");
        ws.send_all(&chunks, 0).await;
        ws.finish_and_wait_finalized(chunks.len()).await;
        finished.push((id, token, chunks.concat()));
    }
    let live_chunks = payloads(20, 23);
    let (live, live_token) = server.create_session().await;
    let mut ws = server.connect(&live, &live_token).await;
    assert_eq!(ws.recv_json().await["type"], "ready");
    ws.send_all(&live_chunks[..10], 0).await;
    ws.wait_ack(10).await;
    server.kill9().await;

    let shared = nodes.shared.path();
    let database_url = crate::helpers::test_database(shared).await.unwrap();
    let storage = crate::helpers::test_storage(shared).unwrap().to_string();
    let migrate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_spool"))
            .arg("migrate-to")
            .args(["--database-url", &database_url, "--storage", &storage])
            .arg("--data-dir")
            .arg(single.path())
            .output()
            .unwrap()
    };
    let first = migrate();
    let said = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        said.contains("done: 3 sessions copied, 0 there already; 10 chunks and 2 recordings"),
        "{said}"
    );
    let again = migrate();
    let said = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success());
    assert!(
        said.contains("done: 0 sessions copied, 3 there already"),
        "{said}"
    );

    assert!(said.contains("the admin token in"), "{said}");
    let single_token = std::fs::read_to_string(single.path().join("admin-token")).unwrap();
    let tokenless = nodes.start_tokenless(tempfile::tempdir().unwrap()).await;
    assert_eq!(admin_status(&tokenless, single_token.trim()).await, 200);

    let node = nodes.start(&[]).await;
    for (id, token, joined) in &finished {
        let status = get_json(&format!("{}/v1/sessions/{id}", node.base), token).await;
        assert_eq!(status["state"], "ready");
        let downloaded =
            get_bytes(&format!("{}/v1/sessions/{id}/recording", node.base), token).await;
        assert!(&downloaded == joined, "a migrated recording differs");
    }
    let mut ws = node.connect(&live, &live_token).await;
    let ready = ws.recv_json().await;
    assert_eq!(
        ready["committed"], 10,
        "the live session resumes where its acks ended"
    );
    ws.send_all(&live_chunks, 10).await;
    let finalized = ws.finish_and_wait_finalized(live_chunks.len()).await;
    assert_eq!(
        finalized["recording"]["sha256"],
        sha256_hex(&live_chunks.concat()).as_str()
    );

    // A running single node is never copied from.
    let server = ServerProcess::start_plain(single.path(), &[]).await;
    let refused = migrate();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("stop the server"));
    server.kill9().await;
}
