//! The registry client's write side: blob uploads (monolithic, chunked, unknown length,
//! mounted), manifest PUT and DELETE against a real docker-registry, and resume, restart,
//! fallback and retry budgets against the fake registry's injected faults.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ferry_core::{Descriptor, Digest};
use ferry_registry::{
    ByteStream, BytesBody, Client, ClientOptions, Credential, FileBody, Pushed, RegistryError,
    UploadBody, UploadOptions,
};
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault};
use ferry_testkit::image::sized_image;
use ferry_testkit::real::{RealRegistry, RegistryAuth};

const USER: &str = "pusher";
const PASS: &str = "push-s3cret";

fn client() -> Client {
    Client::new(fast_opts()).unwrap()
}

fn fast_opts() -> ClientOptions {
    ClientOptions {
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        max_attempts: 4,
        ..ClientOptions::default()
    }
}

fn client_with_credentials(host: &str) -> Client {
    let mut opts = fast_opts();
    opts.credentials.insert(
        host.to_string(),
        Credential::Basic {
            username: USER.into(),
            password: PASS.into(),
        },
    );
    Client::new(opts).unwrap()
}

/// Deterministic bytes that do not repeat within a chunk.
fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn opts(chunk_size: u64) -> UploadOptions {
    UploadOptions {
        chunk_size,
        mount_from: Vec::new(),
    }
}

/// The blob `digest` of `repo` as the registry serves it.
async fn fetch(client: &Client, host: &str, repo: &str, digest: &Digest, size: u64) -> Vec<u8> {
    struct Buf(Vec<u8>);
    impl ferry_core::ResumableWrite for Buf {
        fn offset(&self) -> u64 {
            self.0.len() as u64
        }
        fn append(&mut self, b: &[u8]) -> std::io::Result<()> {
            self.0.extend_from_slice(b);
            Ok(())
        }
        fn restart(&mut self) -> std::io::Result<()> {
            self.0.clear();
            Ok(())
        }
    }
    let mut out = Buf(Vec::new());
    let desc = Descriptor::new("application/octet-stream", digest.clone(), size);
    client
        .blob_into(host, repo, &desc, &mut out, &|_| {})
        .await
        .unwrap();
    out.0
}

/// A body of unknown length and digest, as a layer compressed on the way is: both are known
/// only once a stream was read to its end.
struct Streamed {
    bytes: Bytes,
    read_to_end: Arc<AtomicBool>,
}

