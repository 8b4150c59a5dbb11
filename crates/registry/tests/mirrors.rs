//! Mirrors ([`ferry_registry::mirror`]): reads go to a registry's mirrors first, in order; a
//! failing mirror falls back to the next endpoint and says so; a mirror never gets the
//! registry's credentials.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_core::{Descriptor, Digest};
use ferry_registry::{Client, ClientOptions, Credential, MirrorNotice, MirrorRule};
use ferry_testkit::fake::{FakeAuth, FakeRegistry, Fault};
use ferry_testkit::image::{sized_image, TestImage};

const REPO: &str = "lib/app";

/// A port on 127.0.0.1 where nothing listens.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

type Notes = Arc<Mutex<Vec<String>>>;

fn client(mirrors: &[String], only: bool) -> (Client, Notes) {
    let notes: Notes = Arc::default();
    let n = notes.clone();
    let opts = ClientOptions {
        base_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        mirrors: mirrors
            .iter()
            .map(|m| MirrorRule::parse(m).unwrap())
            .collect(),
        mirrors_only: only,
        on_mirror: Some(Arc::new(move |m: &MirrorNotice| {
            n.lock().unwrap().push(m.to_string())
        })),
        ..Default::default()
    };
    (Client::new(opts).unwrap(), notes)
}

/// Fetch the image's manifest and every blob through `c` as if from `registry`, checking
/// the bytes.
async fn pull(
    c: &Client,
    registry: &str,
    img: &TestImage,
) -> Result<(), ferry_registry::RegistryError> {
    let m = c.manifest_at(registry, REPO, "v1", None).await?;
    assert_eq!(m.digest, img.manifest_digest);
    for b in img.blobs() {
        let desc = Descriptor::new(&b.media_type, b.digest.clone(), b.size());
        let bytes = c.blob_small(registry, REPO, &desc).await?;
        assert_eq!(Digest::sha256_of(&bytes), b.digest);
    }
    Ok(())
}

#[tokio::test]
async fn a_mirror_serves_reads_for_an_unreachable_registry() {
    let img = sized_image(1, 2, 20_000);
    let mirror = FakeRegistry::start(FakeAuth::None).await;
    mirror.push_image(REPO, "v1", &img);
    let registry = format!("127.0.0.1:{}", closed_port());
    let (c, notes) = client(&[format!("{registry}={}", mirror.host())], false);
    pull(&c, &registry, &img).await.unwrap();
    assert!(notes.lock().unwrap().is_empty());
    // A digest asked by HEAD goes there too.
    let d = c.manifest_digest(&registry, REPO, "v1").await.unwrap();
    assert_eq!(d, img.manifest_digest);
    // A rule for another registry does not apply.
    let (c, _) = client(&[format!("ghcr.io=http://{}", mirror.host())], false);
    assert!(pull(&c, &registry, &img).await.is_err());
}

#[tokio::test]
async fn a_failing_mirror_falls_back_to_the_next_then_the_registry_and_says_so() {
    let img = sized_image(2, 1, 20_000);
    let registry = FakeRegistry::start(FakeAuth::None).await;
    registry.push_image(REPO, "v1", &img);
    let broken = FakeRegistry::start(FakeAuth::None).await;
    broken.add_fault(Fault::PingStatus { status: 500 });
    let down = format!("127.0.0.1:{}", closed_port());
    let empty = FakeRegistry::start(FakeAuth::None).await;
    let (c, notes) = client(
        &[
            format!("http://{}/", broken.host()),
            down.clone(),
            empty.host(),
        ],
        false,
    );
    pull(&c, &registry.host(), &img).await.unwrap();
    let notes = notes.lock().unwrap().clone();
    let host = registry.host();
    assert!(
        notes[0].starts_with(&format!(
            "mirror http://{} failed for {host}/{REPO}: GET http://{}/v2/ returned 500",
            broken.host(),
            broken.host()
        )),
        "{notes:?}"
    );
    assert!(
        notes[0].ends_with(&format!("; trying mirror http://{down}")),
        "{notes:?}"
    );
    assert!(
        notes[1].starts_with(&format!("mirror http://{down} failed for {host}/{REPO}: ")),
        "{notes:?}"
    );
    assert!(
        notes[2].starts_with(&format!(
            "mirror http://{} failed for {host}/{REPO}: ",
            empty.host()
        )) && notes[2].ends_with(&format!("; trying {host} itself")),
        "{notes:?}"
    );
    // The broken and the unreachable mirror are given up on; the empty one only lacks
    // these objects, so it is asked for each (and says so each time).
    let later: Vec<_> = notes[3..]
        .iter()
        .filter(|n| !n.contains(&empty.host()))
        .collect();
    assert!(later.is_empty(), "{later:?}");
    assert_eq!(notes.len(), 3 + img.blobs().count(), "{notes:?}");
}

