//! Fault injection at the library level: the registry client against the fake registry,
//! downloading through the store's `Ingest`, the way the copy engine does.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_core::{media, Descriptor, Digest, Reference};
use ferry_registry::{Client, ClientOptions, Credential, RegistryError};
use ferry_store::Store;
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault, LoggedRequest, TokenField};
use ferry_testkit::files::dir_names;
use ferry_testkit::image::{sized_image, Blob, TestImage};

const REPO: &str = "lib/app";

fn fast_opts() -> ClientOptions {
    ClientOptions {
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..Default::default()
    }
}

fn fast_client() -> Client {
    Client::new(fast_opts()).expect("client")
}

fn client_with(host: &str, user: &str, pass: &str) -> Client {
    let mut opts = fast_opts();
    opts.credentials.insert(
        host.to_string(),
        Credential::Basic {
            username: user.into(),
            password: pass.into(),
        },
    );
    Client::new(opts).expect("client")
}

/// A one-layer image whose layer is about `layer_size` bytes (random content: gzip cannot
/// shrink it).
fn image(seed: u64, layer_size: usize) -> TestImage {
    sized_image(seed, 1, layer_size)
}

async fn registry_with(auth: FakeAuth, img: &TestImage) -> FakeRegistry {
    let reg = FakeRegistry::start(auth).await;
    reg.push_image(REPO, "v1", img);
    reg
}

/// An empty store in a new temporary directory (which lives as long as the guard).
fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

/// `image(seed, layer_size)` in a fake registry with `auth` as `REPO:v1`, and an empty store.
async fn setup(
    seed: u64,
    layer_size: usize,
    auth: FakeAuth,
) -> (TestImage, FakeRegistry, tempfile::TempDir, Store) {
    let img = image(seed, layer_size);
    let reg = registry_with(auth, &img).await;
    let (dir, store) = temp_store();
    (img, reg, dir, store)
}

/// HTTP Basic auth wanting `user` and `pass`.
fn basic(user: &str, pass: &str) -> FakeAuth {
    FakeAuth::Basic {
        user: user.into(),
        pass: pass.into(),
    }
}

/// Token auth handing out anonymous tokens in the `token` field, without expiry.
fn anonymous_bearer() -> FakeAuth {
    FakeAuth::Bearer {
        credentials: None,
        token_field: TokenField::Token,
        expires_in: None,
    }
}

fn desc(b: &Blob) -> Descriptor {
    Descriptor::new(&b.media_type, b.digest.clone(), b.size())
}

/// [`fetch_into`] that must succeed, and leave exactly `blob` in the store.
async fn fetch_and_check(client: &Client, reg: &FakeRegistry, store: &Store, blob: &Blob) {
    fetch_into(client, &reg.host(), store, blob).await.unwrap();
    assert_stored(store, blob);
}

/// `blob_into` of `blob` into a new Ingest of `store`, which must fail.
async fn blob_into_err(
    client: &Client,
    reg: &FakeRegistry,
    store: &Store,
    blob: &Blob,
) -> RegistryError {
    let mut ingest = store.begin(&blob.digest, Some(blob.size())).unwrap();
    client
        .blob_into(&reg.host(), REPO, &desc(blob), &mut ingest, &|_| {})
        .await
        .unwrap_err()
}

/// Download `blob` into `store` through an Ingest and commit it.
async fn fetch_into(
    client: &Client,
    host: &str,
    store: &Store,
    blob: &Blob,
) -> Result<std::path::PathBuf, String> {
    let mut ingest = store
        .begin(&blob.digest, Some(blob.size()))
        .map_err(|e| e.to_string())?;
    client
        .blob_into(host, REPO, &desc(blob), &mut ingest, &|_| {})
        .await
        .map_err(|e| format!("blob_into: {e}"))?;
    ingest.commit().map_err(|e| format!("commit: {e}"))
}

fn blob_path_of(d: &Digest) -> String {
    format!("/v2/{REPO}/blobs/{d}")
}