impl Streamed {
    fn new(bytes: Vec<u8>) -> Streamed {
        Streamed {
            bytes: Bytes::from(bytes),
            read_to_end: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl UploadBody for Streamed {
    fn size(&self) -> Option<u64> {
        None
    }
    fn known_digest(&self) -> Option<Digest> {
        None
    }
    fn open(&self, offset: u64) -> std::io::Result<ByteStream> {
        let rest = self.bytes.slice(offset as usize..);
        let pieces: Vec<std::io::Result<Bytes>> = (0..rest.len())
            .step_by(10_000)
            .map(|i| Ok(rest.slice(i..rest.len().min(i + 10_000))))
            .collect();
        let flag = self.read_to_end.clone();
        let end = futures_util::stream::once(async move {
            flag.store(true, Ordering::SeqCst);
            Ok(Bytes::new())
        });
        Ok(Box::pin(futures_util::StreamExt::chain(
            futures_util::stream::iter(pieces),
            end,
        )))
    }
    fn finished(&self) -> Option<(Digest, u64)> {
        self.read_to_end
            .load(Ordering::SeqCst)
            .then(|| (Digest::sha256_of(&self.bytes), self.bytes.len() as u64))
    }
}

/// Requests in the real registry's access log whose line holds `method` and `path_part`.
fn logged(reg: &RealRegistry, method: &str, path_part: &str) -> usize {
    reg.log()
        .lines()
        .filter(|l| l.contains(&format!("\"{method} ")) && l.contains(path_part))
        .count()
}

#[tokio::test]
async fn a_small_blob_goes_in_one_put_to_a_real_registry() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let c = client();
    let bytes = data(100_000, 1);
    let body = BytesBody::new(bytes.clone());
    let (digest, size, pushed) = c
        .push_blob(&reg.host, "mono/app", &body, &opts(1 << 20), &|_| {})
        .await
        .unwrap();
    assert_eq!(digest, Digest::sha256_of(&bytes));
    assert_eq!(size, 100_000);
    assert_eq!(pushed, Pushed::Uploaded { sent: 100_000 });
    assert_eq!(
        c.blob_exists(&reg.host, "mono/app", &digest).await.unwrap(),
        Some(100_000)
    );
    assert_eq!(fetch(&c, &reg.host, "mono/app", &digest, size).await, bytes);
    assert_eq!(logged(&reg, "PATCH", "/v2/mono/app/blobs/uploads/"), 0);
}

#[tokio::test]
async fn a_file_region_goes_in_several_chunks_to_a_real_registry() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let c = client();
    let blob = data(1_000_000, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("archive.tar");
    // The blob sits inside a bigger file, as a layer inside an uncompressed tar does.
    let mut file = data(777, 3);
    file.extend_from_slice(&blob);
    file.extend_from_slice(&data(1234, 4));
    std::fs::write(&path, &file).unwrap();
    let digest = Digest::sha256_of(&blob);
    let body = FileBody::new(&path, 777, blob.len() as u64, digest.clone());
    let seen = std::sync::Mutex::new(Vec::new());
    let (d, size, pushed) = c
        .push_blob(&reg.host, "chunks/app", &body, &opts(300_000), &|n| {
            seen.lock().unwrap().push(n)
        })
        .await
        .unwrap();
    assert_eq!((d, size), (digest.clone(), 1_000_000));
    assert_eq!(pushed, Pushed::Uploaded { sent: 1_000_000 });
    assert_eq!(
        fetch(&c, &reg.host, "chunks/app", &digest, size).await,
        blob
    );
    // 300 000 + 300 000 + 300 000 + 100 000.
    assert_eq!(logged(&reg, "PATCH", "/v2/chunks/app/blobs/uploads/"), 4);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.last(), Some(&1_000_000));
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
}

#[tokio::test]
async fn a_body_of_unknown_length_uploads_to_a_real_registry() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let c = client();
    let bytes = data(650_000, 5);
    let body = Streamed::new(bytes.clone());
    let (digest, size, pushed) = c
        .push_blob(&reg.host, "stream/app", &body, &opts(200_000), &|_| {})
        .await
        .unwrap();
    assert_eq!(digest, Digest::sha256_of(&bytes));
    assert_eq!(size, 650_000);
    assert_eq!(pushed, Pushed::Uploaded { sent: 650_000 });
    assert_eq!(
        fetch(&c, &reg.host, "stream/app", &digest, size).await,
        bytes
    );
    assert_eq!(logged(&reg, "PATCH", "/v2/stream/app/blobs/uploads/"), 4);
}

#[tokio::test]
async fn a_blob_in_another_repository_is_mounted_without_sending_it() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let c = client();
    let bytes = data(300_000, 6);
    let body = BytesBody::new(bytes.clone());
    c.push_blob(&reg.host, "team/first", &body, &opts(1 << 20), &|_| {})
        .await
        .unwrap();
    let uploads_before = logged(&reg, "PUT", "/v2/team/second/blobs/uploads/");
    let mount = UploadOptions {
        chunk_size: 1 << 20,
        mount_from: vec!["team/first".into()],
    };
    let (digest, size, pushed) = c
        .push_blob(&reg.host, "team/second", &body, &mount, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        pushed,
        Pushed::Mounted {
            from: "team/first".into()
        }
    );
    assert_eq!(size, 300_000);
    assert_eq!(uploads_before, 0);
    assert_eq!(logged(&reg, "PUT", "/v2/team/second/blobs/uploads/"), 0);
    assert_eq!(logged(&reg, "PATCH", "/v2/team/second/blobs/uploads/"), 0);
    assert_eq!(
        fetch(&c, &reg.host, "team/second", &digest, size).await,
        bytes
    );
}

/// Push every blob of a small image and its manifest as `repo:tag`.
async fn push_image(
    c: &Client,
    host: &str,
    repo: &str,
    tag: &str,
) -> ferry_testkit::image::TestImage {
    let img = sized_image(7, 2, 20_000);
    for blob in img.blobs() {
        let body = BytesBody::new(blob.bytes.clone());
        c.push_blob(host, repo, &body, &opts(1 << 20), &|_| {})
            .await
            .unwrap();
    }
    let d = c
        .put_manifest(
            host,
            repo,
            tag,
            &img.manifest_media_type,
            img.manifest.clone(),
        )
        .await
        .unwrap();
    assert_eq!(d, img.manifest_digest);
    img
}

