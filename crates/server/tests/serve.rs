//! `ferry serve` over real sockets against the fake registry: archives with Range and
//! If-Range while blobs still arrive, one upstream fetch for many clients, the v1 and
//! DockerProxy endpoints, parameter checks and the private-address rules.

mod common;

use std::time::Duration;

use common::*;
use ferry_core::Platform;
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault};
use ferry_testkit::image::{random_index, sized_image, TestImage};

async fn fake_with(repo: &str, img: &TestImage) -> FakeRegistry {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    fake.push_image(repo, "v1", img);
    fake
}

fn blob_entry(img_blob: &ferry_core::Digest) -> String {
    format!("blobs/sha256/{}", img_blob.hex())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn image_is_the_default_archive_with_its_headers() {
    let img = sized_image(11, 3, 200_000);
    let fake = fake_with("lib/app", &img).await;
    let srv = start(&[&fake.host()], |_| {}).await;
    let name = format!("{}/lib/app:v1", fake.host());
    let url = format!("{}/image?name={name}", srv.base);
    let (status, h, body) = get(&url, &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&h, "content-length"), body.len().to_string());
    assert_eq!(header(&h, "content-type"), "application/x-tar");
    assert_eq!(header(&h, "accept-ranges"), "bytes");
    assert!(header(&h, "etag").starts_with("\"ferry-tar-"), "{h:?}");
    let stem = name.replace(['/', ':', '.'], "_");
    assert_eq!(
        header(&h, "content-disposition"),
        format!("attachment; filename=\"{stem}.tar\"")
    );
    let files = tar_files(&body);
    for b in img.blobs() {
        let (_, bytes) = files
            .iter()
            .find(|(n, _)| *n == blob_entry(&b.digest))
            .unwrap_or_else(|| panic!("{} missing", b.digest));
        assert_eq!(bytes, &b.bytes.to_vec());
    }
    assert!(files.iter().any(|(n, _)| n == "manifest.json"));
    assert!(files.iter().any(|(n, _)| n == "index.json"));
    // HEAD: the same headers, no body, and it fetches nothing more.
    let gets = fake.requests().len();
    let resp = http().head(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(resp.headers(), "content-length"),
        body.len().to_string()
    );
    assert_eq!(header(resp.headers(), "etag"), header(&h, "etag"));
    assert_eq!(fake.requests().len(), gets, "HEAD fetched from upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_last_mib_asked_first_of_an_uncached_image_is_right() {
    let img = sized_image(12, 2, 1_500_000);
    let fake = fake_with("big/one", &img).await;
    // Slow blobs: the range is asked while they still arrive.
    fake.add_fault(Fault::Throttle {
        bytes_per_sec: 4_000_000,
    });
    let srv = start(&[&fake.host()], |_| {}).await;
    let url = format!("{}/image?name={}/big/one:v1", srv.base, fake.host());
    let (status, h, tail) = get(&url, &[("Range", "bytes=-1048576")]).await;
    assert_eq!(status, 206, "{}", String::from_utf8_lossy(&tail));
    assert_eq!(tail.len(), 1 << 20);
    let total: u64 = header(&h, "content-range")
        .rsplit('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes {}-{}/{total}", total - (1 << 20), total - 1)
    );
    fake.clear_faults();
    let (_, _, whole) = get(&url, &[]).await;
    assert_eq!(whole.len() as u64, total);
    assert!(
        whole.ends_with(&tail),
        "the range differs from the archive's end"
    );
    // Past the end: 416 with the length.
    let (status, h, _) = get(&url, &[("Range", &format!("bytes={total}-"))]).await;
    assert_eq!(status, 416);
    assert_eq!(header(&h, "content-range"), format!("bytes */{total}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_download_cut_halfway_resumes_byte_identical() {
    use futures_util::StreamExt;
    let img = sized_image(13, 3, 400_000);
    let fake = fake_with("cut/me", &img).await;
    fake.add_fault(Fault::Throttle {
        bytes_per_sec: 3_000_000,
    });
    let srv = start(&[&fake.host()], |_| {}).await;
    let url = format!("{}/download/{}/cut/me:v1.tar", srv.base, fake.host());
    // The first client reads about half, then goes away.
    let resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let etag = header(resp.headers(), "etag");
    let total: usize = header(resp.headers(), "content-length").parse().unwrap();
    let mut first = Vec::new();
    let mut s = resp.bytes_stream();
    while first.len() < total / 2 {
        first.extend_from_slice(&s.next().await.unwrap().unwrap());
    }
    drop(s);
    // Resumed with Range and If-Range, as `wget -c` / `curl -C -` do.
    let from = format!("bytes={}-", first.len());
    let (status, h, rest) = get(&url, &[("Range", &from), ("If-Range", &etag)]).await;
    assert_eq!(status, 206);
    assert_eq!(
        header(&h, "content-range"),
        format!("bytes {}-{}/{total}", first.len(), total - 1)
    );
    first.extend_from_slice(&rest);
    fake.clear_faults();
    let (_, _, whole) = get(&url, &[]).await;
    assert_eq!(first.len(), whole.len());
    assert!(first == whole, "the resumed download differs");
    // An If-Range that is not the current tag gets the whole archive.
    let (status, _, again) = get(&url, &[("Range", &from), ("If-Range", "\"old\"")]).await;
    assert_eq!(status, 200);
    assert_eq!(again.len(), total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_clients_of_one_uncached_image_fetch_each_blob_once() {
    let img = sized_image(14, 3, 300_000);
    let fake = fake_with("many/clients", &img).await;
    fake.add_fault(Fault::Throttle {
        bytes_per_sec: 5_000_000,
    });
    // All from 127.0.0.1: above the per-client limit's default.
    let srv = start(&[&fake.host()], |c| c.max_downloads_per_client = 50).await;
    let url = format!("{}/image?name={}/many/clients:v1", srv.base, fake.host());
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let u = url.clone();
        tasks.push(tokio::spawn(async move { get(&u, &[]).await }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let (status, _, body) = t.await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    for b in img.blobs() {
        assert_eq!(
            fake.blob_gets(&b.digest),
            1,
            "blob {} fetched more than once",
            b.digest
        );
    }
    let manifest_gets = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/manifests/"))
        .count();
    assert_eq!(manifest_gets, 1, "the tag was resolved more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_on_a_private_address_is_refused_without_allow_private() {
    let img = sized_image(15, 1, 1000);
    let fake = fake_with("priv/img", &img).await;
    let srv = start(&[], |_| {}).await;
    let port = fake.host().rsplit(':').next().unwrap().to_string();
    for host in [fake.host(), format!("localhost:{port}")] {
        let (status, _, body) =
            get(&format!("{}/image?name={host}/priv/img:v1", srv.base), &[]).await;
        assert_eq!(status, 403);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["error"],
            format!("{host} is a private or local address; this server fetches only from public registries unless started with --allow-private {host}")
        );
    }
    // Another port of an allowed host is not allowed.
    let srv = start(&["127.0.0.1:1"], |_| {}).await;
    let (status, _, _) = get(
        &format!("{}/platforms?name={}/priv/img:v1", srv.base, fake.host()),
        &[],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(fake.requests().len(), 0, "a refused registry was contacted");
}

/// An IP literal is connected to without a lookup, so the resolver never sees it: the
/// other spellings of 127.0.0.1 the URL parser accepts are refused before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_spellings_of_a_loopback_address_are_refused() {
    let img = sized_image(26, 1, 1000);
    let fake = fake_with("spell/img", &img).await;
    let port = fake.host().rsplit(':').next().unwrap().to_string();
    let srv = start(&[], |_| {}).await;
    for host in [
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "[::ffff:127.0.0.1]",
    ] {
        let target = format!("{}/platforms?name={host}:{port}/spell/img:v1", srv.base);
        let (status, _, body) = get(&target, &[]).await;
        assert_eq!(status, 403, "{host}: {}", String::from_utf8_lossy(&body));
    }
    assert_eq!(
        fake.requests().len(),
        0,
        "a loopback registry was contacted"
    );
}

/// The token realm comes from the registry's challenge: a registry the server may use
/// must not send the token fetch to a private address it names as an IP literal (the
/// fake's realm is `http://127.0.0.1:PORT/token`; only `localhost:PORT` is allowed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_realm_on_a_private_address_is_refused() {
    let fake = FakeRegistry::start(FakeAuth::Bearer {
        credentials: None,
        token_field: ferry_testkit::fake::TokenField::Token,
        expires_in: None,
    })
    .await;
    fake.push_image("realm/img", "v1", &sized_image(27, 1, 1000));
    let port = fake.host().rsplit(':').next().unwrap().to_string();
    let allowed = format!("localhost:{port}");
    let srv = start(&[&allowed], |_| {}).await;
    let (status, _, body) = get(
        &format!("{}/platforms?name={allowed}/realm/img:v1", srv.base),
        &[],
    )
    .await;
    let text = String::from_utf8_lossy(&body);
    assert_ne!(status, 200, "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{port} is a private or local address")),
        "{text}"
    );
    let reqs = fake.requests();
    assert!(
        reqs.iter().all(|r| !r.path.starts_with("/token")),
        "the token service was asked: {:?}",
        reqs.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

/// The check is on the connection: a host name that resolves to loopback is refused by the
/// client's resolver, whatever the name looks like.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_a_private_address_is_refused_on_the_connection() {
    let img = sized_image(16, 1, 1000);
    let fake = fake_with("dns/img", &img).await;
    let port = fake.host().rsplit(':').next().unwrap().to_string();
    let guard: std::sync::Arc<dyn ferry_registry::AddressGuard> =
        std::sync::Arc::new(ferry_server::AddressPolicy::default());
    let client = ferry_registry::Client::new(ferry_registry::ClientOptions {
        address_guard: Some(guard),
        max_attempts: 1,
        credential_files: ferry_registry::CredentialFiles::default(),
        ..Default::default()
    })
    .unwrap();
    let r = format!("localhost:{port}/dns/img:v1").parse().unwrap();
    let err = client.manifest(&r).await.unwrap_err();
    let chain = {
        let mut s = err.to_string();
        let mut c = std::error::Error::source(&err);
        while let Some(e) = c {
            s.push_str(&format!(": {e}"));
            c = e.source();
        }
        s
    };
    assert!(
        chain.contains(
            "localhost resolves only to addresses this server may not connect to (127.0.0.1"
        ),
        "{chain}"
    );
    assert_eq!(fake.requests().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_get_400_json_and_paths_do_not_traverse() {
    let srv = start(&[], |_| {}).await;
    for (q, msg) in [
        ("/image", "give the image name as ?name="),
        (
            "/image?name=a%20b",
            "name is not an image name (at most 512 printable ASCII characters)",
        ),
        (
            "/image?name=alpine&arch=ARM64",
            "arch must be 1 to 32 of a-z, 0-9, '.', '_', '-'",
        ),
        (
            "/image?name=alpine&os=linux",
            "give arch with os or variant (e.g. &os=linux&arch=arm64&variant=v8)",
        ),
        ("/dl?myimage=", "give the image name as ?myimage="),
        ("/platforms?name=Alpine", ""),
    ] {
        let (status, h, body) = get(&format!("{}{q}", srv.base), &[]).await;
        assert_eq!(status, 400, "{q}");
        assert_eq!(header(&h, "content-type"), "application/json", "{q}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let e = v["error"].as_str().unwrap();
        if !msg.is_empty() {
            assert_eq!(e, msg, "{q}");
        }
    }
    for target in [
        "/download/../../etc/passwd",
        "/download/../..",
        "/download/%2e%2e/%2e%2e/etc/passwd.tar",
        "/download/..%2f..%2fetc%2fpasswd.tar",
        "/download/a/../../b.tar",
    ] {
        let (status, text) = raw_status(srv.addr, target).await;
        assert!(status == 400 || status == 404, "{target}: {status}\n{text}");
        assert!(!text.contains("root:"), "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tar_zip_unzips_to_the_same_tar() {
    let img = sized_image(17, 2, 100_000);
    let fake = fake_with("zip/me", &img).await;
    let srv = start(&[&fake.host()], |_| {}).await;
    let name = format!("{}/zip/me:v1", fake.host());
    let (status, h, zip) = get(&format!("{}/download/{name}.tar.zip", srv.base), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&zip));
    assert_eq!(header(&h, "content-type"), "application/zip");
    assert!(header(&h, "etag").starts_with("\"ferry-zip-"));
    let (status, _, tar) = get(&format!("{}/download/{name}.tar", srv.base), &[]).await;
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let zpath = dir.path().join("a.zip");
    std::fs::write(&zpath, &zip).unwrap();
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys,zipfile; z=zipfile.ZipFile(sys.argv[1]); assert z.testzip() is None; i=z.infolist(); print(len(i), i[0].filename, i[0].compress_type); sys.stdout.flush(); open(sys.argv[2],'wb').write(z.read(i[0]))",
        ])
        .arg(&zpath)
        .arg(dir.path().join("out.tar"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("1 {name}.tar 0")
    );
    assert!(std::fs::read(dir.path().join("out.tar")).unwrap() == tar);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn platforms_of_a_multi_arch_index_and_arch_picks_one() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let plats = [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
    ];
    let idx = random_index(18, &plats, false);
    fake.push_index("multi/arch", "v1", &idx);
    let srv = start(&[&fake.host()], |_| {}).await;
    let name = format!("{}/multi/arch:v1", fake.host());
    let (status, _, body) = get(&format!("{}/platforms?name={name}", srv.base), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["digest"], idx.digest.to_string());
    assert_eq!(
        v["platforms"],
        serde_json::json!([
            {"os": "linux", "architecture": "amd64", "variant": null},
            {"os": "linux", "architecture": "arm64", "variant": "v8"},
        ])
    );
    let (status, _, tar) = get(&format!("{}/image?name={name}&arch=arm64", srv.base), &[]).await;
    assert_eq!(status, 200);
    let files = tar_files(&tar);
    let arm = &idx.images[1];
    assert!(files
        .iter()
        .any(|(n, _)| *n == blob_entry(&arm.manifest_digest)));
    assert!(!files
        .iter()
        .any(|(n, _)| *n == blob_entry(&idx.images[0].manifest_digest)));
    // An architecture the index lacks: 404.
    let (status, _, body) = get(&format!("{}/image?name={name}&arch=s390x", srv.base), &[]).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn v1_pull_then_save_then_download() {
    let img = sized_image(19, 2, 100_000);
    let fake = fake_with("v1/img", &img).await;
    let srv = start(&[&fake.host()], |_| {}).await;
    let name = format!("{}/v1/img:v1", fake.host());
    let (_, _, body) = get(&format!("{}/save/{name}", srv.base), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"id": name, "status": "Error", "error": "Image has to be pulled first"})
    );
    let (status, _, body) = get(&format!("{}/pull/{name}", srv.base), &[]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["id"], name);
    let mut done = false;
    for _ in 0..100 {
        let (_, _, body) = get(&format!("{}/pull/{name}", srv.base), &[]).await;
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if v["status"] == "Downloaded" {
            done = true;
            break;
        }
        assert_eq!(v["status"], "Downloading", "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(done, "the pull never finished");
    let (_, _, body) = get(&format!("{}/save/{name}", srv.base), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "Ready");
    assert_eq!(v["url"], format!("download/{name}.tar.zip"));
    let (status, _, zip) = get(&format!("{}/{}", srv.base, v["url"].as_str().unwrap()), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(v["size"], zip.len() as u64);
    // Unknown images: 404 for archives, an Error status for v1's JSON.
    let (status, _, _) = get(
        &format!("{}/dl?myimage={}/v1/nothing:v1", srv.base, fake.host()),
        &[],
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_over_max_image_size_gets_413() {
    let img = sized_image(20, 2, 100_000);
    let fake = fake_with("too/big", &img).await;
    let srv = start(&[&fake.host()], |c| c.max_image_size = Some(50_000)).await;
    let (status, _, body) = get(
        &format!("{}/image?name={}/too/big:v1", srv.base, fake.host()),
        &[],
    )
    .await;
    assert_eq!(status, 413);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .ends_with("more than this server's limit of 50000 bytes (--max-image-size)"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_everything_but_health() {
    let srv = start(&[], |c| c.tokens = vec!["s3cret".into()]).await;
    let (status, _, body) = get(&format!("{}/health", srv.base), &[]).await;
    assert_eq!((status, body.as_slice()), (200, &b"OK"[..]));
    let (status, h, _) = get(&format!("{}/image?name=alpine", srv.base), &[]).await;
    assert_eq!(status, 401);
    assert_eq!(
        header(&h, "www-authenticate"),
        "Bearer realm=\"ferry serve\""
    );
    let (status, _, _) = get(&format!("{}/image?name=a%20b&token=s3cret", srv.base), &[]).await;
    assert_eq!(status, 400, "a good token passes on to the handler");
    let (status, _, _) = get(
        &format!("{}/image?name=a%20b", srv.base),
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = get(
        &format!("{}/image?name=a%20b", srv.base),
        &[("Authorization", "Bearer nope")],
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fetch_nobody_waits_for_stops_and_a_shared_one_goes_on() {
    use futures_util::StreamExt;
    let img = sized_image(21, 1, 3_000_000);
    let fake = fake_with("cancel/me", &img).await;
    fake.add_fault(Fault::Throttle {
        bytes_per_sec: 1_000_000,
    });
    let srv = start(&[&fake.host()], |_| {}).await;
    let url = format!("{}/image?name={}/cancel/me:v1", srv.base, fake.host());
    // Two clients; the first leaves after the headers, the second reads to the end.
    let leaving = http().get(&url).send().await.unwrap();
    let staying = tokio::spawn({
        let u = url.clone();
        async move { get(&u, &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(leaving);
    let (status, h, body) = staying.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-length"), body.len().to_string());
    // A fresh image, one client that leaves: the upstream transfer stops.
    let img2 = sized_image(22, 1, 3_000_000);
    fake.push_image("cancel/two", "v1", &img2);
    let url2 = format!("{}/image?name={}/cancel/two:v1", srv.base, fake.host());
    let resp = http().get(&url2).send().await.unwrap();
    let mut s = resp.bytes_stream();
    let _ = s.next().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(srv.state.jobs_in_flight(), 1);
    drop(s);
    let mut stopped = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if srv.state.jobs_in_flight() == 0 {
            stopped = true;
            break;
        }
    }
    assert!(stopped, "the fetch went on with nobody waiting");
    let sent = fake.body_bytes_sent();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(fake.body_bytes_sent(), sent, "upstream bytes still flow");
    assert!(!srv.state.store().contains(&img2.layers[0].digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_auth_failure_is_502_with_a_clear_message() {
    let fake = FakeRegistry::start(FakeAuth::Basic {
        user: "u".into(),
        pass: "p".into(),
    })
    .await;
    fake.push_image("locked/img", "v1", &sized_image(23, 1, 1000));
    let srv = start(&[&fake.host()], |_| {}).await;
    let (status, _, body) = get(
        &format!("{}/image?name={}/locked/img:v1", srv.base, fake.host()),
        &[],
    )
    .await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let e = v["error"].as_str().unwrap();
    assert!(e.starts_with("the registry refused access: "), "{e}");
    assert!(e.ends_with("(the server's credentials for it are missing or not accepted; private images also answer this way when they do not exist)"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_bytes_and_cache_use() {
    let img = sized_image(24, 2, 50_000);
    let fake = fake_with("metered/img", &img).await;
    let srv = start(&[&fake.host()], |_| {}).await;
    let url = format!("{}/image?name={}/metered/img:v1", srv.base, fake.host());
    let (_, _, first) = get(&url, &[]).await;
    // The config of a single-platform image is read while resolving (to check its
    // platform), so the fetch finds it cached: the job downloads the layers.
    let layer_bytes: u64 = img.layers.iter().map(|b| b.size()).sum();
    let (layers, blobs) = (img.layers.len(), img.blobs().count());
    let line = |text: &str, name: &str| -> String {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .to_string()
    };
    // Wait until the first job has let go, so the next request starts a new one.
    for _ in 0..100 {
        if srv.state.jobs_in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, _, _) = get(&url, &[]).await;
    let (status, h, body) = get(&format!("{}/metrics", srv.base), &[]).await;
    assert_eq!(status, 200);
    assert!(header(&h, "content-type").starts_with("application/openmetrics-text"));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(
        line(&text, "ferry_serve_requests_total{route=\"/image\""),
        "ferry_serve_requests_total{route=\"/image\",status=\"200\"} 2"
    );
    assert_eq!(
        line(&text, "ferry_serve_upstream_bytes_total"),
        format!("ferry_serve_upstream_bytes_total {layer_bytes}")
    );
    assert_eq!(
        line(&text, "ferry_serve_cache_misses_total"),
        format!("ferry_serve_cache_misses_total {layers}")
    );
    assert_eq!(
        line(&text, "ferry_serve_cache_hits_total"),
        format!("ferry_serve_cache_hits_total {}", blobs + 1)
    );
    assert_eq!(
        line(&text, "ferry_serve_served_bytes_total"),
        format!("ferry_serve_served_bytes_total {}", 2 * first.len())
    );
    assert!(text.contains("ferry_serve_jobs_in_flight 0"), "{text}");
    assert!(text.contains("ferry_serve_cache_blobs "), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_jobs_api_reports_a_pull_until_it_is_done() {
    let img = sized_image(25, 2, 600_000);
    let fake = fake_with("api/img", &img).await;
    fake.add_fault(Fault::Throttle {
        bytes_per_sec: 1_000_000,
    });
    let srv = start(&[&fake.host()], |_| {}).await;
    let name = format!("{}/api/img:v1", fake.host());
    let resp = http()
        .post(format!("{}/api/pulls", srv.base))
        .body(serde_json::json!({"name": name, "platform": "linux/amd64"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let v: serde_json::Value = resp.json().await.unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["digest"], img.manifest_digest.to_string());
    assert_eq!(v["urls"]["status"], format!("/api/pulls/{id}"));
    assert_eq!(
        v["urls"]["download"],
        format!(
            "/image?name={}&os=linux&arch=amd64",
            name.replace(':', "%3A").replace('/', "%2F")
        )
    );
    // Events until the end: the last one is "done" with every byte.
    let (status, h, body) = get(&format!("{}/api/pulls/{id}/events", srv.base), &[]).await;
    assert_eq!(status, 200);
    assert!(header(&h, "content-type").starts_with("text/event-stream"));
    let text = String::from_utf8(body).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(events.len() >= 2, "{text}");
    assert_eq!(events[0]["state"], "running");
    let last = events.last().unwrap();
    assert_eq!(last["state"], "done");
    let total: u64 = img.blobs().map(|b| b.size()).sum();
    assert_eq!(last["total_bytes"], total);
    assert_eq!(last["done_bytes"], total);
    assert_eq!(last["blobs"].as_array().unwrap().len(), img.blobs().count());
    let (_, _, body) = get(&format!("{}/api/pulls/{id}", srv.base), &[]).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["state"], "done");
    // Unknown ids and bad bodies.
    let (status, _, _) = get(&format!("{}/api/pulls/0123456789abcdef", srv.base), &[]).await;
    assert_eq!(status, 404);
    let (status, _, _) = get(&format!("{}/api/pulls/..%2f..", srv.base), &[]).await;
    assert_eq!(status, 404);
    for body in [
        "not json",
        r#"{"name": "alpine", "platform": "linux"}"#,
        r#"{"name": 3}"#,
    ] {
        let resp = http()
            .post(format!("{}/api/pulls", srv.base))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert!(v["error"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_bytes_leave_before_the_layers_have_arrived() {
    use futures_util::StreamExt;
    let img = sized_image(26, 1, 2_000_000);
    let fake = fake_with("first/byte", &img).await;
    // The layer alone takes about 10 s to arrive.
    fake.add_fault(Fault::ThrottleBlob {
        digest: img.layers[0].digest.clone(),
        bytes_per_sec: 200_000,
    });
    let srv = start(&[&fake.host()], |_| {}).await;
    let url = format!("{}/image?name={}/first/byte:v1", srv.base, fake.host());
    let t = std::time::Instant::now();
    let resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut s = resp.bytes_stream();
    let first = s.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the first byte took {:?}",
        t.elapsed()
    );
    assert!(!srv.state.store().contains(&img.layers[0].digest));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blob_two_images_share_is_fetched_once() {
    let base = sized_image(27, 1, 1_000_000);
    let other = ferry_testkit::image::derived_image(&base, 28);
    let fake = FakeRegistry::start(FakeAuth::None).await;
    fake.push_image("shared/base", "v1", &base);
    fake.push_image("shared/other", "v1", &other);
    fake.add_fault(Fault::Throttle {
        bytes_per_sec: 2_000_000,
    });
    let srv = start(&[&fake.host()], |_| {}).await;
    let a = format!("{}/image?name={}/shared/base:v1", srv.base, fake.host());
    let b = format!("{}/image?name={}/shared/other:v1", srv.base, fake.host());
    let (ra, rb) = tokio::join!(get(&a, &[]), get(&b, &[]));
    assert_eq!(ra.0, 200);
    assert_eq!(rb.0, 200);
    assert_eq!(fake.blob_gets(&base.layers[0].digest), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_or_huge_request_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let srv = start(&[], |c| c.header_timeout = Duration::from_secs(1)).await;
    // Headers that never end: the connection is closed after the timeout.
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t = std::time::Instant::now();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the server kept a half-sent request open");
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    // Nothing at all: closed after the timeout too (hyper's header timeout starts only
    // once the first bytes told it the protocol).
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "the server kept a connection that sent nothing open"
    );
    // Headers larger than the limit: refused, never served.
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
    // A normal request still works.
    let (status, _, _) = get(&format!("{}/health", srv.base), &[]).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn too_many_downloads_from_one_client_or_too_many_fetches_get_429() {
    let img = sized_image(29, 1, 600_000);
    let other = sized_image(30, 1, 600_000);
    let fake = fake_with("limit/one", &img).await;
    fake.push_image("limit/two", "v1", &other);
    fake.add_fault(Fault::Throttle {
        bytes_per_sec: 1_000_000,
    });
    let srv = start(&[&fake.host()], |c| {
        c.max_downloads_per_client = 2;
        c.max_pulls = 1;
    })
    .await;
    let one = format!("{}/image?name={}/limit/one:v1", srv.base, fake.host());
    let two = format!("{}/image?name={}/limit/two:v1", srv.base, fake.host());
    let a = http().get(&one).send().await.unwrap();
    let b = http().get(&one).send().await.unwrap();
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let (status, _, body) = get(&one, &[]).await;
    assert_eq!(status, 429);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["error"],
        "this address has 2 downloads in progress already; let one finish first"
    );
    // HEAD needs no slot.
    let head = http().head(&one).send().await.unwrap();
    assert_eq!(head.status(), 200);
    drop(b);
    // One image is being fetched: a second one waits its turn.
    let (status, _, body) = get(&two, &[]).await;
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["error"],
        "this server is fetching 1 images already; try again in a few seconds"
    );
    let whole = a.bytes().await.unwrap();
    assert!(!whole.is_empty());
    for _ in 0..100 {
        if srv.state.jobs_in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _, _) = get(&two, &[]).await;
    assert_eq!(status, 200);
}

/// A self-signed certificate for 127.0.0.1 made with openssl: (cert, key) paths.
fn self_signed(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let openssl = ferry_testkit::real::tool("openssl")?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new(openssl)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ferry test",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some((cert, key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_serves_https_with_the_given_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed(dir.path()) else {
        return;
    };
    let img = sized_image(31, 1, 100_000);
    let fake = fake_with("tls/img", &img).await;
    let c2 = (cert.clone(), key.clone());
    let srv = start(&[&fake.host()], move |c| c.tls = Some(c2)).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let https = format!("https://{}", srv.addr);
    let resp = client.get(format!("{https}/health")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client
        .get(format!("{https}/image?name={}/tls/img:v1", fake.host()))
        .header("Range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap().len(), 100);
    // Plain HTTP on the TLS port gets no answer.
    let (status, _) = raw_status(srv.addr, "/health").await;
    assert_ne!(status, 200);
    // A key that is not PEM is refused with the file named and nothing of its content.
    std::fs::write(dir.path().join("bad.pem"), "not a key s3cret").unwrap();
    let e = ferry_server::tls_acceptor(&cert, &dir.path().join("bad.pem"))
        .err()
        .unwrap()
        .to_string();
    assert_eq!(
        e,
        format!(
            "reading the TLS key {}: it holds no PEM private key",
            dir.path().join("bad.pem").display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_drops_are_resumed_without_failing_the_client() {
    let img = sized_image(32, 2, 500_000);
    let fake = fake_with("drop/img", &img).await;
    fake.add_fault(Fault::DropAfter {
        digest: None,
        after: 100_000,
        times: 3,
    });
    let srv = start(&[&fake.host()], |_| {}).await;
    let (status, h, body) = get(
        &format!("{}/image?name={}/drop/img:v1", srv.base, fake.host()),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&h, "content-length"), body.len().to_string());
    let files = tar_files(&body);
    for b in img.blobs() {
        let (_, bytes) = files
            .iter()
            .find(|(n, _)| *n == blob_entry(&b.digest))
            .unwrap();
        assert!(bytes == &b.bytes.to_vec());
    }
    let resumed = fake
        .requests()
        .iter()
        .filter(|r| r.path.contains("/blobs/") && r.range.is_some())
        .count();
    assert!(resumed >= 1, "no ranged resume was asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_is_resolved_again_only_after_its_time() {
    let img = sized_image(33, 1, 1000);
    let fake = fake_with("ttl/img", &img).await;
    let manifest_gets = |fake: &FakeRegistry| {
        fake.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/manifests/v1"))
            .count()
    };
    let srv = start(&[&fake.host()], |_| {}).await;
    let url = format!("{}/image?name={}/ttl/img:v1", srv.base, fake.host());
    for _ in 0..3 {
        assert_eq!(get(&url, &[]).await.0, 200);
    }
    assert_eq!(
        manifest_gets(&fake),
        1,
        "the tag was asked again within its time"
    );
    let srv = start(&[&fake.host()], |c| c.tag_ttl = Duration::ZERO).await;
    let url = format!("{}/image?name={}/ttl/img:v1", srv.base, fake.host());
    for _ in 0..2 {
        assert_eq!(get(&url, &[]).await.0, 200);
    }
    assert_eq!(manifest_gets(&fake), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_stops_reading_is_cut_after_the_idle_time() {
    use tokio::io::AsyncWriteExt;
    // Larger than what the sockets' buffers take in.
    let img = sized_image(34, 2, 8_000_000);
    let fake = fake_with("idle/img", &img).await;
    let srv = start(&[&fake.host()], |c| {
        c.idle_timeout = Duration::from_secs(1);
        c.max_downloads_per_client = 1;
    })
    .await;
    let path = format!("/image?name={}/idle/img:v1", fake.host());
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The stalled client holds the one slot...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, _) = get(&format!("{}{path}", srv.base), &[("Range", "bytes=0-9")]).await;
    assert_eq!(status, 429);
    // ...until the idle time cuts it.
    let mut freed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, _, _) = get(&format!("{}{path}", srv.base), &[("Range", "bytes=0-9")]).await;
        if status == 206 {
            freed = true;
            break;
        }
    }
    assert!(freed, "a client that reads nothing kept its slot");
    drop(s);
}

/// The count of `ferry_serve_cut_connections_total{reason}` in the server's metrics.
async fn cuts(srv: &Server, reason: &str) -> u64 {
    let (_, _, body) = get(&format!("{}/metrics", srv.base), &[]).await;
    let text = String::from_utf8(body).unwrap();
    let key = format!("ferry_serve_cut_connections_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_reading_under_the_minimum_rate_is_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Larger than what the sockets' buffers take in.
    let img = sized_image(41, 2, 8_000_000);
    let fake = fake_with("slow/img", &img).await;
    let srv = start(&[&fake.host()], |c| {
        c.idle_timeout = Duration::from_secs(60);
        c.min_rate = 1 << 20;
        c.min_rate_window = Duration::from_millis(500);
        c.max_downloads_per_client = 1;
    })
    .await;
    let path = format!("/image?name={}/slow/img:v1", fake.host());
    // A client that takes what it is sent is not cut by the same rule.
    let (status, h, body) = get(&format!("{}{path}", srv.base), &[]).await;
    assert_eq!(status, 200);
    let full: usize = header(&h, "content-length").parse().unwrap();
    assert_eq!(body.len(), full);
    assert_eq!(cuts(&srv, "slow").await, 0);

    // About 400 KiB/s, under the 1 MiB/s asked for, and never idle.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(32 * 1024).unwrap();
    let mut s = sock.connect(srv.addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = 0usize;
    let mut buf = vec![0u8; 16 * 1024];
    let start = std::time::Instant::now();
    let mut freed = false;
    while start.elapsed() < Duration::from_secs(10) {
        match tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("the server sent nothing for 2 s"),
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        if cuts(&srv, "slow").await >= 1 {
            freed = true;
            break;
        }
    }
    assert!(freed, "a client at 400 KiB/s was not cut after {got} bytes");
    // The cut released its download slot at once...
    let (status, _, _) = get(&format!("{}{path}", srv.base), &[("Range", "bytes=0-9")]).await;
    assert_eq!(status, 206);
    // ...and the response ends short (what the kernel had buffered still arrives).
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => panic!("the cut connection stayed open"),
        }
    }
    assert!(got < full, "the whole archive arrived");
    assert_eq!(cuts(&srv, "idle").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_waiting_for_upstream_bytes_is_not_cut_by_the_minimum_rate() {
    let img = sized_image(42, 1, 400_000);
    let fake = fake_with("slowup/img", &img).await;
    // The layer takes about 4 s to arrive, far under the rate asked of clients.
    fake.add_fault(Fault::ThrottleBlob {
        digest: img.layers[0].digest.clone(),
        bytes_per_sec: 100_000,
    });
    let srv = start(&[&fake.host()], |c| {
        c.min_rate = 1 << 20;
        c.min_rate_window = Duration::from_millis(300);
    })
    .await;
    let url = format!("{}/image?name={}/slowup/img:v1", srv.base, fake.host());
    let t = std::time::Instant::now();
    let (status, h, body) = get(&url, &[]).await;
    assert!(t.elapsed() > Duration::from_secs(2), "the layer came early");
    assert_eq!(status, 200);
    assert_eq!(
        body.len(),
        header(&h, "content-length").parse::<usize>().unwrap()
    );
    assert_eq!(cuts(&srv, "slow").await, 0);
    assert_eq!(cuts(&srv, "idle").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_http2_connection_without_requests_is_closed_but_a_long_download_is_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let img = sized_image(43, 1, 200_000);
    let fake = fake_with("h2idle/img", &img).await;
    // The layer takes about 2 s to arrive: longer than the header timeout.
    fake.add_fault(Fault::ThrottleBlob {
        digest: img.layers[0].digest.clone(),
        bytes_per_sec: 100_000,
    });
    let srv = start(&[&fake.host()], |c| {
        c.header_timeout = Duration::from_secs(1)
    })
    .await;
    // The HTTP/2 preface and an empty SETTINGS frame, then nothing.
    let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "an HTTP/2 connection without requests stayed open"
    );
    // A request in progress keeps its connection, over HTTP/1.1 and HTTP/2.
    let url = format!("{}/image?name={}/h2idle/img:v1", srv.base, fake.host());
    let (status, h, body) = get(&url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        body.len(),
        header(&h, "content-length").parse::<usize>().unwrap()
    );
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2.get(format!("{}/health", srv.base)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The same client's connection was closed meanwhile; it connects again.
    let resp = h2
        .get(&url)
        .header("Range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insecure_registry_accepts_an_unverifiable_certificate_for_that_registry_only() {
    let img = sized_image(35, 1, 10_000);
    let fake = fake_with("tls/behind", &img).await;
    let backend: std::net::SocketAddr = fake.host().parse().unwrap();
    let front = ferry_testkit::tls::TlsFront::start_self_signed(backend).await;
    let host = front.addr().to_string();
    let url = |srv: &Server| format!("{}/image?name={host}/tls/behind:v1", srv.base);
    // Loopback registries are tried over TLS only with the flag; without it plain HTTP to
    // a TLS port fails, and the certificate could not be verified anyway.
    let srv = start(&[&host], |_| {}).await;
    let (status, _, body) = get(&url(&srv), &[]).await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    let srv = start(&[&host], |c| {
        c.insecure_registries = vec![ferry_server::HostPort::parse(&host).unwrap()]
    })
    .await;
    let (status, _, body) = get(&url(&srv), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(front.handshakes() > 0);
}

/// A remembered resolution whose manifests left the cache (evicted) is resolved again:
/// the archive needs the manifests' bytes, and no job fetches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_whose_cached_blobs_were_evicted_is_served_whole_again() {
    let img = sized_image(28, 2, 20_000);
    let fake = fake_with("evicted/img", &img).await;
    let srv = start(&[&fake.host()], |_| {}).await;
    let url = format!("{}/image?name={}/evicted/img:v1", srv.base, fake.host());
    let (status, _, first) = get(&url, &[]).await;
    assert_eq!(status, 200);
    // Wait until the job has let go of its leases, then empty the cache as eviction would.
    for _ in 0..100 {
        if srv.state.jobs_in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let blobs = srv.state.store().root().join("blobs").join("sha256");
    for e in std::fs::read_dir(&blobs).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    srv.state.store().rescan().unwrap();
    let resp = http().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let again = resp
        .bytes()
        .await
        .expect("the whole archive, not a cut body");
    assert!(again == first, "the archive differs after eviction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn platforms_and_the_page_reuse_the_tag_answer_within_the_ttl() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let plats = [
        Platform::new("linux", "amd64", None),
        Platform::new("linux", "arm64", Some("v8")),
    ];
    let idx = random_index(31, &plats, false);
    fake.push_index("ttl/arch", "v1", &idx);
    let manifest_gets = || {
        fake.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.contains("/manifests/"))
            .count()
    };
    let srv = start(&[&fake.host()], |_| {}).await;
    let name = format!("{}/ttl/arch:v1", fake.host());
    for _ in 0..3 {
        let (status, _, body) = get(&format!("{}/platforms?name={name}", srv.base), &[]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    let (status, _, body) = get(&format!("{}/?name={name}", srv.base), &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(manifest_gets(), 1, "{:?}", fake.requests());
    // With a TTL that has passed, each question goes upstream again.
    let srv = start(&[&fake.host()], |c| c.tag_ttl = Duration::ZERO).await;
    let before = manifest_gets();
    for _ in 0..2 {
        let (status, _, _) = get(&format!("{}/platforms?name={name}", srv.base), &[]).await;
        assert_eq!(status, 200);
    }
    assert_eq!(manifest_gets() - before, 2);
}