/// The GETs of one blob on the main listener, in order.
fn blob_gets(reg: &FakeRegistry, d: &Digest) -> Vec<LoggedRequest> {
    let p = blob_path_of(d);
    reg.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == p)
        .collect()
}

fn assert_stored(store: &Store, blob: &Blob) {
    let got = std::fs::read(store.blob_path(&blob.digest)).expect("stored blob");
    assert_eq!(got.len(), blob.bytes.len());
    assert!(got == blob.bytes[..], "stored bytes differ from the blob");
    assert_eq!(Digest::sha256_of(&got), blob.digest);
    assert!(
        !dir_names(&store.root().join("ingest"))
            .iter()
            .any(|f| f.ends_with(".partial")),
        "a partial file is left behind: {:?}",
        dir_names(&store.root().join("ingest"))
    );
}

#[tokio::test]
async fn dropped_body_resumes_with_range_from_the_byte_received() {
    let (img, reg, _dir, store) = setup(1, 300_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::DropAfter {
        digest: Some(layer.digest.clone()),
        after: 100_000,
        times: 1,
    });
    fetch_and_check(&fast_client(), &reg, &store, layer).await;
    let gets = blob_gets(&reg, &layer.digest);
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    assert_eq!(gets[0].status, 200);
    assert_eq!(gets[1].range.as_deref(), Some("bytes=100000-"), "{gets:?}");
    assert_eq!(gets[1].status, 206);
}

#[tokio::test]
async fn several_drops_in_a_row_still_finish_each_resuming_further() {
    let (img, reg, _dir, store) = setup(2, 120_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::DropAfter {
        digest: None,
        after: 20_000,
        times: 5,
    });
    // Five drops, more than max_attempts (2) allows in a row without progress: every drop
    // made progress, so the counter resets and the download must finish.
    let client = Client::new(ClientOptions {
        max_attempts: 2,
        ..fast_opts()
    })
    .unwrap();
    fetch_and_check(&client, &reg, &store, layer).await;
    let gets = blob_gets(&reg, &layer.digest);
    let ranges: Vec<Option<String>> = gets.iter().map(|g| g.range.clone()).collect();
    let want: Vec<Option<String>> = std::iter::once(None)
        .chain((1..=5).map(|i| Some(format!("bytes={}-", i * 20_000))))
        .collect();
    assert_eq!(ranges, want);
}

#[tokio::test]
async fn attempts_without_progress_are_capped() {
    let (img, reg, _dir, store) = setup(3, 10_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::DropAfter {
        digest: None,
        after: 0,
        times: 100,
    });
    let client = Client::new(ClientOptions {
        max_attempts: 3,
        ..fast_opts()
    })
    .unwrap();
    let err = blob_into_err(&client, &reg, &store, layer).await;
    assert!(err.is_retryable(), "{err}");
    assert_eq!(blob_gets(&reg, &layer.digest).len(), 3);
    assert!(!store.contains(&layer.digest));
}