#[tokio::test]
async fn a_pushed_manifest_reads_back_the_same_by_tag_and_digest() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let c = client();
    let img = push_image(&c, &reg.host, "put/app", "v1").await;
    let by_tag = c
        .manifest_at(&reg.host, "put/app", "v1", None)
        .await
        .unwrap();
    let by_digest = c
        .manifest_at(&reg.host, "put/app", &img.manifest_digest.to_string(), None)
        .await
        .unwrap();
    assert_eq!(by_tag.bytes, img.manifest.to_vec());
    assert_eq!(by_digest.bytes, img.manifest.to_vec());
    assert_eq!(by_tag.digest, img.manifest_digest);
    assert_eq!(by_tag.media_type, img.manifest_media_type);
    // By digest too.
    let d = c
        .put_manifest(
            &reg.host,
            "put/app",
            &img.manifest_digest.to_string(),
            &img.manifest_media_type,
            img.manifest.clone(),
        )
        .await
        .unwrap();
    assert_eq!(d, img.manifest_digest);
}

#[tokio::test]
async fn a_manifest_naming_a_missing_blob_is_refused_in_words() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let c = client();
    let img = sized_image(8, 1, 1000);
    let err = c
        .put_manifest(
            &reg.host,
            "missing/app",
            "v1",
            &img.manifest_media_type,
            img.manifest.clone(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "{}/missing/app refused manifest v1: it names a blob the repository does not hold; push the blobs first: PUT http://{}/v2/missing/app/manifests/v1 returned 400 (MANIFEST_BLOB_UNKNOWN",
            reg.host, reg.host
        )),
        "{err}"
    );
}

#[tokio::test]
async fn token_auth_grants_push_to_a_real_registry() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Token {
        user: USER.into(),
        pass: PASS.into(),
    }) else {
        return;
    };
    let c = client_with_credentials(&reg.host);
    let img = push_image(&c, &reg.host, "tok/app", "v1").await;
    let m = c
        .manifest_at(&reg.host, "tok/app", "v1", None)
        .await
        .unwrap();
    assert_eq!(m.digest, img.manifest_digest);
    // Mount needs a token for two repositories at once.
    let body = BytesBody::new(img.layers[0].bytes.clone());
    let mount = UploadOptions {
        chunk_size: 1 << 20,
        mount_from: vec!["tok/app".into()],
    };
    let (_, _, pushed) = c
        .push_blob(&reg.host, "tok/other", &body, &mount, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        pushed,
        Pushed::Mounted {
            from: "tok/app".into()
        }
    );
}

#[tokio::test]
async fn delete_removes_a_manifest_where_the_registry_allows_it() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let c = client();
    let img = push_image(&c, &reg.host, "del/app", "v1").await;
    c.delete_manifest(&reg.host, "del/app", &img.manifest_digest)
        .await
        .unwrap();
    let err = c
        .manifest_at(&reg.host, "del/app", &img.manifest_digest.to_string(), None)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
}

#[tokio::test]
async fn delete_where_the_registry_forbids_it_says_so() {
    let Some(reg) = RealRegistry::start_with(RegistryAuth::Anonymous, false) else {
        return;
    };
    let c = client();
    let img = push_image(&c, &reg.host, "keep/app", "v1").await;
    let err = c
        .delete_manifest(&reg.host, "keep/app", &img.manifest_digest)
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    assert!(
        err.to_string().starts_with(&format!(
            "{h} does not allow deleting manifests (docker-registry allows it with REGISTRY_STORAGE_DELETE_ENABLED=true): DELETE http://{h}/v2/keep/app/manifests/{d} returned 405",
            h = reg.host,
            d = img.manifest_digest
        )),
        "{err}"
    );
    assert!(c
        .manifest_at(&reg.host, "keep/app", "v1", None)
        .await
        .is_ok());
}

/// A TCP forwarder to `upstream` that cuts the first connection to carry more than `cut`
/// bytes from the client (every such connection unless `once`): a connection dropped in
/// the middle of an upload.
async fn cutting_forwarder(upstream: String, cut: u64, once: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut buf = vec![0u8; 16 * 1024];
                let mut total = 0u64;
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if !(once && done.load(Ordering::SeqCst)) && total + n as u64 > cut {
                        done.store(true, Ordering::SeqCst);
                        let keep = (cut - total) as usize;
                        let _ = sw.write_all(&buf[..keep]).await;
                        // Both directions go: the client sees its connection drop.
                        down.abort();
                        return;
                    }
                    total += n as u64;
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = sw.shutdown().await;
                let _ = down.await;
            });
        }
    });
    addr.to_string()
}

