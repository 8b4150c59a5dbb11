//! The `/v2/` registry mirror over real sockets in front of the fake registry: the pull
//! checks of the OCI distribution-spec conformance suite (written here after the spec's
//! pull section), the upstream choice, one upstream fetch per blob for many clients,
//! upstream and client drops, verification, repository scoping, tokens and metrics.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault};
use ferry_testkit::image::{sized_image, TestImage};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

async fn fake_with(repo: &str, img: &TestImage) -> FakeRegistry {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    fake.push_image(repo, "v1", img);
    fake
}

/// A mirror of `fake` (its names unprefixed), on 127.0.0.1.
async fn mirror_of(fake: &FakeRegistry, tweak: impl FnOnce(&mut ferry_server::Config)) -> Server {
    let host = fake.host();
    start(&[&host], |c| {
        c.mirror_of = host.clone();
        tweak(c);
    })
    .await
}

fn errors_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)));
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn send(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = http().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_answers_the_version_check() {
    let img = sized_image(1, 1, 1000);
    let fake = fake_with("app", &img).await;
    let srv = mirror_of(&fake, |_| {}).await;
    let (status, h, body) = get(&format!("{}/v2/", srv.base), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&h, "docker-distribution-api-version"),
        "registry/2.0"
    );
    assert_eq!(body, b"{}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_by_tag_and_digest_are_upstreams_exact_bytes() {
    let img = sized_image(2, 2, 20_000);
    let fake = fake_with("team/app", &img).await;
    let srv = mirror_of(&fake, |_| {}).await;
    let digest = img.manifest_digest.to_string();
    for reference in ["v1", digest.as_str()] {
        let url = format!("{}/v2/team/app/manifests/{reference}", srv.base);
        let (status, h, body) = get(&url, &[("accept", OCI_MANIFEST)]).await;
        assert_eq!(
            status,
            200,
            "{reference}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(body, img.manifest.to_vec());
        assert_eq!(header(&h, "content-type"), img.manifest_media_type);
        assert_eq!(header(&h, "docker-content-digest"), digest);
        assert_eq!(header(&h, "content-length"), img.manifest.len().to_string());
        let (status, h, body) =
            send(reqwest::Method::HEAD, &url, &[("accept", OCI_MANIFEST)]).await;
        assert_eq!(status, 200);
        assert!(body.is_empty());
        assert_eq!(header(&h, "docker-content-digest"), digest);
        assert_eq!(header(&h, "content-length"), img.manifest.len().to_string());
    }
    // Unknown tag, unknown digest, unknown repository.
    for path in [
        "team/app/manifests/nope".to_string(),
        format!("team/app/manifests/sha256:{}", "0".repeat(64)),
        "team/other/manifests/v1".to_string(),
    ] {
        let (status, _, body) = get(&format!("{}/v2/{path}", srv.base), &[]).await;
        assert_eq!(status, 404, "{path}");
        let code = errors_code(&body);
        assert!(
            code == "MANIFEST_UNKNOWN" || code == "NAME_UNKNOWN",
            "{path}: {code}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_accept_the_manifest_type_gets_manifest_unknown() {
    let img = sized_image(3, 1, 1000);
    let fake = fake_with("app", &img).await;
    let srv = mirror_of(&fake, |_| {}).await;
    let url = format!("{}/v2/app/manifests/v1", srv.base);
    let (status, _, body) = get(
        &url,
        &[(
            "accept",
            "application/vnd.docker.distribution.manifest.v1+prettyjws",
        )],
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(errors_code(&body), "MANIFEST_UNKNOWN");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["errors"][0]["message"],
        format!(
            "the manifest is {}, which the request's Accept header does not list",
            img.manifest_media_type
        )
    );
    let (status, _, _) = get(&url, &[("accept", "*/*")]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_with_head_range_and_416() {
    let img = sized_image(4, 1, 300_000);
    let fake = fake_with("app", &img).await;
    let srv = mirror_of(&fake, |_| {}).await;
    let layer = &img.layers[0];
    let url = format!("{}/v2/app/blobs/{}", srv.base, layer.digest);
    // Asked before any manifest: the upstream repository is asked whether it has it.
    let (status, h, body) = send(reqwest::Method::HEAD, &url, &[]).await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    assert_eq!(header(&h, "content-length"), layer.bytes.len().to_string());
    assert_eq!(
        header(&h, "docker-content-digest"),
        layer.digest.to_string()
    );
    let (status, h, body) = get(&url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-length"), layer.bytes.len().to_string());
    assert!(body == layer.bytes.to_vec());
    let (status, h, body) = get(&url, &[("range", "bytes=1000-1999")]).await;
    assert_eq!(status, 206);
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes 1000-1999/{}", layer.bytes.len())
    );
    assert!(body == layer.bytes[1000..2000].to_vec());
    let (status, h, _) = get(&url, &[("range", "bytes=999999999-")]).await;
    assert_eq!(status, 416);
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes */{}", layer.bytes.len())
    );
    // Unknown and malformed digests.
    let (status, _, body) = get(
        &format!("{}/v2/app/blobs/sha256:{}", srv.base, "1".repeat(64)),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(errors_code(&body), "BLOB_UNKNOWN");
    let (status, _, body) = get(&format!("{}/v2/app/blobs/sha256:zz", srv.base), &[]).await;
    assert_eq!(status, 400);
    assert_eq!(errors_code(&body), "DIGEST_INVALID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_list_pages_with_n_last_and_a_link_back_here() {
    let img = sized_image(5, 1, 1000);
    let fake = fake_with("app", &img).await;
    for t in ["a", "b", "c", "d"] {
        fake.push_image("app", t, &img);
    }
    let srv = mirror_of(&fake, |_| {}).await;
    let (status, _, body) = get(&format!("{}/v2/app/tags/list", srv.base), &[]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["name"], "app");
    assert_eq!(v["tags"], serde_json::json!(["a", "b", "c", "d", "v1"]));
    let (status, h, body) = get(&format!("{}/v2/app/tags/list?n=2&last=a", srv.base), &[]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["b", "c"]));
    assert_eq!(
        header(&h, "link"),
        "</v2/app/tags/list?n=2&last=c>; rel=\"next\""
    );
    let (_, h, body) = get(&format!("{}/v2/app/tags/list?n=2&last=c", srv.base), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["d", "v1"]));
    assert_eq!(header(&h, "link"), "");
    let (status, _, body) = get(&format!("{}/v2/nothere/tags/list", srv.base), &[]).await;
    assert_eq!(status, 404);
    assert_eq!(errors_code(&body), "NAME_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_and_deletes_are_405_unsupported() {
    let img = sized_image(6, 1, 1000);
    let fake = fake_with("app", &img).await;
    let srv = mirror_of(&fake, |_| {}).await;
    for (m, path) in [
        (reqwest::Method::POST, "/v2/app/blobs/uploads/"),
        (reqwest::Method::PUT, "/v2/app/manifests/v1"),
        (reqwest::Method::PATCH, "/v2/app/blobs/uploads/x"),
        (reqwest::Method::DELETE, "/v2/app/manifests/v1"),
        (reqwest::Method::DELETE, "/v2/"),
    ] {
        let (status, _, body) = send(m.clone(), &format!("{}{path}", srv.base), &[]).await;
        assert_eq!(status, 405, "{m} {path}");
        assert_eq!(errors_code(&body), "UNSUPPORTED");
    }
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.method == "GET" || r.method == "HEAD"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_name_invalid_and_never_reach_upstream() {
    let img = sized_image(7, 1, 1000);
    let fake = fake_with("app", &img).await;
    let srv = mirror_of(&fake, |_| {}).await;
    for target in [
        "/v2/App/manifests/v1",
        "/v2/a/../b/manifests/v1",
        "/v2/a/%2e%2e/b/manifests/v1",
        "/v2/a//b/manifests/v1",
        "/v2/a_/manifests/v1",
    ] {
        let (status, text) = raw_status(srv.addr, target).await;
        assert!(status == 400 || status == 404, "{target}: {text}");
        if status == 400 {
            assert!(text.contains("NAME_INVALID"), "{target}: {text}");
        }
    }
    let long = format!("/v2/{}/manifests/v1", "a".repeat(256));
    let (status, text) = raw_status(srv.addr, &long).await;
    assert_eq!(status, 400);
    assert!(text.contains("NAME_INVALID"));
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_is_ns_or_a_host_prefix_under_the_address_rules() {
    let img = sized_image(8, 1, 1000);
    let fake = fake_with("o/app", &img).await;
    // The default upstream is elsewhere: only ?ns= or the prefix reach the fake.
    let host = fake.host();
    let srv = start(&[&host], |_| {}).await;
    let (status, _, body) = get(&format!("{}/v2/{host}/o/app/manifests/v1", srv.base), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, img.manifest.to_vec());
    let (status, _, body) = get(
        &format!("{}/v2/o/app/manifests/v1?ns={host}", srv.base),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // Without --allow-private the same registry is refused, with the reason.
    let strict = start(&[], |_| {}).await;
    let (status, _, body) = get(
        &format!("{}/v2/{host}/o/app/manifests/v1", strict.base),
        &[],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(errors_code(&body), "DENIED");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["errors"][0]["message"],
        format!("{host} is a private or local address; this server fetches only from public registries unless started with --allow-private {host}")
    );
    // And outside --allow-registry.
    let listed = start(&[&host], |c| {
        c.policy.allow_registry = vec![ferry_server::HostPort::parse("ghcr.io").unwrap()];
    })
    .await;
    let (status, _, body) = get(
        &format!("{}/v2/o/app/manifests/v1?ns={host}", listed.base),
        &[],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(errors_code(&body), "DENIED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_clients_of_one_uncached_blob_make_one_upstream_fetch() {
    let img = sized_image(9, 1, 2_000_000);
    let fake = fake_with("app", &img).await;
    let layer = img.layers[0].clone();
    fake.add_fault(Fault::ThrottleBlob {
        digest: layer.digest.clone(),
        bytes_per_sec: 8_000_000,
    });
    let srv = mirror_of(&fake, |c| c.max_downloads_per_client = 64).await;
    let (status, _, _) = get(&format!("{}/v2/app/manifests/v1", srv.base), &[]).await;
    assert_eq!(status, 200);
    let url = format!("{}/v2/app/blobs/{}", srv.base, layer.digest);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move { get(&url, &[]).await }));
    }
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert!(body == layer.bytes.to_vec(), "a client got other bytes");
    }
    assert_eq!(fake.blob_gets(&layer.digest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_drop_mid_blob_is_resumed_and_the_client_never_sees_it() {
    let img = sized_image(10, 1, 600_000);
    let fake = fake_with("app", &img).await;
    let layer = img.layers[0].clone();
    fake.add_fault(Fault::DropAfter {
        digest: Some(layer.digest.clone()),
        after: 150_000,
        times: 2,
    });
    let srv = mirror_of(&fake, |_| {}).await;
    let (status, h, body) = get(&format!("{}/v2/app/blobs/{}", srv.base, layer.digest), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-length"), layer.bytes.len().to_string());
    assert!(body == layer.bytes.to_vec());
    let resumed = fake
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/") && r.range.is_some())
        .count();
    assert!(resumed >= 1, "no ranged resume was asked upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_drops_mid_blob_resumes_with_range_to_identical_bytes() {
    let img = sized_image(11, 1, 1_500_000);
    let fake = fake_with("app", &img).await;
    let layer = img.layers[0].clone();
    fake.add_fault(Fault::ThrottleBlob {
        digest: layer.digest.clone(),
        bytes_per_sec: 3_000_000,
    });
    let srv = mirror_of(&fake, |_| {}).await;
    let url = format!("{}/v2/app/blobs/{}", srv.base, layer.digest);
    let mut resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut first = Vec::new();
    while first.len() < 300_000 {
        let chunk = resp.chunk().await.unwrap().expect("the body ended early");
        first.extend_from_slice(&chunk);
    }
    drop(resp);
    let (status, h, rest) = get(&url, &[("range", &format!("bytes={}-", first.len()))]).await;
    assert_eq!(status, 206);
    assert_eq!(
        header(&h, "content-range"),
        format!(
            "bytes {}-{}/{}",
            first.len(),
            layer.bytes.len() - 1,
            layer.bytes.len()
        )
    );
    first.extend_from_slice(&rest);
    assert!(first == layer.bytes.to_vec(), "the resumed bytes differ");
    assert_eq!(fake.blob_gets(&layer.digest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_failing_verification_cuts_the_response_and_is_not_cached() {
    let img = sized_image(12, 1, 400_000);
    let fake = fake_with("app", &img).await;
    let layer = img.layers[0].clone();
    fake.add_fault(Fault::WrongDigest {
        digest: layer.digest.clone(),
    });
    let srv = mirror_of(&fake, |_| {}).await;
    let url = format!("{}/v2/app/blobs/{}", srv.base, layer.digest);
    for _ in 0..2 {
        let resp = http().get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let body = resp.bytes().await;
        assert!(body.is_err(), "a response of wrong bytes completed");
    }
    assert!(!srv.state.store().contains(&layer.digest));
    assert_eq!(srv.state.store().partial_bytes(&layer.digest), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_blob_is_not_served_to_a_repository_that_never_showed_it() {
    let img = sized_image(13, 1, 10_000);
    let other = sized_image(14, 1, 10_000);
    let fake = fake_with("private/app", &img).await;
    fake.push_image("public/app", "v1", &other);
    let srv = mirror_of(&fake, |_| {}).await;
    let layer = &img.layers[0];
    let (status, _, _) = get(
        &format!("{}/v2/private/app/blobs/{}", srv.base, layer.digest),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert!(srv.state.store().contains(&layer.digest));
    let (status, _, body) = get(
        &format!("{}/v2/public/app/blobs/{}", srv.base, layer.digest),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(errors_code(&body), "BLOB_UNKNOWN");
    // The same for a manifest by digest.
    let (status, _, _) = get(&format!("{}/v2/private/app/manifests/v1", srv.base), &[]).await;
    assert_eq!(status, 200);
    let (status, _, body) = get(
        &format!(
            "{}/v2/public/app/manifests/{}",
            srv.base, img.manifest_digest
        ),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(errors_code(&body), "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_is_asked_upstream_once_per_ttl_and_a_digest_once() {
    let img = sized_image(15, 1, 1000);
    let fake = fake_with("app", &img).await;
    let srv = mirror_of(&fake, |c| c.tag_ttl = Duration::from_secs(3600)).await;
    for _ in 0..3 {
        let (status, _, _) = get(&format!("{}/v2/app/manifests/v1", srv.base), &[]).await;
        assert_eq!(status, 200);
        let (status, _, _) = get(
            &format!("{}/v2/app/manifests/{}", srv.base, img.manifest_digest),
            &[],
        )
        .await;
        assert_eq!(status, 200);
    }
    let asked = fake
        .requests()
        .iter()
        .filter(|r| r.path.contains("/manifests/"))
        .count();
    assert_eq!(asked, 1, "{:?}", fake.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_make_the_mirror_challenge_with_basic() {
    let img = sized_image(16, 1, 1000);
    let fake = fake_with("app", &img).await;
    let srv = mirror_of(&fake, |c| c.tokens = vec!["s3cret".into()]).await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for path in ["/v2/", "/v2/app/manifests/v1", "/v2/app/tags/list"] {
        let url = format!("{}{path}", srv.base);
        let (status, h, body) = get(&url, &[]).await;
        assert_eq!(status, 401, "{path}");
        assert_eq!(header(&h, "www-authenticate"), "Basic realm=\"ferry\"");
        assert_eq!(
            header(&h, "docker-distribution-api-version"),
            "registry/2.0"
        );
        assert_eq!(errors_code(&body), "UNAUTHORIZED");
        let wrong = format!("Basic {}", b64("anyone:nope"));
        let (status, _, _) = get(&url, &[("authorization", &wrong)]).await;
        assert_eq!(status, 401, "{path}");
        let good = format!("Basic {}", b64("anyone:s3cret"));
        let (status, _, _) = get(&url, &[("authorization", &good)]).await;
        assert_eq!(status, 200, "{path}");
        let (status, _, _) = get(&url, &[("authorization", "Bearer s3cret")]).await;
        assert_eq!(status, 200, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_v2_routes_and_cache_use() {
    let img = sized_image(17, 1, 50_000);
    let fake = fake_with("app", &img).await;
    let srv = mirror_of(&fake, |_| {}).await;
    get(&format!("{}/v2/app/manifests/v1", srv.base), &[]).await;
    let url = format!("{}/v2/app/blobs/{}", srv.base, img.layers[0].digest);
    get(&url, &[]).await;
    get(&url, &[]).await;
    get(&format!("{}/v2/app/tags/list", srv.base), &[]).await;
    let (_, _, body) = get(&format!("{}/metrics", srv.base), &[]).await;
    let text = String::from_utf8(body).unwrap();
    for want in [
        "route=\"v2_manifest\",status=\"200\"} 1",
        "route=\"v2_blob\",status=\"200\"} 2",
        "route=\"v2_tags\",status=\"200\"} 1",
    ] {
        assert!(text.contains(want), "{want} missing:\n{text}");
    }
    let value = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(value("ferry_serve_upstream_bytes_total") >= 50_000);
    assert!(value("ferry_serve_served_bytes_total") >= 100_000);
    assert!(value("ferry_serve_cache_hits_total") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_mirror_and_an_archive_of_the_same_image_fetch_each_blob_once() {
    let img = sized_image(18, 2, 1_000_000);
    let fake = fake_with("app", &img).await;
    for l in &img.layers {
        fake.add_fault(Fault::ThrottleBlob {
            digest: l.digest.clone(),
            bytes_per_sec: 4_000_000,
        });
    }
    let srv = mirror_of(&fake, |_| {}).await;
    let host = fake.host();
    let (status, _, _) = get(&format!("{}/v2/app/manifests/v1", srv.base), &[]).await;
    assert_eq!(status, 200);
    let archive = {
        let url = format!("{}/image?name={host}/app:v1", srv.base);
        tokio::spawn(async move { get(&url, &[]).await })
    };
    let mut blobs = Vec::new();
    for l in &img.layers {
        let url = format!("{}/v2/app/blobs/{}", srv.base, l.digest);
        blobs.push((l.clone(), tokio::spawn(async move { get(&url, &[]).await })));
    }
    for (l, t) in blobs {
        let (status, _, body) = t.await.unwrap();
        assert_eq!(status, 200);
        assert!(body == l.bytes.to_vec());
    }
    let (status, _, tar) = archive.await.unwrap();
    assert_eq!(status, 200);
    let files = tar_files(&tar);
    for l in &img.layers {
        let name = format!("blobs/sha256/{}", l.digest.hex());
        assert!(files
            .iter()
            .any(|(n, b)| *n == name && b == &l.bytes.to_vec()));
        assert_eq!(
            fake.blob_gets(&l.digest),
            1,
            "blob {} fetched twice",
            l.digest
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_streams_while_it_arrives_and_a_first_range_waits_for_its_bytes() {
    let img = sized_image(19, 1, 2_000_000);
    let fake = fake_with("app", &img).await;
    let layer = img.layers[0].clone();
    // Four seconds upstream for the whole blob.
    fake.add_fault(Fault::ThrottleBlob {
        digest: layer.digest.clone(),
        bytes_per_sec: 500_000,
    });
    let srv = mirror_of(&fake, |_| {}).await;
    let url = format!("{}/v2/app/blobs/{}", srv.base, layer.digest);
    let t0 = std::time::Instant::now();
    let mut resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let first = resp.chunk().await.unwrap().expect("a first chunk");
    assert!(!first.is_empty());
    assert!(
        t0.elapsed() < Duration::from_millis(2500),
        "the first bytes waited for the whole blob ({:?})",
        t0.elapsed()
    );
    // Meanwhile a range near the end, asked while the blob is still arriving.
    let (status, h, tail) = get(&url, &[("range", "bytes=-1000")]).await;
    assert_eq!(status, 206);
    assert_eq!(
        header(&h, "content-range"),
        format!(
            "bytes {}-{}/{}",
            layer.bytes.len() - 1000,
            layer.bytes.len() - 1,
            layer.bytes.len()
        )
    );
    assert!(tail == layer.bytes[layer.bytes.len() - 1000..].to_vec());
    let mut all = first.to_vec();
    while let Some(c) = resp.chunk().await.unwrap() {
        all.extend_from_slice(&c);
    }
    assert!(all == layer.bytes.to_vec());
    assert_eq!(fake.blob_gets(&layer.digest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_seen_before_is_served_from_the_cache_when_upstream_fails() {
    let img = sized_image(20, 1, 1000);
    let fake = fake_with("app", &img).await;
    let srv = mirror_of(&fake, |c| c.tag_ttl = Duration::ZERO).await;
    let url = format!("{}/v2/app/manifests/v1", srv.base);
    let (status, _, _) = get(&url, &[]).await;
    assert_eq!(status, 200);
    fake.add_fault(Fault::ManifestError {
        status: 503,
        code: "UNAVAILABLE".into(),
        message: "down for maintenance".into(),
    });
    let (status, h, body) = get(&url, &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, img.manifest.to_vec());
    assert_eq!(
        header(&h, "docker-content-digest"),
        img.manifest_digest.to_string()
    );
    // A tag never seen has nothing to fall back on: the failure shows, in registry form.
    let (status, _, body) = get(&format!("{}/v2/app/manifests/other", srv.base), &[]).await;
    assert_eq!(status, 502);
    assert_eq!(errors_code(&body), "UNKNOWN");
    // "No such tag" is not a failure to paper over.
    fake.clear_faults();
    fake.add_fault(Fault::ManifestError {
        status: 404,
        code: "MANIFEST_UNKNOWN".into(),
        message: "gone".into(),
    });
    let (status, _, body) = get(&url, &[]).await;
    assert_eq!(status, 404);
    assert_eq!(errors_code(&body), "MANIFEST_UNKNOWN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_tag_is_checked_with_a_head_and_fetched_again_only_when_it_moved() {
    let img = sized_image(21, 1, 1000);
    let moved = sized_image(22, 1, 1000);
    let fake = fake_with("app", &img).await;
    let srv = mirror_of(&fake, |c| c.tag_ttl = Duration::ZERO).await;
    let url = format!("{}/v2/app/manifests/v1", srv.base);
    let manifest_requests = |method: &str| {
        fake.requests()
            .iter()
            .filter(|r| r.method == method && r.path.contains("/manifests/"))
            .count()
    };
    for _ in 0..3 {
        let (status, _, body) = get(&url, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(body, img.manifest.to_vec());
    }
    assert_eq!(manifest_requests("GET"), 1);
    assert_eq!(manifest_requests("HEAD"), 2);
    fake.push_image("app", "v1", &moved);
    let (status, h, body) = get(&url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body, moved.manifest.to_vec());
    assert_eq!(
        header(&h, "docker-content-digest"),
        moved.manifest_digest.to_string()
    );
    assert_eq!(manifest_requests("GET"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_while_its_range_waits_frees_its_download_slot_at_once() {
    let img = sized_image(23, 1, 2_000_000);
    let fake = fake_with("app", &img).await;
    let layer = img.layers[0].clone();
    // Ten seconds upstream: the last bytes are far off.
    fake.add_fault(Fault::ThrottleBlob {
        digest: layer.digest.clone(),
        bytes_per_sec: 200_000,
    });
    let srv = mirror_of(&fake, |c| c.max_downloads_per_client = 1).await;
    let url = format!("{}/v2/app/blobs/{}", srv.base, layer.digest);
    let resp = http()
        .get(&url)
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 206);
    drop(resp);
    let config = format!("{}/v2/app/blobs/{}", srv.base, img.config.digest);
    let t0 = std::time::Instant::now();
    loop {
        let (status, _, _) = get(&config, &[]).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429);
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the slot stayed taken by a client that left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
