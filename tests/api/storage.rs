//! Object storage settings. The whole suite runs against S3-compatible
//! storage when `SPOOL_TEST_STORAGE` is set (see `helpers::test_storage`);
//! these are the behaviours only object storage has.

use spool::{App, Config};

use serde_json::json;

use crate::helpers::{
    ServerProcess, eventually, payloads, recordings_of, sha256_hex, spawn_app_with, test_database,
    test_storage,
};

/// Whether object storage is configured; if not, the test says it is
/// skipped. CI runs the suite a second time with it (see `.ci/run`).
fn object_storage_or_skip(test: &str) -> bool {
    let configured = std::env::var_os("SPOOL_TEST_STORAGE").is_some();
    if !configured {
        eprintln!("{test}: skipped, SPOOL_TEST_STORAGE is not set");
    }
    configured
}

#[tokio::test]
async fn storage_redirect_without_object_storage_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::with_data_dir(dir.path());
    config.storage = None;
    config.storage_redirect = true;
    let error = App::build(config)
        .await
        .err()
        .expect("the start is refused");
    assert!(
        format!("{error:#}").contains("--storage-redirect needs --storage"),
        "{error:#}"
    );
}

/// With `--storage-redirect`, a GET is a redirect to a presigned URL that
/// serves the bytes, ranges included, without a credential; the redirect
/// itself still needs the session's token, and HEAD and If-None-Match are
/// answered by the server with its own ETag.
#[tokio::test]
async fn a_recording_is_served_by_redirect_to_a_presigned_url() {
    if !object_storage_or_skip("a_recording_is_served_by_redirect_to_a_presigned_url") {
        return;
    }
    let app = spawn_app_with(|config| config.storage_redirect = true).await;
    assert!(test_storage(&app.data_dir).is_some());
    let (session, _) = app
        .record(
            "audio/ogg;codecs=opus",
            &[b"served ".to_vec(), b"by S3".to_vec()],
        )
        .await;
    let url = app.url(&format!("/v1/sessions/{}/recording", session.id));
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    let anonymous = no_redirects.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);

    let redirect = no_redirects
        .get(&url)
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_eq!(redirect.status(), 307);
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();

    // HEAD and conditional requests are answered here, with the SHA-256 ETag.
    let head = no_redirects
        .head(&url)
        .bearer_auth(&session.token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "12");
    let etag = head.headers()["etag"].to_str().unwrap().to_owned();
    let content_type = head.headers()["content-type"].clone();
    assert_eq!(etag, format!("\"{}\"", sha256_hex(b"served by S3")));
    let unchanged = no_redirects
        .get(&url)
        .bearer_auth(&session.token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(unchanged.status(), 304);
    assert!(location.contains("X-Amz-Signature="), "{location}");

    let whole = reqwest::get(&location).await.unwrap();
    assert_eq!(whole.status(), 200);
    // The player fetching from the store gets the recording's own type.
    assert_eq!(whole.headers()["content-type"], content_type);
    assert_eq!(whole.bytes().await.unwrap(), &b"served by S3"[..]);
    let part = no_redirects
        .get(&location)
        .header("range", "bytes=7-")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap(), &b"by S3"[..]);

    // Larger than a part: uploaded in parts, with the same headers.
    let chunks: Vec<Vec<u8>> = (0..9u8).map(|i| vec![i; 1 << 20]).collect();
    let (large, _) = app.record("audio/ogg;codecs=opus", &chunks).await;
    let redirect = no_redirects
        .get(app.url(&format!("/v1/sessions/{}/recording", large.id)))
        .bearer_auth(&large.token)
        .send()
        .await
        .unwrap();
    let location = redirect.headers()["location"].to_str().unwrap();
    let whole = reqwest::get(location).await.unwrap();
    assert_eq!(whole.headers()["content-type"], content_type);
    assert!(
        whole.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains(&format!("{}.ogg", large.id))
    );
    assert!(whole.bytes().await.unwrap() == chunks.concat());
}

/// Two databases sharing a prefix (a misconfiguration, or a data
/// directory started again without its database) leave each other's
/// recordings alone: the sweep finds the other database's marker and
/// removes no orphan, where it would otherwise delete every recording its
/// own database does not know.
#[tokio::test]
async fn databases_sharing_a_prefix_never_sweep_each_others_recordings() {
    if !object_storage_or_skip("databases_sharing_a_prefix_never_sweep_each_others_recordings") {
        return;
    }
    let first_dir = tempfile::tempdir().unwrap();
    let first = ServerProcess::start(first_dir.path(), &[]).await;
    let mine = record_on(&first).await;

    // A second database (a data directory of its own) on the first's prefix.
    let second_dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--storage".to_owned(),
        test_storage(first_dir.path()).unwrap().to_string(),
    ];
    if let Some(url) = test_database(second_dir.path()).await {
        args.extend(["--database-url".to_owned(), url]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let second = ServerProcess::start_plain(second_dir.path(), &args).await;
    let theirs = record_on(&second).await;
    second.kill9().await;

    // A start sweeps thoroughly, orphan recordings included.
    first.kill9().await;
    let first = ServerProcess::start(first_dir.path(), &[]).await;
    let recordings = recordings_of(first_dir.path()).await;
    eventually(
        "the sweep passes over the other database's recording",
        || async {
            let said = first
                .logs()
                .iter()
                .any(|line| line.contains("orphan recordings are not removed"));
            said || recordings.len(&theirs).await.unwrap().is_none()
        },
    )
    .await;
    let mut kept = recordings.keys().await.unwrap();
    kept.sort();
    let mut both = vec![mine, theirs];
    both.sort();
    assert_eq!(kept, both);
    first.kill9().await;
}

/// Records a short session on `server`; returns its id once finalized.
async fn record_on(server: &ServerProcess) -> String {
    let (id, token) = server.create_session().await;
    let mut ws = server.connect(&id, &token).await;
    assert_eq!(ws.recv_json().await["type"], "ready");
    ws.send_all(&payloads(3, 100), 0).await;
    ws.send_json(json!({"type": "finish", "chunks": 3})).await;
    while ws.recv_json().await["type"] != "finalized" {}
    id
}