#[tokio::test]
async fn an_upload_cut_by_a_dropped_connection_completes_on_a_real_registry() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let host = cutting_forwarder(reg.host.clone(), 250_000, true).await;
    let c = client();
    let blob = data(1_000_000, 30);
    let body = BytesBody::new(blob.clone());
    let (digest, size, pushed) = c
        .push_blob(&host, "dropped/app", &body, &opts(400_000), &|_| {})
        .await
        .unwrap();
    assert_eq!(size, 1_000_000);
    let Pushed::Uploaded { sent } = pushed else {
        panic!("{pushed:?}")
    };
    assert!(
        sent > 1_000_000,
        "the cut chunk was sent again in part: {sent}"
    );
    assert_eq!(
        fetch(&c, &reg.host, "dropped/app", &digest, size).await,
        blob
    );
    // docker-registry keeps the bytes of the cut chunk but not a session state that agrees
    // ("upload resumed at wrong offset": BLOB_UPLOAD_INVALID): the blob starts over.
    assert_eq!(logged(&reg, "POST", "/v2/dropped/app/blobs/uploads/"), 2);
}

/// Every connection dropped after ~600 kB: docker-registry refuses the session after each
/// cut (BLOB_UPLOAD_INVALID), the blob starts over, and the same 500 kB are confirmed again
/// each time. Bytes confirmed again are not progress: the budget runs out instead of the
/// upload going round for ever.
#[tokio::test]
async fn bytes_confirmed_again_after_a_restart_do_not_renew_the_budget() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    let host = cutting_forwarder(reg.host.clone(), 600_000, false).await;
    let c = client();
    let body = BytesBody::new(data(1_000_000, 31));
    let chunks = opts(250_000);
    let pushing = c.push_blob(&host, "loop/app", &body, &chunks, &|_| {});
    let err = tokio::time::timeout(Duration::from_secs(10), pushing)
        .await
        .expect("the upload gives up instead of going round for ever")
        .unwrap_err();
    assert!(err.has_code("BLOB_UPLOAD_INVALID"), "{err}");
    // max_attempts is 4: cut, refused, (start over) cut, refused.
    assert_eq!(logged(&reg, "POST", "/v2/loop/app/blobs/uploads/"), 2);
}

// ---- Against the fake registry's injected faults. ----

fn uploads_to(
    fake: &FakeRegistry,
    method: &str,
    repo: &str,
) -> Vec<ferry_testkit::fake::LoggedRequest> {
    fake.requests()
        .into_iter()
        .filter(|r| r.method == method && r.path.starts_with(&format!("/v2/{repo}/blobs/uploads/")))
        .collect()
}

#[tokio::test]
async fn an_upload_cut_mid_blob_resumes_from_the_registry_offset() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    let blob = data(2_000_000, 10);
    let body = BytesBody::new(blob.clone());
    fake.add_fault(Fault::CutUpload {
        after: 300_000,
        times: 1,
    });
    let (digest, size, pushed) = c
        .push_blob(&fake.host(), "cut/app", &body, &opts(1_000_000), &|_| {})
        .await
        .unwrap();
    assert_eq!((size, &digest), (2_000_000, &Digest::sha256_of(&blob)));
    assert_eq!(fake.blob("cut/app", &digest).unwrap(), blob);
    // The registry kept the 300 000 bytes before the cut and got each other byte once.
    assert_eq!(fake.upload_bytes(), 2_000_000);
    let Pushed::Uploaded { sent } = pushed else {
        panic!("{pushed:?}")
    };
    // What was in flight when the chunk was cut is sent again, not the whole blob.
    assert!(
        (2_000_000..3_000_000).contains(&sent),
        "sent {sent} bytes for a 2 000 000-byte blob"
    );
    assert_eq!(uploads_to(&fake, "POST", "cut/app").len(), 1);
    assert_eq!(
        uploads_to(&fake, "GET", "cut/app").len(),
        1,
        "one status query"
    );
    let ranges: Vec<Option<String>> = uploads_to(&fake, "PATCH", "cut/app")
        .into_iter()
        .map(|r| r.content_range)
        .collect();
    assert_eq!(
        ranges,
        vec![
            Some("0-999999".to_string()),
            Some("300000-1299999".to_string()),
            Some("1300000-1999999".to_string()),
        ]
    );
}

#[tokio::test]
async fn a_forgotten_upload_session_starts_over_from_a_new_one() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    let blob = data(500_000, 11);
    let body = BytesBody::new(blob.clone());
    fake.add_fault(Fault::ForgetUploads { times: 1 });
    let (digest, _, _) = c
        .push_blob(&fake.host(), "forgot/app", &body, &opts(200_000), &|_| {})
        .await
        .unwrap();
    assert_eq!(fake.blob("forgot/app", &digest).unwrap(), blob);
    assert_eq!(uploads_to(&fake, "POST", "forgot/app").len(), 2);
}

