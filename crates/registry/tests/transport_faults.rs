//! Transport faults at the library level: first contact, deadlines, stalls, `Content-Range`,
//! the token service, locks, retry notices, and the exact sentences errors render as.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_core::{Descriptor, Digest, Reference};
use ferry_registry::{Client, ClientOptions, Credential, RegistryError, RetryNotice};
use ferry_store::Store;
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault, LoggedRequest, TokenField};
use ferry_testkit::image::{sized_image, Blob, TestImage};

const REPO: &str = "lib/app";

fn fast_opts() -> ClientOptions {
    ClientOptions {
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..Default::default()
    }
}

fn client(opts: ClientOptions) -> Client {
    Client::new(opts).expect("client")
}

async fn setup(seed: u64, layer_size: usize, auth: FakeAuth) -> (TestImage, FakeRegistry) {
    let img = sized_image(seed, 1, layer_size);
    let reg = FakeRegistry::start(auth).await;
    reg.push_image(REPO, "v1", &img);
    (img, reg)
}

fn anonymous_bearer() -> FakeAuth {
    FakeAuth::Bearer {
        credentials: None,
        token_field: TokenField::Token,
        expires_in: None,
    }
}

fn reference(reg: &FakeRegistry, repo: &str) -> Reference {
    format!("{}/{repo}:v1", reg.host()).parse().unwrap()
}

fn desc(b: &Blob) -> Descriptor {
    Descriptor::new(&b.media_type, b.digest.clone(), b.size())
}

/// `blob_into` of `blob` into a new Ingest of a new store, which must fail.
async fn blob_err(client: &Client, reg: &FakeRegistry, blob: &Blob) -> RegistryError {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut ingest = store.begin(&blob.digest, Some(blob.size())).unwrap();
    client
        .blob_into(&reg.host(), REPO, &desc(blob), &mut ingest, &|_| {})
        .await
        .unwrap_err()
}

fn blob_url(reg: &FakeRegistry, d: &Digest) -> String {
    format!("http://{}/v2/{REPO}/blobs/{d}", reg.host())
}

fn blob_gets(reg: &FakeRegistry, d: &Digest) -> Vec<LoggedRequest> {
    let p = format!("/v2/{REPO}/blobs/{d}");
    reg.requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == p)
        .collect()
}

fn token_requests(reg: &FakeRegistry) -> usize {
    reg.requests().iter().filter(|r| r.path == "/token").count()
}

/// The error and its causes, one per line, as the binary prints them.
fn chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        out.push(s.to_string());
        src = s.source();
    }
    out
}

/// A client whose retry notices are collected.
fn noting_client(opts: ClientOptions) -> (Client, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let opts = ClientOptions {
        on_retry: Some(Arc::new(move |n: &RetryNotice| {
            s.lock().unwrap().push(n.to_string());
        })),
        ..opts
    };
    (client(opts), seen)
}

#[tokio::test]
async fn connection_refused_on_first_contact_fails_at_once_without_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (client, notices) = noting_client(ClientOptions::default());
    let r: Reference = format!("127.0.0.1:{port}/{REPO}:v1").parse().unwrap();
    let start = Instant::now();
    let err = client.manifest(&r).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(notices.lock().unwrap().is_empty());
    assert!(!err.is_retryable() && err.is_connect());
    assert_eq!(
        chain(&err),
        vec![format!(
            "cannot reach the registry 127.0.0.1:{port} (http://127.0.0.1:{port}/v2/): Connection refused (os error 111)"
        )]
    );
}

#[tokio::test]
async fn a_ping_that_never_answers_fails_after_the_deadline_once() {
    let (_img, reg) = setup(1, 1_000, FakeAuth::None).await;
    reg.add_fault(Fault::HangPing);
    let c = client(ClientOptions {
        request_timeout: Duration::from_millis(300),
        ..fast_opts()
    });
    let start = Instant::now();
    let err = c.manifest(&reference(&reg, REPO)).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(!err.is_retryable());
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach the registry {0} (http://{0}/v2/): no answer within 0.3 s (--timeout)",
            reg.host()
        )
    );
}

