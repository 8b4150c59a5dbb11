//! Smoke tests of the fake registry and the random images, spoken to with plain reqwest.

use ferry_core::{media, Digest, Platform};
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault, TokenField};
use ferry_testkit::image::{random_image, random_index, ImageSpec};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn with_image(auth: FakeAuth) -> (FakeRegistry, ferry_testkit::image::TestImage) {
    let reg = FakeRegistry::start(auth).await;
    let img = random_image(&ImageSpec {
        layer_size: 100_000,
        ..ImageSpec::default()
    });
    reg.push_image("lib/app", "v1", &img);
    (reg, img)
}

#[test]
fn images_are_deterministic_and_valid() {
    let spec = ImageSpec::default();
    let a = random_image(&spec);
    assert_eq!(a, random_image(&spec));
    assert_ne!(
        a.manifest,
        random_image(&ImageSpec {
            seed: 2,
            ..spec.clone()
        })
        .manifest
    );
    assert_eq!(a.manifest_digest, Digest::sha256_of(&a.manifest));
    let m: ferry_core::ImageManifest = serde_json::from_slice(&a.manifest).unwrap();
    assert_eq!(m.media_type.as_deref(), Some(media::OCI_MANIFEST));
    assert_eq!(m.layers.len(), 2);
    assert_eq!(m.config.digest, a.config.digest);
    let config: serde_json::Value = serde_json::from_slice(&a.config.bytes).unwrap();
    assert_eq!(config["rootfs"]["diff_ids"][1], a.diff_ids[1].to_string());

    let d = random_image(&ImageSpec {
        docker_media_types: true,
        ..spec
    });
    assert_eq!(d.manifest_media_type, media::DOCKER_MANIFEST);
    assert_eq!(d.layers[0].media_type, media::DOCKER_LAYER_GZIP);

    let platforms = [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
    ];
    let idx = random_index(7, &platforms, true);
    assert_eq!(idx, random_index(7, &platforms, true));
    assert_eq!(idx.media_type, media::DOCKER_MANIFEST_LIST);
    let parsed: ferry_core::IndexManifest = serde_json::from_slice(&idx.bytes).unwrap();
    assert_eq!(parsed.platforms(), platforms.to_vec());
    assert_ne!(
        idx.images[0].layers[0].digest,
        idx.images[1].layers[0].digest
    );
}

#[tokio::test]
async fn manifests_by_tag_and_digest() {
    let (reg, img) = with_image(FakeAuth::None).await;
    let c = client();
    let base = format!("http://{}/v2/lib/app/manifests", reg.host());
    for reference in ["v1".to_string(), img.manifest_digest.to_string()] {
        let resp = c.get(format!("{base}/{reference}")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let h = resp.headers();
        assert_eq!(h["content-type"], media::OCI_MANIFEST);
        assert_eq!(
            h["docker-content-digest"],
            img.manifest_digest.to_string().as_str()
        );
        assert_eq!(h["content-length"], img.manifest.len().to_string().as_str());
        assert_eq!(resp.bytes().await.unwrap(), img.manifest);
    }
    let head = c.head(format!("{base}/v1")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        img.manifest.len().to_string().as_str()
    );

    let missing = c.get(format!("{base}/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");

    let tags: serde_json::Value = c
        .get(format!("http://{}/v2/lib/app/tags/list", reg.host()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tags, serde_json::json!({"name": "lib/app", "tags": ["v1"]}));
    let cat: serde_json::Value = c
        .get(format!("http://{}/v2/_catalog", reg.host()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cat["repositories"], serde_json::json!(["lib/app"]));
}

#[tokio::test]
async fn blob_ranges_and_no_range() {
    let (reg, img) = with_image(FakeAuth::None).await;
    let layer = &img.layers[0];
    let url = format!("http://{}/v2/lib/app/blobs/{}", reg.host(), layer.digest);
    let c = client();
    let full = c.get(&url).send().await.unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.bytes().await.unwrap(), layer.bytes);

    let total = layer.bytes.len();
    let resp = c
        .get(&url)
        .header("range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"],
        format!("bytes 100-{}/{total}", total - 1).as_str()
    );
    assert_eq!(resp.bytes().await.unwrap(), layer.bytes.slice(100..));
    let resp = c
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), layer.bytes.slice(10..20));

    reg.add_fault(Fault::NoRange);
    let resp = c
        .get(&url)
        .header("range", "bytes=100-")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), layer.bytes);
    assert_eq!(reg.blob_gets(&layer.digest), 4);
    assert_eq!(
        reg.requests().last().unwrap().range.as_deref(),
        Some("bytes=100-")
    );

    let unknown = Digest::sha256_of(b"nothing");
    let resp = c
        .get(format!("http://{}/v2/lib/app/blobs/{unknown}", reg.host()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "BLOB_UNKNOWN");
}