#[tokio::test]
async fn a_registry_without_the_status_get_gets_the_blob_started_over() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    fake.add_fault(Fault::NoUploadStatus);
    fake.add_fault(Fault::CutUpload {
        after: 50_000,
        times: 1,
    });
    let c = client();
    let blob = data(400_000, 33);
    let body = BytesBody::new(blob.clone());
    let (digest, _, _) = c
        .push_blob(&fake.host(), "nostatus/app", &body, &opts(100_000), &|_| {})
        .await
        .unwrap();
    assert_eq!(fake.blob("nostatus/app", &digest).unwrap(), blob);
    assert_eq!(uploads_to(&fake, "GET", "nostatus/app").len(), 1);
    assert_eq!(uploads_to(&fake, "POST", "nostatus/app").len(), 2);
}

#[tokio::test]
async fn upload_unknown_is_not_not_found() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = Client::new(ClientOptions {
        max_attempts: 2,
        ..fast_opts()
    })
    .unwrap();
    fake.add_fault(Fault::ForgetUploads { times: 100 });
    let body = BytesBody::new(data(500_000, 12));
    let err = c
        .push_blob(&fake.host(), "gone/app", &body, &opts(200_000), &|_| {})
        .await
        .unwrap_err();
    assert!(err.is_upload_unknown(), "{err}");
    assert!(!err.is_not_found(), "{err}");
    // Each attempt opened a session that was then forgotten: bounded by the budget.
    assert_eq!(uploads_to(&fake, "POST", "gone/app").len(), 2);
}

#[tokio::test]
async fn a_registry_refusing_chunks_gets_the_blob_in_one_put() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    fake.add_fault(Fault::RejectPatch);
    let blob = data(500_000, 13);
    let body = BytesBody::new(blob.clone());
    let (digest, _, pushed) = c
        .push_blob(&fake.host(), "mono/app", &body, &opts(100_000), &|_| {})
        .await
        .unwrap();
    assert_eq!(fake.blob("mono/app", &digest).unwrap(), blob);
    let Pushed::Uploaded { sent } = pushed else {
        panic!("{pushed:?}")
    };
    assert!(sent <= 500_000 + 100_000, "{sent}");
    assert_eq!(uploads_to(&fake, "PATCH", "mono/app").len(), 1);
    assert_eq!(uploads_to(&fake, "PUT", "mono/app").len(), 1);
    assert_eq!(
        fake.open_uploads(),
        0,
        "the session refusing PATCH is cancelled"
    );

    // A body of unknown digest is read once to learn it, then sent whole.
    let blob = data(300_000, 14);
    let body = Streamed::new(blob.clone());
    let (digest, size, _) = c
        .push_blob(
            &fake.host(),
            "mono/streamed",
            &body,
            &opts(100_000),
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!((digest.clone(), size), (Digest::sha256_of(&blob), 300_000));
    assert_eq!(fake.blob("mono/streamed", &digest).unwrap(), blob);
}

#[tokio::test]
async fn a_whole_blob_put_cut_short_starts_again_on_a_new_session() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    fake.add_fault(Fault::RejectPatch);
    fake.add_fault(Fault::CutUpload {
        after: 100_000,
        times: 1,
    });
    let blob = data(500_000, 24);
    let body = BytesBody::new(blob.clone());
    let (digest, _, _) = c
        .push_blob(&fake.host(), "recut/app", &body, &opts(200_000), &|_| {})
        .await
        .unwrap();
    assert_eq!(fake.blob("recut/app", &digest).unwrap(), blob);
    // The cut PUT's 100 000 bytes, then the whole blob on a fresh session.
    assert_eq!(fake.upload_bytes(), 600_000);
    assert_eq!(uploads_to(&fake, "POST", "recut/app").len(), 3);
}

#[tokio::test]
async fn an_upload_the_registry_never_answers_times_out_within_the_budget() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = Client::new(ClientOptions {
        max_attempts: 2,
        request_timeout: Duration::from_millis(300),
        stall_timeout: Duration::from_millis(300),
        ..fast_opts()
    })
    .unwrap();
    fake.add_fault(Fault::HangUploads);
    let body = BytesBody::new(data(100_000, 25));
    let started = std::time::Instant::now();
    let err = c
        .push_blob(&fake.host(), "hang/app", &body, &opts(1 << 20), &|_| {})
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        matches!(
            err,
            RegistryError::Timeout { .. } | RegistryError::SendStalled { .. }
        ),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        uploads_to(&fake, "PUT", "hang/app").len(),
        0,
        "never answered"
    );
}