#[tokio::test]
async fn server_ignoring_range_restarts_the_blob_and_it_still_verifies() {
    let (img, reg, _dir, store) = setup(4, 200_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::NoRange);
    reg.add_fault(Fault::DropAfter {
        digest: Some(layer.digest.clone()),
        after: 50_000,
        times: 2,
    });
    let seen_restart = std::sync::atomic::AtomicBool::new(false);
    let last = std::sync::atomic::AtomicU64::new(0);
    let progress = |held: u64| {
        if held < last.swap(held, std::sync::atomic::Ordering::SeqCst) {
            seen_restart.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    };
    let client = fast_client();
    let mut ingest = store.begin(&layer.digest, Some(layer.size())).unwrap();
    client
        .blob_into(&reg.host(), REPO, &desc(layer), &mut ingest, &progress)
        .await
        .unwrap();
    ingest.commit().unwrap();
    assert_stored(&store, layer);
    let gets = blob_gets(&reg, &layer.digest);
    assert_eq!(gets.len(), 3, "{gets:?}");
    assert_eq!(gets[1].range.as_deref(), Some("bytes=50000-"));
    assert!(gets.iter().all(|g| g.status == 200), "{gets:?}");
    assert!(
        seen_restart.load(std::sync::atomic::Ordering::SeqCst),
        "progress never went back to the start after the server ignored Range"
    );
}

#[tokio::test]
async fn wrong_digest_is_an_error_naming_the_blob_and_nothing_is_kept() {
    let (img, reg, dir, store) = setup(5, 50_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::WrongDigest {
        digest: layer.digest.clone(),
    });
    let err = fetch_into(&fast_client(), &reg.host(), &store, layer)
        .await
        .unwrap_err();
    assert!(err.contains(&layer.digest.to_string()), "{err}");
    assert!(err.contains("does not match"), "{err}");
    assert!(!store.contains(&layer.digest));
    assert_eq!(
        dir_names(&dir.path().join("blobs/sha256")),
        Vec::<String>::new()
    );
    let ingest = dir_names(&dir.path().join("ingest"));
    assert!(
        !ingest.iter().any(|f| f.ends_with(".partial")),
        "the bad partial must be removed: {ingest:?}"
    );
    assert_eq!(store.partial_bytes(&layer.digest), 0);
}

#[tokio::test]
async fn retry_after_of_a_429_is_waited_out() {
    let (img, reg, _dir, store) = setup(6, 10_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::TooManyRequests {
        times: 1,
        retry_after_secs: 1,
    });
    let start = Instant::now();
    fetch_into(&fast_client(), &reg.host(), &store, layer)
        .await
        .unwrap();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured ({took:?})"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_stored(&store, layer);
    let statuses: Vec<u16> = blob_gets(&reg, &layer.digest)
        .iter()
        .map(|g| g.status)
        .collect();
    assert_eq!(statuses, vec![429, 200]);
}

#[tokio::test]
async fn a_retry_after_beyond_the_limit_fails_at_once_saying_so() {
    let (img, reg, _dir, store) = setup(6, 1_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::TooManyRequests {
        times: 1,
        retry_after_secs: 3600,
    });
    let client = Client::new(ClientOptions {
        max_retry_after: Duration::from_secs(5),
        ..fast_opts()
    })
    .unwrap();
    let start = Instant::now();
    let err = blob_into_err(&client, &reg, &store, layer).await;
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        format!(
            "GET http://{}{} returned 429: the registry asks to wait 60 min before trying again, longer than the 5 s allowed (--max-wait)",
            reg.host(),
            blob_path_of(&layer.digest)
        )
    );
}

#[tokio::test]
async fn server_errors_503_are_retried() {
    let (img, reg, _dir, store) = setup(7, 10_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::ServerError { times: 2 });
    fetch_and_check(&fast_client(), &reg, &store, layer).await;
    let statuses: Vec<u16> = blob_gets(&reg, &layer.digest)
        .iter()
        .map(|g| g.status)
        .collect();
    assert_eq!(statuses, vec![503, 503, 200]);
}

#[tokio::test]
async fn server_errors_beyond_max_attempts_give_up_with_a_retryable_error() {
    let (img, reg, _dir, store) = setup(7, 1_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::ServerError { times: 50 });
    let client = Client::new(ClientOptions {
        max_attempts: 4,
        ..fast_opts()
    })
    .unwrap();
    let err = blob_into_err(&client, &reg, &store, layer).await;
    assert_eq!(err.status(), Some(503), "{err}");
    assert!(err.is_retryable());
    assert_eq!(blob_gets(&reg, &layer.digest).len(), 4);
}