#[tokio::test]
async fn a_manifest_trickled_a_byte_at_a_time_hits_the_request_deadline() {
    let (_img, reg) = setup(2, 1_000, FakeAuth::None).await;
    reg.add_fault(Fault::TrickleManifests { bytes_per_sec: 20 });
    let c = client(ClientOptions {
        request_timeout: Duration::from_millis(400),
        max_attempts: 2,
        ..fast_opts()
    });
    let start = Instant::now();
    let err = c.manifest(&reference(&reg, REPO)).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(err.is_retryable());
    assert_eq!(
        chain(&err),
        vec![format!(
            "GET http://{}/v2/{REPO}/manifests/v1 did not complete within 0.4 s (--timeout)",
            reg.host()
        )]
    );
}

#[tokio::test]
async fn a_blob_trickling_below_the_minimum_rate_stalls_and_the_budget_runs_out() {
    let (img, reg) = setup(3, 50_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::Throttle { bytes_per_sec: 400 });
    let c = client(ClientOptions {
        stall_timeout: Duration::from_millis(500),
        stall_min_bytes: 1024,
        max_attempts: 3,
        ..fast_opts()
    });
    let start = Instant::now();
    let err = blob_err(&c, &reg, layer).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(err, RegistryError::Stalled { .. }), "{err:?}");
    // Each attempt brought some bytes, but a trickle is not progress: three attempts.
    assert_eq!(blob_gets(&reg, &layer.digest).len(), 3);
    let text = err.to_string();
    let prefix = format!(
        "the download of {} stalled: fewer than 1024 bytes arrived in 0.5 s (after ",
        blob_url(&reg, &layer.digest)
    );
    assert!(
        text.starts_with(&prefix) && text.ends_with(" bytes; --timeout)"),
        "{text}"
    );
}

#[tokio::test]
async fn content_range_not_at_the_offset_restarts_once_then_fails() {
    let (img, reg) = setup(4, 50_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::ContentRangeFromZero);
    reg.add_fault(Fault::DropAfter {
        digest: None,
        after: 10_000,
        times: 1000,
    });
    let (c, notices) = noting_client(fast_opts());
    let err = tokio::time::timeout(Duration::from_secs(10), blob_err(&c, &reg, layer))
        .await
        .expect("the download loops instead of failing");
    assert!(!err.is_retryable(), "{err}");
    let ranges: Vec<Option<String>> = blob_gets(&reg, &layer.digest)
        .into_iter()
        .map(|g| g.range)
        .collect();
    let from = Some("bytes=10000-".to_string());
    assert_eq!(ranges, vec![None, from.clone(), None, from]);
    let n = layer.size();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: the registry answers a range request with Content-Range \"bytes 0-{}/{n}\", even after starting over; it does not serve ranges correctly",
            blob_url(&reg, &layer.digest),
            n - 1
        )
    );
    // The restart was announced as what it is, not as a 503 the registry never sent.
    let notices = notices.lock().unwrap().clone();
    assert_eq!(notices.len(), 3, "{notices:?}");
    assert!(
        notices[1].ends_with(&format!(
            "(attempt 3 of 6): {}: asked for bytes from 10000, got Content-Range \"bytes 0-{}/{n}\"; starting the blob over",
            blob_url(&reg, &layer.digest),
            n - 1
        )),
        "{notices:?}"
    );
    assert!(
        !notices.iter().any(|n| n.contains("returned 503")),
        "{notices:?}"
    );
}

#[tokio::test]
async fn content_range_spelled_like_a_range_header_is_refused_not_looped() {
    let (img, reg) = setup(5, 30_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::ContentRangeBytesEquals);
    reg.add_fault(Fault::DropAfter {
        digest: None,
        after: 10_000,
        times: 1000,
    });
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        blob_err(&client(fast_opts()), &reg, layer),
    )
    .await
    .expect("the download loops instead of failing");
    assert!(!err.is_retryable());
    let n = layer.size();
    assert!(
        err.to_string().contains(&format!(
            "Content-Range \"bytes=10000-{}/{n}\", even after starting over",
            n - 1
        )),
        "{err}"
    );
    assert_eq!(blob_gets(&reg, &layer.digest).len(), 4);
}