#[tokio::test]
async fn the_registry_credentials_never_go_to_a_mirror() {
    let img = sized_image(4, 1, 10_000);
    let mirror = FakeRegistry::start(FakeAuth::None).await;
    mirror.push_image(REPO, "v1", &img);
    let registry = FakeRegistry::start(FakeAuth::Basic {
        user: "u".into(),
        pass: "secret".into(),
    })
    .await;
    registry.push_image(REPO, "v1", &img);
    let (c, _) = client(&[mirror.host()], false);
    let mut opts = c.options().clone();
    opts.credentials.insert(
        registry.host(),
        Credential::Basic {
            username: "u".into(),
            password: "secret".into(),
        },
    );
    let c = Client::new(opts).unwrap();
    pull(&c, &registry.host(), &img).await.unwrap();
    let sent: Vec<_> = mirror
        .requests()
        .into_iter()
        .filter_map(|r| r.authorization)
        .collect();
    assert!(sent.is_empty(), "{sent:?}");
    assert!(!mirror.requests().is_empty());
    assert!(
        registry.requests().is_empty(),
        "the registry was not needed"
    );
}

#[tokio::test]
async fn with_mirrors_only_the_registry_is_never_asked() {
    let img = sized_image(5, 1, 10_000);
    let registry = FakeRegistry::start(FakeAuth::None).await;
    registry.push_image(REPO, "v1", &img);
    let mirror = FakeRegistry::start(FakeAuth::None).await;
    let (c, notes) = client(&[mirror.host()], true);
    let err = pull(&c, &registry.host(), &img).await.unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(err.to_string().contains(&mirror.host()), "{err}");
    assert!(registry.requests().is_empty());
    assert!(notes.lock().unwrap().is_empty());
}

#[test]
fn mirror_rules_parse_registry_and_endpoint() {
    let r = MirrorRule::parse("docker.io=127.0.0.1:5000").unwrap();
    assert_eq!(r.registry.as_deref(), Some("docker.io"));
    assert_eq!(r.endpoint.as_str(), "http://127.0.0.1:5000/");
    let r = MirrorRule::parse("mirror.example/cache/v2/").unwrap();
    assert_eq!(r.registry, None);
    assert_eq!(r.endpoint.as_str(), "https://mirror.example/cache/");
    let r = MirrorRule::parse("*=https://m.example:8443").unwrap();
    assert_eq!(r.registry, None);
    assert_eq!(r.endpoint.as_str(), "https://m.example:8443/");
    for bad in [
        "ftp://m.example",
        "https://u:p@m.example",
        "=http://m",
        "https://m/?x=1",
    ] {
        assert!(MirrorRule::parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_mirror_serving_wrong_bytes_falls_back_to_the_registry() {
    let img = sized_image(6, 1, 30_000);
    let registry = FakeRegistry::start(FakeAuth::None).await;
    registry.push_image(REPO, "v1", &img);
    let mirror = FakeRegistry::start(FakeAuth::None).await;
    mirror.push_image(REPO, "v1", &img);
    let layer = img.layers[0].digest.clone();
    mirror.add_fault(Fault::WrongDigest {
        digest: layer.clone(),
    });
    let (c, notes) = client(&[mirror.host()], false);
    pull(&c, &registry.host(), &img).await.unwrap();
    let notes = notes.lock().unwrap().clone();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains(&layer.to_string())
            && notes[0].ends_with(&format!("; trying {} itself", registry.host())),
        "{notes:?}"
    );
    assert_eq!(registry.blob_gets(&layer), 1);
}
