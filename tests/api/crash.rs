//! Crashes: `kill -9` of the real binary mid-upload, and a finalize cut short.

use spool::db::{self, Database};
use spool::domain::{MimeType, SessionId};
use spool::finalize::Finalizer;

use crate::helpers::{
    Inspect, ServerProcess, eventually, get_bytes, payloads, recordings_of, sha256_hex, sqlite_only,
};

#[tokio::test]
async fn kill_9_mid_upload_loses_no_acknowledged_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let chunks = payloads(400, 3);
    let server = ServerProcess::start(dir.path(), &[]).await;
    let (id, token) = server.create_session().await;

    let mut ws = server.connect(&id, &token).await;
    assert_eq!(ws.recv_json().await["type"], "ready");
    ws.send_all(&chunks, 0).await;
    // Kill as soon as part of the upload is acknowledged; the rest is in flight.
    let last_ack = ws.wait_ack(100).await;
    server.kill9().await;
    drop(ws);

    let server = ServerProcess::start(dir.path(), &[]).await;
    let mut ws = server.connect(&id, &token).await;
    let ready = ws.recv_json().await;
    let committed = ready["committed"].as_i64().unwrap();
    assert!(
        committed >= last_ack,
        "ready.committed {committed} is below the last ack {last_ack}"
    );
    ws.send_all(&chunks, committed as usize).await;
    let finalized = ws.finish_and_wait_finalized(chunks.len()).await;
    let joined = chunks.concat();
    assert_eq!(
        finalized["recording"]["sha256"],
        sha256_hex(&joined).as_str()
    );
    let downloaded = get_bytes(
        &format!("{}/v1/sessions/{id}/recording", server.base),
        &token,
    )
    .await;
    assert!(
        downloaded == joined,
        "the recording differs from what was sent"
    );
    server.kill9().await;
}

#[tokio::test]
async fn a_finalize_cut_short_is_finished_by_the_next_start() {
    if !sqlite_only(
        "stages the crash in the SQLite file; tests/api/nodes.rs kills a node mid-finalize",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let chunks = payloads(50, 4);
    let joined = chunks.concat();

    let server = ServerProcess::start(dir.path(), &[]).await;
    let (id, token) = server.create_session().await;
    let mut ws = server.connect(&id, &token).await;
    assert_eq!(ws.recv_json().await["type"], "ready");
    ws.send_all(&chunks, 0).await;
    ws.wait_ack(50).await;
    server.kill9().await;

    // With the server dead, run the finalize job's first steps by hand, as a
    // process that dies half way would have: claim the session, declare the
    // count, leave a partial file, then write the whole file durably — and
    // stop before the session is marked ready.
    let pool = db::sqlite::open_pool(&dir.path().join("spool.db"))
        .await
        .unwrap();
    let row = db::sessions::find_session(&pool, &SessionId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    let claim = db::finalize::claim_session(&pool, row.seq, db::now_ms(), 30_000)
        .await
        .unwrap()
        .unwrap();
    let mut conn = db::sqlite::open_writer_connection(&dir.path().join("spool.db"))
        .await
        .unwrap();
    db::chunks::set_finished(&mut conn, row.seq, 50, db::now_ms())
        .await
        .unwrap();
    drop(conn);
    let recordings = recordings_of(dir.path()).await;
    let mut partial = recordings
        .create(&id, &MimeType::octet_stream())
        .await
        .unwrap();
    partial.write_all(&joined[..1000]).await.unwrap();
    std::mem::forget(partial);
    let database = std::sync::Arc::new(
        db::sqlite::SqliteDatabase::open(&dir.path().join("spool.db"))
            .await
            .unwrap(),
    );
    let (writer, _writer_task) = spool::writer::spawn(
        database.chunk_writer().await.unwrap(),
        spool::writer::MAX_BATCH_ROWS,
        Default::default(),
        Default::default(),
        tokio_util::sync::CancellationToken::new(),
    );
    let finalizer = Finalizer {
        db: database,
        lease: std::time::Duration::from_secs(30),
        cluster: spool::cluster::Cluster::single(),
        recordings,
        metrics: Default::default(),
        idle_after: std::time::Duration::from_secs(3600),
        wakeup: Default::default(),
        finalized: tokio::sync::broadcast::channel(1).0,
        events: None,
        writer,
    };
    let claim = db::finalize::Claim {
        expected_chunks: Some(50),
        ..claim
    };
    finalizer.build_recording(&claim).await.unwrap().unwrap();
    pool.close().await;

    let server = ServerProcess::start(dir.path(), &[]).await;
    let status = server.wait_ready(&id, &token).await;
    let recording = &status["recording"];
    assert_eq!(recording["complete"], true);
    assert_eq!(recording["sha256"], sha256_hex(&joined).as_str());
    let downloaded = get_bytes(recording["url"].as_str().unwrap(), &token).await;
    assert!(
        downloaded == joined,
        "the recording differs from the chunks"
    );

    // Exactly one recording: the partial one was never made visible, or swept.
    let keys = recordings_of(dir.path()).await.keys().await.unwrap();
    assert_eq!(keys, vec![id.clone()]);
    server.kill9().await;

    // Crash 3: the process died after marking the session ready but before
    // deleting its chunks: the next start sweeps them.
    let db = Inspect::open(&dir.path().join("spool.db")).await;
    db.plant_leftover_chunk(row.seq).await;
    db.close().await;
    let server = ServerProcess::start(dir.path(), &[]).await;
    let db = Inspect::open(&dir.path().join("spool.db")).await;
    eventually(
        "the chunks of a ready session are swept after a restart",
        || async { db.all_chunks().await == 0 },
    )
    .await;
    server.kill9().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    if !sqlite_only("several nodes on PostgreSQL take no data-directory lock") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(dir.path(), &[]).await;
    let error = match spool::App::build(spool::Config::with_data_dir(dir.path())).await {
        Ok(_) => panic!("a second server started on a data directory in use"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("another spool server is using"), "{error}");
    first.kill9().await;
    // Once the first is gone, the directory is free again.
    let second = ServerProcess::start(dir.path(), &[]).await;
    second.kill9().await;
}
