//! One suite every `ImageDestination` runs: what the engine relies on, checked against the
//! registry destination on the fake registry and on a real docker-registry.

use std::io::{self, Read, Write};
use std::sync::Arc;

use ferry_copy::{
    CopyError, ImageDestination, MountHints, OpenBlob, RegistryDestination, SendBody,
};
use ferry_core::{media, Descriptor, Digest};
use ferry_registry::{Client, ClientOptions};
use ferry_testkit::fake::{FakeAuth, FakeRegistry};
use ferry_testkit::real::{RealRegistry, RegistryAuth};

fn source(bytes: Vec<u8>) -> Arc<dyn OpenBlob> {
    let bytes = Arc::new(bytes);
    Arc::new(move || -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::Cursor::new(bytes.as_ref().clone())))
    })
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x2545_f491u32 ^ u32::from(seed);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn gz(d: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(d).unwrap();
    e.finish().unwrap()
}

fn noop(_: u64) {}

/// The contract of `ImageDestination`, for `dest` (fresh, empty).
async fn suite<D: ImageDestination>(dest: D) {
    // A blob sent byte for byte is then held, under its digest.
    let tar = data(300_000, 1);
    let blob = gz(&tar);
    let d = Descriptor::new(
        media::OCI_LAYER_GZIP,
        Digest::sha256_of(&blob),
        blob.len() as u64,
    );
    assert!(!dest.has_blob(&d.digest).await.unwrap());
    let body = Arc::new(SendBody::verbatim(
        d.clone(),
        Some(Digest::sha256_of(&tar)),
        source(blob.clone()),
    ));
    let got = dest.put_blob(body, &noop).await.unwrap();
    assert_eq!(got, (d.digest.clone(), d.size));
    assert!(dest.has_blob(&d.digest).await.unwrap());

    // A blob that fails its check is refused and not held under its digest.
    let mut bad = blob.clone();
    bad[blob.len() - 10] ^= 1;
    let other = gz(&data(200_000, 2));
    let od = Descriptor::new(
        media::OCI_LAYER_GZIP,
        Digest::sha256_of(&other),
        other.len() as u64,
    );
    let mut bad = bad[..other.len().min(bad.len())].to_vec();
    bad.resize(other.len(), 0);
    let body = Arc::new(SendBody::verbatim(od.clone(), None, source(bad)));
    let refused = dest.put_blob(body.clone(), &noop).await;
    assert!(refused.is_err(), "a blob failing its check was accepted");
    assert!(body.failure().is_some());
    assert!(!dest.has_blob(&od.digest).await.unwrap());

    // A layer compressed on the way is held under the digest the pass computed.
    let body = Arc::new(SendBody::gzip(
        Digest::sha256_of(&tar),
        Some(Digest::sha256_of(&tar)),
        source(tar.clone()),
    ));
    let (digest, size) = dest.put_blob(body.clone(), &noop).await.unwrap();
    assert_eq!(body.finished(), Some((digest.clone(), size)));
    assert!(dest.has_blob(&digest).await.unwrap());

    // A manifest is stored by tag and answers with the digest of its bytes.
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cd = Descriptor::new(
        media::OCI_CONFIG,
        Digest::sha256_of(config),
        config.len() as u64,
    );
    // Sent as it is, it is read once: its digest and size are known without a pass.
    let opens = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = {
        let (opens, inner) = (opens.clone(), source(config.to_vec()));
        Arc::new(move || {
            opens.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            inner.open()
        })
    };
    let body = Arc::new(SendBody::verbatim(cd.clone(), None, counted));
    dest.put_blob(body, &noop).await.unwrap();
    assert_eq!(opens.load(std::sync::atomic::Ordering::SeqCst), 1);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
        "config": cd, "layers": [d],
    }))
    .unwrap();
    let stored = dest
        .put_manifest("v1", media::OCI_MANIFEST, manifest.clone())
        .await
        .unwrap();
    assert_eq!(stored, Digest::sha256_of(&manifest));
}

fn registry_dest(host: &str, repo: &str) -> RegistryDestination {
    RegistryDestination {
        client: Client::new(ClientOptions::default()).unwrap(),
        host: host.to_string(),
        repo: repo.to_string(),
        chunk_size: 128 * 1024,
        hints: MountHints::default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_destination_on_the_fake_keeps_the_contract() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    suite(registry_dest(&reg.host(), "suite/app")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_destination_on_a_real_registry_keeps_the_contract() {
    let Some(reg) = RealRegistry::start(RegistryAuth::Anonymous) else {
        return;
    };
    suite(registry_dest(&reg.host, "suite/app")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_destination_mounts_from_a_repository_it_knows_holds_the_blob() {
    let reg = FakeRegistry::start(FakeAuth::None).await;
    let first = registry_dest(&reg.host(), "one/app");
    let blob = data(1000, 3);
    let d = Descriptor::new(
        media::OCI_LAYER_GZIP,
        Digest::sha256_of(&blob),
        blob.len() as u64,
    );
    let body = Arc::new(SendBody::verbatim(d.clone(), None, source(blob)));
    first.put_blob(body, &noop).await.unwrap();
    let second = RegistryDestination {
        hints: first.hints.clone(),
        ..registry_dest(&reg.host(), "two/app")
    };
    assert!(!second.has_blob(&d.digest).await.unwrap());
    let sent = reg.upload_bytes();
    assert!(second.reuse_blob(&d.digest).await.unwrap());
    assert_eq!(reg.upload_bytes(), sent, "no byte sent");
    assert_eq!(reg.mounts(), 1);
    assert!(second.has_blob(&d.digest).await.unwrap());
    // Nothing known: nothing to mount from.
    let third = registry_dest(&reg.host(), "three/app");
    let r: Result<bool, CopyError> = third.reuse_blob(&d.digest).await;
    assert!(!r.unwrap());
}