/// hyper stops polling a body once its `Content-Length` is written, so the end of the stream
/// is never seen: a body sent whole must still count as sent, and an answer that never comes
/// is a timeout waiting for it, not a stall of the body.
#[tokio::test]
async fn a_body_sent_whole_then_unanswered_is_a_timeout_not_a_stall() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = Client::new(ClientOptions {
        max_attempts: 1,
        request_timeout: Duration::from_millis(300),
        stall_timeout: Duration::from_millis(200),
        ..fast_opts()
    })
    .unwrap();
    fake.add_fault(Fault::HangUploads);
    // Small enough to fit in the socket buffers even though the fake never reads it.
    let body = BytesBody::new(data(2_000, 27));
    let err = c
        .push_blob(&fake.host(), "hang/small", &body, &opts(1 << 20), &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, RegistryError::Timeout { .. }), "{err}");
}

/// A registry may hash or copy a whole blob before it answers the commit: a big blob's
/// commit is given longer than the request deadline, not timed out and committed again.
#[tokio::test]
async fn a_big_blob_commit_is_given_time_to_answer() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = Client::new(ClientOptions {
        request_timeout: Duration::from_millis(500),
        ..fast_opts()
    })
    .unwrap();
    fake.add_fault(Fault::SlowCommit { ms: 700 });
    let blob = data(16 << 20, 29);
    let body = BytesBody::new(blob.clone());
    let (digest, _, _) = c
        .push_blob(&fake.host(), "big/app", &body, &opts(4 << 20), &|_| {})
        .await
        .unwrap();
    assert_eq!(digest, Digest::sha256_of(&blob));
    assert_eq!(
        uploads_to(&fake, "PUT", "big/app").len(),
        1,
        "one commit, waited for"
    );
    // The same blob in one PUT: the whole-blob commit is waited for too.
    c.push_blob(&fake.host(), "big/mono", &body, &opts(32 << 20), &|_| {})
        .await
        .unwrap();
    assert_eq!(
        uploads_to(&fake, "PUT", "big/mono").len(),
        1,
        "one whole-blob PUT, waited for"
    );
}

#[tokio::test]
async fn chunks_are_sent_again_whole_when_a_token_expires_midway() {
    let fake = FakeRegistry::start(bearer(USER)).await;
    fake.add_fault(Fault::ExpireTokensAfter { requests: 2 });
    let c = client_with_credentials(&fake.host());
    let blob = data(400_000, 26);
    let body = BytesBody::new(blob.clone());
    let (digest, _, pushed) = c
        .push_blob(&fake.host(), "expire/app", &body, &opts(100_000), &|_| {})
        .await
        .unwrap();
    assert_eq!(fake.blob("expire/app", &digest).unwrap(), blob);
    assert_eq!(fake.upload_bytes(), 400_000);
    let refused = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.status == 401)
        .count();
    assert!(refused >= 1, "a token expired during the chunks");
    let Pushed::Uploaded { sent } = pushed else {
        panic!("{pushed:?}")
    };
    assert!(sent >= 400_000, "{sent}");
}

#[tokio::test]
async fn a_file_shorter_than_declared_is_a_local_error() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("short");
    std::fs::write(&path, data(1000, 27)).unwrap();
    let body = FileBody::new(&path, 0, 5000, Digest::sha256_of(b"x"));
    let err = c
        .push_blob(&fake.host(), "short/app", &body, &opts(2000), &|_| {})
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "reading the data to upload to http://{}/v2/short/app/blobs/uploads/",
            fake.host()
        )) && text.ends_with(&format!(
            "failed: {} ended 4000 bytes early",
            path.display()
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_refused_mount_falls_back_to_an_upload() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    let blob = data(200_000, 15);
    let digest = Digest::sha256_of(&blob);
    fake.put_blob("base/app", digest.clone(), Bytes::from(blob.clone()));
    let mount = UploadOptions {
        chunk_size: 1 << 20,
        mount_from: vec!["nothere/app".into(), "base/app".into()],
    };
    let body = BytesBody::new(blob.clone());
    let (_, _, pushed) = c
        .push_blob(&fake.host(), "one/app", &body, &mount, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        pushed,
        Pushed::Mounted {
            from: "base/app".into()
        }
    );
    assert_eq!((fake.mounts(), fake.upload_bytes()), (1, 0));

    fake.add_fault(Fault::RefuseMounts);
    let (_, _, pushed) = c
        .push_blob(&fake.host(), "two/app", &body, &mount, &|_| {})
        .await
        .unwrap();
    assert_eq!(pushed, Pushed::Uploaded { sent: 200_000 });
    assert_eq!((fake.mounts(), fake.upload_bytes()), (1, 200_000));
    assert_eq!(fake.blob("two/app", &digest).unwrap(), blob);
    // The session the last refused mount opened carries the upload: no other is opened,
    // and those not used are cancelled rather than left to expire.
    assert_eq!(uploads_to(&fake, "POST", "two/app").len(), 2);
    assert_eq!(fake.open_uploads(), 0);
}

#[tokio::test]
async fn a_blob_that_does_not_match_its_digest_is_refused_in_words() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, data(50_000, 16)).unwrap();
    let claimed = Digest::sha256_of(b"something else");
    let body = FileBody::new(&path, 0, 50_000, claimed.clone());
    let err = c
        .push_blob(&fake.host(), "bad/app", &body, &opts(1 << 20), &|_| {})
        .await
        .unwrap_err();
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "{}/bad/app received blob {claimed} with other content than its digest: the bytes were changed or cut on the way: PUT http://{}/v2/bad/app/blobs/uploads/",
            fake.host(),
            fake.host()
        )),
        "{text}"
    );
    assert!(
        text.ends_with(
            "?… returned 400 (DIGEST_INVALID: provided digest did not match uploaded content)"
        ),
        "{text}"
    );
    assert!(fake.blob("bad/app", &claimed).is_none());
}