#[tokio::test]
async fn re_downloaded_bytes_do_not_reset_the_attempt_budget() {
    let (img, reg) = setup(6, 60_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::NoRange);
    reg.add_fault(Fault::DropAfter {
        digest: None,
        after: 20_000,
        times: 1000,
    });
    let c = client(ClientOptions {
        max_attempts: 3,
        ..fast_opts()
    });
    let err = tokio::time::timeout(Duration::from_secs(10), blob_err(&c, &reg, layer))
        .await
        .expect("the download loops instead of failing");
    assert!(err.is_retryable(), "{err}");
    // Every attempt starts over at byte 0 and reaches the same 20 000 bytes: the first
    // attempt is progress, the next ones are not (before, each reset the budget).
    assert_eq!(blob_gets(&reg, &layer.digest).len(), 3);
}

#[tokio::test]
async fn a_failing_token_service_is_tried_once_per_attempt_not_nested() {
    let (_img, reg) = setup(7, 1_000, anonymous_bearer()).await;
    reg.add_fault(Fault::TokenStatus { status: 500 });
    let c = client(ClientOptions {
        max_attempts: 3,
        ..fast_opts()
    });
    let err = c.manifest(&reference(&reg, REPO)).await.unwrap_err();
    assert!(err.is_retryable() && !err.is_not_found());
    assert_eq!(token_requests(&reg), 3);
    assert_eq!(
        chain(&err),
        vec![
            format!("the token service of {} failed", reg.host()),
            format!(
                "GET http://{}/token?… returned 500 (UNAVAILABLE: injected token service status)",
                reg.host()
            ),
        ]
    );
}

#[tokio::test]
async fn a_token_realm_answering_404_is_not_a_missing_image() {
    let (_img, reg) = setup(8, 1_000, anonymous_bearer()).await;
    reg.add_fault(Fault::TokenStatus { status: 404 });
    let err = client(fast_opts())
        .manifest(&reference(&reg, REPO))
        .await
        .unwrap_err();
    assert!(!err.is_not_found() && !err.is_retryable() && !err.is_unauthorized());
    assert_eq!(token_requests(&reg), 1);
    assert_eq!(
        chain(&err)[0],
        format!("the token service of {} failed", reg.host())
    );
}

#[tokio::test]
async fn a_v2_answering_404_is_not_a_registry_rather_than_a_missing_image() {
    let (_img, reg) = setup(9, 1_000, FakeAuth::None).await;
    reg.add_fault(Fault::PingStatus { status: 404 });
    let err = client(fast_opts())
        .manifest(&reference(&reg, REPO))
        .await
        .unwrap_err();
    assert!(!err.is_not_found() && !err.is_retryable());
    assert_eq!(
        chain(&err),
        vec![format!(
            "http://{0}/v2/ returned 404: {0} does not serve the registry API (/v2/)",
            reg.host()
        )]
    );
}

#[tokio::test]
async fn a_redirect_loop_is_not_a_network_failure() {
    let (_img, reg) = setup(10, 1_000, FakeAuth::None).await;
    reg.add_fault(Fault::RedirectLoop);
    let err = client(fast_opts())
        .manifest(&reference(&reg, REPO))
        .await
        .unwrap_err();
    assert!(!err.is_retryable() && !err.is_connect());
    assert_eq!(
        chain(&err),
        vec![format!(
            "GET http://{}/v2/{REPO}/manifests/v1 was redirected too many times (a redirect loop)",
            reg.host()
        )]
    );
}