#[tokio::test]
async fn token_expiring_mid_blob_is_renewed_and_the_download_completes() {
    let (img, reg, _dir, store) = setup(8, 200_000, anonymous_bearer()).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::ExpireTokensAfter { requests: 1 });
    reg.add_fault(Fault::DropAfter {
        digest: Some(layer.digest.clone()),
        after: 64 * 1024,
        times: 1,
    });
    fetch_and_check(&fast_client(), &reg, &store, layer).await;
    assert!(reg.tokens_issued() >= 2, "tokens: {}", reg.tokens_issued());
    let gets = blob_gets(&reg, &layer.digest);
    let statuses: Vec<u16> = gets.iter().map(|g| g.status).collect();
    assert_eq!(statuses, vec![200, 401, 206], "{gets:?}");
    assert_ne!(gets[0].authorization, gets[2].authorization);
    assert_eq!(gets[2].range.as_deref(), Some("bytes=65536-"));
}

#[tokio::test]
async fn bearer_token_in_token_or_access_token_field_both_work() {
    for field in [TokenField::Token, TokenField::AccessToken, TokenField::Both] {
        let img = image(9, 5_000);
        let reg = registry_with(
            FakeAuth::Bearer {
                credentials: None,
                token_field: field,
                expires_in: Some(300),
            },
            &img,
        )
        .await;
        let client = fast_client();
        let r: Reference = format!("{}/{REPO}:v1", reg.host()).parse().unwrap();
        let m = client
            .manifest(&r)
            .await
            .unwrap_or_else(|e| panic!("{field:?}: {e}"));
        assert_eq!(m.digest, img.manifest_digest);
        let (_dir, store) = temp_store();
        fetch_into(&client, &reg.host(), &store, &img.layers[0])
            .await
            .unwrap_or_else(|e| panic!("{field:?}: {e}"));
        assert_stored(&store, &img.layers[0]);
        // One token for the repository scope, reused for the blob.
        assert_eq!(reg.tokens_issued(), 1, "{field:?}");
        let auths: Vec<_> = reg
            .requests()
            .into_iter()
            .filter(|r| r.status == 200 && r.path.contains("/blobs/"))
            .map(|r| r.authorization.unwrap_or_default())
            .collect();
        assert!(
            auths.iter().all(|a| a.starts_with("Bearer fake-")),
            "{auths:?}"
        );
    }
}