#[tokio::test]
async fn an_upload_making_no_progress_gives_up_within_the_budget() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    fake.add_fault(Fault::CutUpload {
        after: 0,
        times: 1000,
    });
    let body = BytesBody::new(data(400_000, 17));
    let err = c
        .push_blob(&fake.host(), "stuck/app", &body, &opts(100_000), &|_| {})
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // max_attempts is 4: four PATCHes at offset 0, then the error.
    let patches = uploads_to(&fake, "PATCH", "stuck/app");
    assert_eq!(patches.len(), 4, "{patches:?}");
    assert!(patches
        .iter()
        .all(|p| p.content_range.as_deref() == Some("0-99999")));
}

#[tokio::test]
async fn a_cut_that_keeps_bytes_renews_the_budget() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    // Six cuts in a row, each keeping bytes: more failures than the budget of four, but
    // every one moves the upload on.
    fake.add_fault(Fault::CutUpload {
        after: 50_000,
        times: 6,
    });
    let blob = data(400_000, 18);
    let body = BytesBody::new(blob.clone());
    let (digest, _, _) = c
        .push_blob(&fake.host(), "slow/app", &body, &opts(100_000), &|_| {})
        .await
        .unwrap();
    assert_eq!(fake.blob("slow/app", &digest).unwrap(), blob);
    assert_eq!(fake.upload_bytes(), 400_000);
}

#[tokio::test]
async fn manifests_put_to_the_fake_check_their_blobs() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    let img = sized_image(19, 1, 1000);
    let err = c
        .put_manifest(
            &fake.host(),
            "m/app",
            "v1",
            &img.manifest_media_type,
            img.manifest.clone(),
        )
        .await
        .unwrap_err();
    assert!(err.has_code("MANIFEST_BLOB_UNKNOWN"), "{err}");
    let img = push_image(&c, &fake.host(), "m/app", "v1").await;
    assert_eq!(
        fake.manifest("m/app", "v1").unwrap(),
        (img.manifest_media_type.clone(), img.manifest.clone())
    );
    let err = c
        .delete_manifest(&fake.host(), "m/app", &img.manifest_digest)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not allow deleting manifests"),
        "{err}"
    );
    fake.enable_deletes();
    c.delete_manifest(&fake.host(), "m/app", &img.manifest_digest)
        .await
        .unwrap();
    assert!(fake.manifest("m/app", "v1").is_none());
}

#[tokio::test]
async fn a_body_of_unknown_length_resumes_after_a_cut() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    fake.add_fault(Fault::CutUpload {
        after: 123_456,
        times: 1,
    });
    let blob = data(700_000, 20);
    let body = Streamed::new(blob.clone());
    let (digest, size, _) = c
        .push_blob(
            &fake.host(),
            "cutstream/app",
            &body,
            &opts(300_000),
            &|_| {},
        )
        .await
        .unwrap();
    assert_eq!((digest.clone(), size), (Digest::sha256_of(&blob), 700_000));
    assert_eq!(fake.blob("cutstream/app", &digest).unwrap(), blob);
    assert_eq!(fake.upload_bytes(), 700_000);
    assert_eq!(uploads_to(&fake, "POST", "cutstream/app").len(), 1);
    // Streamed chunks carry no Content-Range, as docker sends them.
    assert!(uploads_to(&fake, "PATCH", "cutstream/app")
        .iter()
        .all(|r| r.content_range.is_none()));
}