#[tokio::test]
async fn a_dropped_body_is_one_sentence_without_repeats() {
    let (img, reg) = setup(11, 50_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::DropAfter {
        digest: None,
        after: 10_000,
        times: 10,
    });
    let c = client(ClientOptions {
        max_attempts: 1,
        ..fast_opts()
    });
    let err = blob_err(&c, &reg, layer).await;
    let lines = chain(&err);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let prefix = format!(
        "the connection dropped while reading {} after 10000 bytes: ",
        blob_url(&reg, &layer.digest)
    );
    assert!(lines[0].starts_with(&prefix), "{lines:?}");
    assert!(
        !lines[0].contains("error decoding response body")
            && !lines[0].contains("error sending request"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn wrong_credentials_are_refused_credentials_not_missing_ones() {
    let (_img, reg) = setup(
        12,
        1_000,
        FakeAuth::Basic {
            user: "bob".into(),
            pass: "pw".into(),
        },
    )
    .await;
    let mut opts = fast_opts();
    opts.credentials.insert(
        reg.host(),
        Credential::Basic {
            username: "bob".into(),
            password: "wrong".into(),
        },
    );
    let err = client(opts)
        .manifest(&reference(&reg, REPO))
        .await
        .unwrap_err();
    assert!(err.is_credentials_refused() && err.is_unauthorized());
    assert_eq!(
        err.to_string(),
        format!(
            "{0} refused the credentials given for it (GET http://{0}/v2/{REPO}/manifests/v1 returned 401)",
            reg.host()
        )
    );
    let err = client(fast_opts())
        .manifest(&reference(&reg, REPO))
        .await
        .unwrap_err();
    assert!(!err.is_credentials_refused() && err.is_unauthorized());
}

#[tokio::test]
async fn retries_are_announced_before_each_wait() {
    let (img, reg) = setup(13, 10_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::ServerError { times: 2 });
    let (c, notices) = noting_client(fast_opts());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut ingest = store.begin(&layer.digest, Some(layer.size())).unwrap();
    c.blob_into(&reg.host(), REPO, &desc(layer), &mut ingest, &|_| {})
        .await
        .unwrap();
    let notices = notices.lock().unwrap().clone();
    assert_eq!(notices.len(), 2, "{notices:?}");
    for (i, n) in notices.iter().enumerate() {
        let tail = format!(
            " (attempt {} of 6): GET {} returned 503 (UNAVAILABLE: injected server error)",
            i + 2,
            blob_url(&reg, &layer.digest)
        );
        assert!(n.starts_with("retrying in ") && n.ends_with(&tail), "{n}");
    }
}

#[tokio::test]
async fn a_short_retry_after_is_announced_with_its_length() {
    let (img, reg) = setup(14, 1_000, FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::TooManyRequests {
        times: 1,
        retry_after_secs: 1,
    });
    let (c, notices) = noting_client(fast_opts());
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut ingest = store.begin(&layer.digest, Some(layer.size())).unwrap();
    c.blob_into(&reg.host(), REPO, &desc(layer), &mut ingest, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        notices.lock().unwrap().clone(),
        vec![format!(
            "waiting 1 s as the registry asks: GET {} returned 429 (TOOMANYREQUESTS: rate limited by the fake)",
            blob_url(&reg, &layer.digest)
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_never_answers_does_not_hold_up_another() {
    let (_a, slow) = setup(15, 1_000, FakeAuth::None).await;
    let (_b, fast) = setup(16, 1_000, FakeAuth::None).await;
    slow.add_fault(Fault::HangPing);
    let c = client(ClientOptions {
        request_timeout: Duration::from_secs(5),
        ..fast_opts()
    });
    let (c2, slow_ref) = (c.clone(), reference(&slow, REPO));
    let hung = tokio::spawn(async move { c2.manifest(&slow_ref).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    c.manifest(&reference(&fast, REPO)).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "waited for the other registry's ping: {:?}",
        start.elapsed()
    );
    assert!(!hung.is_finished());
    hung.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_fetches_for_different_repositories_do_not_wait_for_each_other() {
    let img = sized_image(17, 1, 1_000);
    let reg = FakeRegistry::start(anonymous_bearer()).await;
    reg.push_image("one", "v1", &img);
    reg.push_image("two", "v1", &img);
    reg.add_fault(Fault::SlowTokens { millis: 1_000 });
    let c = client(fast_opts());
    let (one, two) = (reference(&reg, "one"), reference(&reg, "two"));
    let start = Instant::now();
    let (a, b) = tokio::join!(c.manifest(&one), c.manifest(&two));
    a.unwrap();
    b.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(1_800),
        "the second token waited for the first: {:?}",
        start.elapsed()
    );
    assert_eq!(reg.tokens_issued(), 2);
}

/// `f`, or a panic after 10 s: a test whose fix is missing fails quickly instead of waiting
/// for a body that takes minutes to arrive.
async fn within_10_s<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the request outlived its deadline by far")
}

#[tokio::test]
async fn an_error_body_trickled_a_byte_a_second_is_cut_at_the_request_deadline() {
    let (_img, reg) = setup(14, 1_000, FakeAuth::None).await;
    reg.add_fault(Fault::TrickleErrorBody {
        status: 500,
        bytes_per_sec: 1,
        on_ping: false,
    });
    let c = client(ClientOptions {
        request_timeout: Duration::from_millis(400),
        max_attempts: 2,
        ..fast_opts()
    });
    let start = Instant::now();
    let err = within_10_s(c.manifest(&reference(&reg, REPO)))
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // The status is what matters (a 500 stays retryable); the codes the body would have
    // added are given up.
    assert!(err.is_retryable());
    assert_eq!(
        chain(&err),
        vec![format!(
            "GET http://{}/v2/{REPO}/manifests/v1 returned 500",
            reg.host()
        )]
    );
}

#[tokio::test]
async fn a_ping_error_body_trickled_a_byte_a_second_is_cut_at_the_request_deadline() {
    let (_img, reg) = setup(15, 1_000, FakeAuth::None).await;
    reg.add_fault(Fault::TrickleErrorBody {
        status: 500,
        bytes_per_sec: 1,
        on_ping: true,
    });
    let c = client(ClientOptions {
        request_timeout: Duration::from_millis(400),
        max_attempts: 2,
        ..fast_opts()
    });
    let start = Instant::now();
    let err = within_10_s(c.manifest(&reference(&reg, REPO)))
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        chain(&err),
        vec![format!("GET http://{}/v2/ returned 500", reg.host())]
    );
}

/// Token auth with alice's valid credentials, where (as on Docker Hub) the token service
/// grants nothing for a repository that does not exist and the registry then answers 401.
async fn hub_style_registry() -> (TestImage, FakeRegistry) {
    let (img, reg) = setup(
        16,
        1_000,
        FakeAuth::Bearer {
            credentials: Some(("alice".into(), "s3cret".into())),
            token_field: TokenField::Token,
            expires_in: None,
        },
    )
    .await;
    reg.add_fault(Fault::UnknownReposUnauthorized);
    (img, reg)
}

fn alice(reg: &FakeRegistry, password: &str) -> Client {
    let mut opts = fast_opts();
    opts.credentials.insert(
        reg.host(),
        Credential::Basic {
            username: "alice".into(),
            password: password.into(),
        },
    );
    client(opts)
}

#[tokio::test]
async fn a_401_to_an_accepted_token_is_not_authorised_or_missing_not_refused_credentials() {
    let (_img, reg) = hub_style_registry().await;
    let c = alice(&reg, "s3cret");
    c.manifest(&reference(&reg, REPO))
        .await
        .expect("the repository that exists");
    let err = c.manifest(&reference(&reg, "lib/typo")).await.unwrap_err();
    assert!(err.is_not_authorized() && err.is_unauthorized() && !err.is_credentials_refused());
    assert!(!err.is_retryable());
    assert_eq!(
        chain(&err),
        vec![format!(
            "the account is not authorised for lib/typo on {0}, or lib/typo does not exist (GET http://{0}/v2/lib/typo/manifests/v1 returned 401)",
            reg.host()
        )]
    );
}

#[tokio::test]
async fn credentials_the_token_service_rejects_are_refused_credentials() {
    let (_img, reg) = hub_style_registry().await;
    let err = alice(&reg, "wrong")
        .manifest(&reference(&reg, "lib/typo"))
        .await
        .unwrap_err();
    assert!(err.is_credentials_refused() && !err.is_not_authorized());
    assert_eq!(
        chain(&err),
        vec![format!(
            "{0} refused the credentials given for it (GET http://{0}/token?… returned 401)",
            reg.host()
        )]
    );
}
