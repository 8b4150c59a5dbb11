//! Credentials given on the command line go to one registry only.

mod common;

use common::*;

#[test]
fn username_with_images_from_two_registries_is_refused_before_any_request() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let out = work.path().join("both.tar");
    let o = ferry(
        &cache,
        &[
            "pull",
            "-u",
            "me",
            "--password",
            "pw",
            "ghcr.io/a/b:1",
            "quay.io/c/d:2",
            "-o",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--username applies to one registry") && err.contains("ghcr.io, quay.io"),
        "{err}"
    );
    assert!(!out.exists());
    assert!(
        !cache.exists(),
        "the cache is not touched by a refused command line"
    );
}