#[tokio::test]
async fn bearer_with_credentials_right_wrong_and_missing() {
    let img = image(10, 5_000);
    let reg = registry_with(
        FakeAuth::Bearer {
            credentials: Some(("alice".into(), "s3cret".into())),
            token_field: TokenField::Both,
            expires_in: None,
        },
        &img,
    )
    .await;
    let r: Reference = format!("{}/{REPO}:v1", reg.host()).parse().unwrap();

    let ok = client_with(&reg.host(), "alice", "s3cret");
    let m = ok.manifest(&r).await.unwrap();
    assert_eq!(m.bytes, img.manifest.to_vec());
    let token_reqs: Vec<_> = reg
        .requests()
        .into_iter()
        .filter(|q| q.path == "/token")
        .collect();
    assert!(token_reqs.iter().all(|q| q
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic "))));

    let wrong = client_with(&reg.host(), "alice", "nope");
    let err = wrong.manifest(&r).await.unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(text.contains("refused the credentials"), "{text}");
    assert!(!text.contains("nope"), "the password leaks: {text}");

    let err = fast_client().manifest(&r).await.unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    assert!(err.to_string().contains("requires credentials"), "{err}");
}

#[tokio::test]
async fn basic_auth_right_and_wrong_credentials() {
    let img = image(11, 5_000);
    let reg = registry_with(basic("bob", "pw"), &img).await;
    let r: Reference = format!("{}/{REPO}:v1", reg.host()).parse().unwrap();
    let client = client_with(&reg.host(), "bob", "pw");
    let m = client.manifest(&r).await.unwrap();
    assert_eq!(m.digest, img.manifest_digest);
    let (_dir, store) = temp_store();
    fetch_and_check(&client, &reg, &store, &img.layers[0]).await;
    let gets = blob_gets(&reg, &img.layers[0].digest);
    assert_eq!(
        gets.len(),
        1,
        "Basic credentials are sent up front: {gets:?}"
    );
    assert!(gets[0]
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic ")));

    let err = client_with(&reg.host(), "bob", "wrong")
        .manifest(&r)
        .await
        .unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
    assert_eq!(err.status(), Some(401));
    let err = fast_client().manifest(&r).await.unwrap_err();
    assert!(err.is_unauthorized(), "{err}");
}

async fn redirect_case(auth: FakeAuth, client: Client) {
    let (img, reg, _dir, store) = setup(12, 100_000, auth).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::RedirectBlobs);
    fetch_and_check(&client, &reg, &store, layer).await;
    let main = blob_gets(&reg, &layer.digest);
    assert_eq!(main.last().map(|g| g.status), Some(307), "{main:?}");
    assert!(
        main.last().and_then(|g| g.authorization.as_ref()).is_some(),
        "the main registry requires auth and got none: {main:?}"
    );
    let redirected: Vec<_> = reg
        .requests()
        .into_iter()
        .filter(|q| q.path == format!("/{REPO}/blobs/{}", layer.digest))
        .collect();
    assert_eq!(redirected.len(), 1, "{redirected:?}");
    assert_eq!(redirected[0].status, 200);
    assert!(
        !reg.redirect_saw_authorization(),
        "credentials were forwarded to the redirect host"
    );
}

#[tokio::test]
async fn redirect_to_another_host_works_without_forwarding_basic_credentials() {
    // The credentials are keyed by the host the fake binds, so the client comes after it.
    let (img, reg, _dir, store) = setup(12, 100_000, basic("bob", "pw")).await;
    let client = client_with(&reg.host(), "bob", "pw");
    reg.add_fault(Fault::RedirectBlobs);
    let layer = &img.layers[0];
    fetch_and_check(&client, &reg, &store, layer).await;
    let main = blob_gets(&reg, &layer.digest);
    assert_eq!(main.len(), 1, "{main:?}");
    assert_eq!(main[0].status, 307);
    assert!(main[0]
        .authorization
        .as_deref()
        .is_some_and(|a| a.starts_with("Basic ")));
    assert!(!reg.redirect_saw_authorization());
}

#[tokio::test]
async fn redirect_to_another_host_works_without_forwarding_bearer_tokens() {
    redirect_case(anonymous_bearer(), fast_client()).await;
}

#[tokio::test]
async fn schema1_manifest_is_refused_clearly() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let s1 = br#"{"schemaVersion":1,"name":"lib/app","tag":"old","architecture":"amd64","fsLayers":[],"history":[]}"#;
    reg.put_manifest_raw(
        REPO,
        "old",
        media::DOCKER_SCHEMA1_SIGNED,
        Bytes::from_static(s1),
    );
    let r: Reference = format!("{}/{REPO}:old", reg.host()).parse().unwrap();
    let err = fast_client().manifest(&r).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("schema 1") && text.contains("not supported"),
        "{text}"
    );
    assert!(matches!(err, RegistryError::Manifest { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn manifest_whose_bytes_do_not_match_the_requested_digest_is_a_verify_error() {
    let img = image(13, 1_000);
    let other = image(14, 1_000);
    let reg = FakeRegistry::start(FakeAuth::None).await;
    // The registry answers a request for img's digest with other's bytes.
    reg.put_manifest_raw(
        REPO,
        &img.manifest_digest.to_string(),
        &other.manifest_media_type,
        other.manifest.clone(),
    );
    let r: Reference = format!("{}/{REPO}@{}", reg.host(), img.manifest_digest)
        .parse()
        .unwrap();
    let err = fast_client().manifest(&r).await.unwrap_err();
    assert!(matches!(err, RegistryError::Verify(_)), "{err:?}");
    assert!(
        err.to_string().contains(&img.manifest_digest.to_string()),
        "{err}"
    );
    // And through manifest_at with an expected digest while asking by tag.
    reg.push_image(REPO, "t", &other);
    let err = fast_client()
        .manifest_at(&reg.host(), REPO, "t", Some(&img.manifest_digest))
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Verify(_)), "{err:?}");
}

#[tokio::test]
async fn missing_manifest_repository_and_blob_are_not_found() {
    let img = image(15, 1_000);
    let reg = registry_with(FakeAuth::None, &img).await;
    let client = fast_client();
    let r: Reference = format!("{}/{REPO}:nope", reg.host()).parse().unwrap();
    let err = client.manifest(&r).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(!err.is_retryable() && !err.is_unauthorized());
    assert!(err.to_string().contains("MANIFEST_UNKNOWN"), "{err}");
    let r: Reference = format!("{}/other/repo:v1", reg.host()).parse().unwrap();
    assert!(client.manifest(&r).await.unwrap_err().is_not_found());

    let ghost = Digest::sha256_of(b"not there");
    let (_dir, store) = temp_store();
    let mut ingest = store.begin(&ghost, Some(9)).unwrap();
    let err = client
        .blob_into(
            &reg.host(),
            REPO,
            &Descriptor::new(media::OCI_LAYER_GZIP, ghost.clone(), 9),
            &mut ingest,
            &|_| {},
        )
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(blob_gets(&reg, &ghost).len(), 1, "a 404 is not retried");
}

#[tokio::test]
async fn blob_longer_than_its_descriptor_is_refused_and_the_partial_reset() {
    let (img, reg, _dir, store) = setup(16, 20_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    let short = Descriptor::new(&layer.media_type, layer.digest.clone(), layer.size() - 100);
    let mut ingest = store.begin(&layer.digest, Some(short.size)).unwrap();
    let err = fast_client()
        .blob_into(&reg.host(), REPO, &short, &mut ingest, &|_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than"), "{err}");
    assert_eq!(ingest.offset(), 0);
    drop(ingest);
    assert_eq!(store.partial_bytes(&layer.digest), 0);
    assert!(!store.contains(&layer.digest));
}

#[tokio::test]
async fn partial_left_by_an_earlier_process_is_resumed_with_range() {
    let (img, reg, _dir, store) = setup(17, 80_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    {
        let mut ingest = store.begin(&layer.digest, Some(layer.size())).unwrap();
        ingest.write(&layer.bytes[..30_000]).unwrap();
        // Dropped without commit, as a killed process would leave it.
    }
    assert_eq!(store.partial_bytes(&layer.digest), 30_000);
    fetch_and_check(&fast_client(), &reg, &store, layer).await;
    let gets = blob_gets(&reg, &layer.digest);
    assert_eq!(gets.len(), 1);
    assert_eq!(gets[0].range.as_deref(), Some("bytes=30000-"));
    assert_eq!(gets[0].status, 206);
}

#[tokio::test]
async fn a_corrupt_partial_is_caught_by_the_final_check() {
    let (img, reg, _dir, store) = setup(18, 40_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    {
        let mut ingest = store.begin(&layer.digest, Some(layer.size())).unwrap();
        let mut bad = layer.bytes[..10_000].to_vec();
        bad[5] ^= 0xff;
        ingest.write(&bad).unwrap();
    }
    let err = fetch_into(&fast_client(), &reg.host(), &store, layer)
        .await
        .unwrap_err();
    assert!(err.contains(&layer.digest.to_string()), "{err}");
    assert_eq!(store.partial_bytes(&layer.digest), 0);
    // The next attempt starts afresh and succeeds.
    fetch_and_check(&fast_client(), &reg, &store, layer).await;
}

#[tokio::test]
async fn throttled_blob_arrives_intact_with_monotonic_progress() {
    let (img, reg, _dir, store) = setup(19, 60_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::Throttle {
        bytes_per_sec: 400_000,
    });
    let seen = std::sync::Mutex::new(Vec::new());
    let mut ingest = store.begin(&layer.digest, Some(layer.size())).unwrap();
    fast_client()
        .blob_into(&reg.host(), REPO, &desc(layer), &mut ingest, &|h| {
            seen.lock().unwrap().push(h)
        })
        .await
        .unwrap();
    ingest.commit().unwrap();
    assert_stored(&store, layer);
    let seen = seen.into_inner().unwrap();
    assert!(seen.len() > 5, "progress was reported {} times", seen.len());
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last().copied(), Some(layer.size()));
}

#[tokio::test]
async fn tags_list_follows_link_pagination() {
    let img = image(20, 1_000);
    let reg = registry_with(FakeAuth::None, &img).await;
    let n = 1_205;
    for i in 0..n {
        reg.put_manifest_raw(
            REPO,
            &format!("t{i:05}"),
            &img.manifest_media_type,
            img.manifest.clone(),
        );
    }
    let tags = fast_client().tags(&reg.host(), REPO).await.unwrap();
    assert_eq!(tags.len(), n + 1, "v1 plus the {n} added");
    let mut sorted = tags.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), tags.len(), "a tag came twice");
    assert!(tags.contains(&"v1".to_string()) && tags.contains(&"t01204".to_string()));
    let pages = reg
        .requests()
        .into_iter()
        .filter(|q| q.path == format!("/v2/{REPO}/tags/list"))
        .count();
    assert_eq!(pages, 2);
}

#[tokio::test]
async fn catalog_lists_repositories() {
    let img = image(21, 1_000);
    let reg = registry_with(FakeAuth::None, &img).await;
    reg.push_image("other/x", "v1", &img);
    let repos = fast_client().catalog(&reg.host()).await.unwrap();
    assert_eq!(repos, vec!["lib/app".to_string(), "other/x".to_string()]);
}

#[tokio::test]
async fn blob_exists_reports_size_and_absence() {
    let img = image(22, 3_000);
    let reg = registry_with(FakeAuth::None, &img).await;
    let client = fast_client();
    let layer = &img.layers[0];
    assert_eq!(
        client
            .blob_exists(&reg.host(), REPO, &layer.digest)
            .await
            .unwrap(),
        Some(layer.size())
    );
    assert_eq!(
        client
            .blob_exists(&reg.host(), REPO, &Digest::sha256_of(b"x"))
            .await
            .unwrap(),
        None
    );
}

/// A token service may claim any lifetime; "forever" must not overflow the clock.
#[tokio::test(flavor = "multi_thread")]
async fn absurd_token_lifetimes_do_not_panic() {
    for expires_in in [u64::MAX, 0] {
        let img = image(31, 5_000);
        let reg = registry_with(
            FakeAuth::Bearer {
                credentials: None,
                token_field: TokenField::Token,
                expires_in: Some(expires_in),
            },
            &img,
        )
        .await;
        let client = fast_client();
        let r: Reference = format!("{}/{REPO}:v1", reg.host()).parse().unwrap();
        let m = client
            .manifest(&r)
            .await
            .unwrap_or_else(|e| panic!("expires_in {expires_in}: {e}"));
        assert_eq!(m.digest, img.manifest_digest);
    }
}

/// A host the registry redirects to may answer 401 with a challenge of its own; following
/// it would send the user's password to a realm the registry never named.
#[tokio::test]
async fn a_challenge_from_a_redirect_target_is_not_answered() {
    let (img, reg, _dir, store) = setup(13, 50_000, basic("bob", "pw")).await;
    let client = client_with(&reg.host(), "bob", "pw");
    reg.add_fault(Fault::RedirectBlobs);
    reg.add_fault(Fault::RedirectTargetChallenges);
    let layer = &img.layers[0];
    let mut ingest = store.begin(&layer.digest, Some(layer.size())).unwrap();
    let err = client
        .blob_into(&reg.host(), REPO, &desc(layer), &mut ingest, &|_| {})
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(
        !reg.redirect_saw_authorization(),
        "credentials reached the redirect target"
    );
    assert!(
        !reg.requests().iter().any(|r| r.path == "/token"),
        "a token was asked of the redirect target's realm: {:?}",
        reg.requests()
    );
}

/// The methods used on `/v2/lib/app/manifests/v1`, in order.
fn tag_methods(reg: &FakeRegistry) -> Vec<String> {
    let p = format!("/v2/{REPO}/manifests/v1");
    reg.requests()
        .into_iter()
        .filter(|r| r.path == p && r.status == 200)
        .map(|r| r.method)
        .collect()
}

#[tokio::test]
async fn manifest_digest_is_a_head_and_a_get_only_without_the_digest_header() {
    let img = image(23, 1_000);
    let reg = registry_with(FakeAuth::None, &img).await;
    let client = fast_client();
    let d = client
        .manifest_digest(&reg.host(), REPO, "v1")
        .await
        .unwrap();
    assert_eq!(d, img.manifest_digest);
    assert_eq!(tag_methods(&reg), vec!["HEAD"]);

    reg.add_fault(Fault::NoDigestHeader);
    let d = client
        .manifest_digest(&reg.host(), REPO, "v1")
        .await
        .unwrap();
    assert_eq!(d, img.manifest_digest);
    assert_eq!(tag_methods(&reg), vec!["HEAD", "HEAD", "GET"]);

    let err = client
        .manifest_digest(&reg.host(), REPO, "gone")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn a_manifest_over_4_mib_is_refused_saying_its_size() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let big = vec![b' '; ferry_core::MAX_SMALL_BLOB as usize + 1];
    reg.put_manifest_raw(REPO, "big", media::OCI_MANIFEST, Bytes::from(big));
    let r: Reference = format!("{}/{REPO}:big", reg.host()).parse().unwrap();
    let err = fast_client().manifest(&r).await.unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        format!(
            "http://{}/v2/{REPO}/manifests/big: the manifest is 4194305 bytes; a manifest or image config may hold at most 4 MiB",
            reg.host()
        )
    );
}

/// A writer that takes `delay` per chunk, blocking its thread the way a slow disk does.
struct SlowSink {
    delay: Duration,
    bytes: Vec<u8>,
}

impl ferry_core::ResumableWrite for SlowSink {
    fn offset(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        std::thread::sleep(self.delay);
        self.bytes.extend_from_slice(buf);
        Ok(())
    }
    fn restart(&mut self) -> std::io::Result<()> {
        self.bytes.clear();
        Ok(())
    }
}

/// With `offload_writes` (the server's setting), chunk writes must not hold up the async
/// workers: on a runtime with a single worker,
/// a ticker task keeps ticking while a multi-MiB blob goes through a slow writer.
#[test]
fn slow_chunk_writes_do_not_block_other_tasks_on_the_runtime() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let img = image(71, 2 << 20);
        let reg = registry_with(FakeAuth::None, &img).await;
        let layer = img.layers[0].clone();
        let (host, d) = (reg.host(), desc(&layer));
        let client = Client::new(ClientOptions {
            offload_writes: true,
            ..fast_opts()
        })
        .expect("client");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut worst = Duration::ZERO;
                let mut last = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    worst = worst.max(last.elapsed());
                    last = Instant::now();
                }
                worst
            })
        };
        let mut sink = SlowSink {
            // Longer than a tick may wait: one write on the worker would fail the test.
            delay: Duration::from_millis(60),
            bytes: Vec::new(),
        };
        let started = Instant::now();
        // Spawned so the download runs on the worker (block_on's own future does not).
        let download = tokio::spawn(async move {
            client
                .blob_into(&host, REPO, &d, &mut sink, &|_| {})
                .await
                .map(|()| sink.bytes)
        });
        let bytes = download.await.unwrap().unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let worst = ticker.await.unwrap();
        assert_eq!(Digest::sha256_of(&bytes), layer.digest);
        assert!(
            started.elapsed() > Duration::from_millis(100),
            "the writer was slow enough to matter"
        );
        assert!(
            worst <= Duration::from_millis(50),
            "a tick waited {worst:?} while chunks were written"
        );
    });
}