/// distribution answers `Range: 0-0` for a session holding one byte as for an empty one:
/// after a chunk of one byte it means the byte arrived, and it is not sent again.
#[tokio::test]
async fn a_one_byte_chunk_answered_0_0_is_not_sent_again() {
    let fake = FakeRegistry::start(FakeAuth::None).await;
    let c = client();
    let body = Streamed::new(vec![42]);
    let (digest, size, _) = c
        .push_blob(&fake.host(), "one/byte", &body, &opts(1 << 20), &|_| {})
        .await
        .unwrap();
    assert_eq!((digest.clone(), size), (Digest::sha256_of(&[42]), 1));
    assert_eq!(fake.blob("one/byte", &digest).unwrap(), vec![42]);
    assert_eq!(fake.upload_bytes(), 1);
}

fn bearer(fake_user: &str) -> FakeAuth {
    FakeAuth::Bearer {
        credentials: Some((fake_user.into(), PASS.into())),
        token_field: ferry_testkit::fake::TokenField::Token,
        expires_in: None,
    }
}

#[tokio::test]
async fn push_with_bearer_tokens_asks_for_push_and_mount_scopes() {
    let fake = FakeRegistry::start(bearer(USER)).await;
    let c = client_with_credentials(&fake.host());
    let blob = data(10_000, 21);
    let body = BytesBody::new(blob.clone());
    c.push_blob(&fake.host(), "a/app", &body, &opts(1 << 20), &|_| {})
        .await
        .unwrap();
    let mount = UploadOptions {
        chunk_size: 1 << 20,
        mount_from: vec!["a/app".into()],
    };
    let (_, _, pushed) = c
        .push_blob(&fake.host(), "b/app", &body, &mount, &|_| {})
        .await
        .unwrap();
    assert_eq!(
        pushed,
        Pushed::Mounted {
            from: "a/app".into()
        }
    );
    let token_queries: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path == "/token")
        .map(|r| r.path)
        .collect();
    assert_eq!(token_queries.len(), 2, "one token per scope set");
}

#[tokio::test]
async fn push_refused_to_accepted_credentials_says_the_account_may_not_push() {
    let fake = FakeRegistry::start(bearer(USER)).await;
    fake.add_fault(Fault::PullOnlyTokens);
    let c = client_with_credentials(&fake.host());
    let body = BytesBody::new(data(10_000, 22));
    let err = c
        .push_blob(&fake.host(), "ro/app", &body, &opts(1 << 20), &|_| {})
        .await
        .unwrap_err();
    assert!(err.is_unauthorized() && !err.is_retryable(), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "the account may not push to ro/app on {h} (POST http://{h}/v2/ro/app/blobs/uploads/ returned 401)",
            h = fake.host()
        )
    );
    let img = sized_image(23, 1, 100);
    let err = c
        .put_manifest(
            &fake.host(),
            "ro/app",
            "v1",
            &img.manifest_media_type,
            img.manifest.clone(),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the account may not push to ro/app"),
        "{err}"
    );
    let err = c
        .delete_manifest(&fake.host(), "ro/app", &img.manifest_digest)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the account may not delete from ro/app"),
        "{err}"
    );
}

/// A server that answers `/v2/` with 200, any write with a 307 to `/moved`, and `/moved`
/// with `moved_status`: a registry redirecting writes.
async fn redirecting_server(moved_status: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let mut parts = line.split(' ');
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let answer = if path == "/v2/" {
                    "HTTP/1.1 200 OK\r\n".to_string()
                } else if path == "/moved" {
                    format!("HTTP/1.1 {moved_status} Moved\r\nDocker-Content-Digest: x\r\n")
                } else if method != "GET" && method != "HEAD" {
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: /moved\r\n".to_string()
                } else {
                    "HTTP/1.1 404 Not Found\r\n".to_string()
                };
                let _ = conn
                    .write_all(
                        format!("{answer}Content-Length: 0\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    )
                    .await;
                let _ = conn.shutdown().await;
            });
        }
    });
    addr.to_string()
}

#[tokio::test]
async fn a_write_the_registry_redirects_is_not_taken_for_done() {
    let host = redirecting_server(202).await;
    let c = client();
    let digest = Digest::sha256_of(b"m");
    let err = c
        .delete_manifest(&host, "moved/app", &digest)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the registry redirected DELETE to http://"),
        "{err}"
    );
    let body = BytesBody::new(data(1_000, 28));
    let err = c
        .push_blob(&host, "moved/app", &body, &opts(1 << 20), &|_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("redirect"), "{err}");
}
