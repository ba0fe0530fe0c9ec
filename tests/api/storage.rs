//! Object storage settings. The whole suite runs against S3-compatible
//! storage when `SPOOL_TEST_STORAGE` is set (see `helpers::test_storage`);
//! these are the behaviours only object storage has.

use spool::{App, Config};

use crate::helpers::{get_bytes, sha256_hex, spawn_app, spawn_app_with, test_config, test_storage};

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

/// Two databases must never share a prefix: each would sweep the other's
/// recordings away as orphans. The first server claims its prefix; a server
/// with another database (another data directory, so another SQLite file or
/// PostgreSQL database) is refused there, and the first one's recording
/// stays.
#[tokio::test]
async fn a_prefix_holding_another_databases_recordings_is_refused_at_start() {
    if !object_storage_or_skip("a_prefix_holding_another_databases_recordings_is_refused_at_start")
    {
        return;
    }
    let first = spawn_app().await;
    let (session, _) = first
        .record("audio/ogg;codecs=opus", &[b"mine".to_vec()])
        .await;
    let prefix = test_storage(&first.data_dir).unwrap();

    let other = tempfile::tempdir().unwrap();
    let mut config = test_config(other.path()).await;
    config.storage = Some(prefix.clone());
    let error = App::build(config)
        .await
        .err()
        .expect("a second database is refused the prefix");
    let message = format!("{error:#}");
    assert!(
        message.contains(&format!(
            "{prefix} holds the recordings of another Spool database"
        )),
        "{message}"
    );

    let url = first.url(&format!("/v1/sessions/{}/recording", session.id));
    assert_eq!(get_bytes(&url, &session.token).await, b"mine");
}