#[tokio::test]
async fn drop_after_aborts_mid_body() {
    let (reg, img) = with_image(FakeAuth::None).await;
    let layer = &img.layers[0];
    reg.add_fault(Fault::DropAfter {
        digest: Some(layer.digest.clone()),
        after: 1000,
        times: 1,
    });
    let url = format!("http://{}/v2/lib/app/blobs/{}", reg.host(), layer.digest);
    let c = client();
    let mut resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(layer.bytes.len() as u64));
    let mut got = Vec::new();
    let err = loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => panic!("clean end of body after {} bytes", got.len()),
            Err(e) => break e,
        }
    };
    assert_eq!(
        got,
        &layer.bytes[..1000],
        "the bytes before the drop arrive: {err}"
    );
    // Only the first GET is dropped.
    assert_eq!(
        c.get(&url).send().await.unwrap().bytes().await.unwrap(),
        layer.bytes
    );
}

#[tokio::test]
async fn status_faults_wrong_digest_and_redirect() {
    let (reg, img) = with_image(FakeAuth::Basic {
        user: "u".into(),
        pass: "p".into(),
    })
    .await;
    let layer = &img.layers[1];
    let url = format!("http://{}/v2/lib/app/blobs/{}", reg.host(), layer.digest);
    let c = client();
    let unauth = c.get(&url).send().await.unwrap();
    assert_eq!(unauth.status(), 401);
    assert_eq!(unauth.headers()["www-authenticate"], "Basic realm=\"fake\"");

    reg.add_fault(Fault::TooManyRequests {
        times: 1,
        retry_after_secs: 3,
    });
    reg.add_fault(Fault::ServerError { times: 1 });
    let resp = c.get(&url).basic_auth("u", Some("p")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(
        c.get(&url)
            .basic_auth("u", Some("p"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        c.get(&url)
            .basic_auth("u", Some("p"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    reg.add_fault(Fault::WrongDigest {
        digest: layer.digest.clone(),
    });
    let body = c
        .get(&url)
        .basic_auth("u", Some("p"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), layer.bytes.len());
    assert_ne!(Digest::sha256_of(&body), layer.digest);

    reg.clear_faults();
    reg.add_fault(Fault::RedirectBlobs);
    let resp = c.get(&url).basic_auth("u", Some("p")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.url().host_str(), Some("localhost"));
    assert_eq!(resp.bytes().await.unwrap(), layer.bytes);
    assert!(
        !reg.redirect_saw_authorization(),
        "reqwest drops Authorization on a cross-host redirect"
    );
}

async fn fetch_token(c: &reqwest::Client, challenge: &str, creds: Option<(&str, &str)>) -> String {
    let param = |k: &str| {
        let start = challenge.find(&format!("{k}=\"")).unwrap() + k.len() + 2;
        challenge[start..].split('"').next().unwrap().to_string()
    };
    let mut req = c
        .get(param("realm"))
        .query(&[("service", param("service")), ("scope", param("scope"))]);
    if let Some((u, p)) = creds {
        req = req.basic_auth(u, Some(p));
    }
    let body: serde_json::Value = req.send().await.unwrap().json().await.unwrap();
    body["token"]
        .as_str()
        .or(body["access_token"].as_str())
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn bearer_flow_and_token_expiry() {
    let auth = FakeAuth::Bearer {
        credentials: Some(("u".into(), "p".into())),
        token_field: TokenField::AccessToken,
        expires_in: Some(60),
    };
    let (reg, img) = with_image(auth).await;
    let c = client();
    let ping = c
        .get(format!("http://{}/v2/", reg.host()))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 401);
    let url = format!("http://{}/v2/lib/app/manifests/v1", reg.host());
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(
        challenge,
        format!("Bearer realm=\"http://{}/token\",service=\"fake-registry\",scope=\"repository:lib/app:pull\"", reg.host())
    );
    let realm = format!("http://{}/token", reg.host());
    assert_eq!(
        c.get(&realm).send().await.unwrap().status(),
        401,
        "the token endpoint checks credentials"
    );

    let token = fetch_token(&c, &challenge, Some(("u", "p"))).await;
    assert_eq!(reg.tokens_issued(), 1);
    let resp = c.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), img.manifest);
    let other = format!("http://{}/v2/other/manifests/v1", reg.host());
    assert_eq!(
        c.get(&other)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "scoped"
    );

    reg.add_fault(Fault::ExpireTokensAfter { requests: 2 });
    assert_eq!(
        c.get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "expired"
    );
    let fresh = fetch_token(&c, &challenge, Some(("u", "p"))).await;
    assert_eq!(
        c.get(&url)
            .bearer_auth(&fresh)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(reg.tokens_issued(), 2);
}

#[tokio::test]
async fn anonymous_bearer_and_throttle() {
    let auth = FakeAuth::Bearer {
        credentials: None,
        token_field: TokenField::Both,
        expires_in: None,
    };
    let (reg, img) = with_image(auth).await;
    let c = client();
    let layer = &img.layers[0];
    let url = format!("http://{}/v2/lib/app/blobs/{}", reg.host(), layer.digest);
    let resp = c.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    let token = fetch_token(&c, &challenge, None).await;
    reg.add_fault(Fault::Throttle {
        bytes_per_sec: 1_000_000,
    });
    let start = std::time::Instant::now();
    let body = c
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body, layer.bytes);
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(80),
        "100 kB at 1 MB/s takes ~100ms"
    );
    assert_eq!(reg.blob_gets(&layer.digest), 2);
}
