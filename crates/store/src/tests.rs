use super::*;

fn blob(n: usize) -> (Vec<u8>, Digest) {
    let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
    let d = Digest::sha256_of(&data);
    (data, d)
}

#[test]
fn partial_survives_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (data, d) = blob(100_000);
    {
        let mut i = store.begin(&d, Some(data.len() as u64)).unwrap();
        assert_eq!(i.offset(), 0);
        i.write(&data[..40_000]).unwrap();
        // dropped without commit, as a killed or failed download would be
    }
    assert!(
        !store.contains(&d),
        "nothing appears under blobs/ before verification"
    );
    assert_eq!(store.partial_bytes(&d), 40_000);
    let mut i = store.begin(&d, Some(data.len() as u64)).unwrap();
    assert_eq!(i.offset(), 40_000);
    i.write(&data[40_000..]).unwrap();
    i.commit().unwrap();
    assert!(store.contains(&d));
    assert_eq!(store.read_small(&d).unwrap(), data);
    assert_eq!(store.partial_bytes(&d), 0);
}

#[test]
fn corrupt_content_never_reaches_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (mut data, d) = blob(10_000);
    data[5] ^= 1;
    let mut i = store.begin(&d, Some(10_000)).unwrap();
    i.write(&data).unwrap();
    let err = i.commit().unwrap_err();
    assert!(err.is_verify(), "{err}");
    assert!(!store.contains(&d));
    assert_eq!(
        store.partial_bytes(&d),
        0,
        "a wrong partial is not kept for resume"
    );
}

#[test]
fn oversize_partial_is_discarded_and_restart_works() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (data, d) = blob(1000);
    fs::write(store.partial_path(&d), vec![0u8; 2000]).unwrap();
    let mut i = store.begin(&d, Some(1000)).unwrap();
    assert_eq!(i.offset(), 0);
    i.write(&data[..10]).unwrap();
    i.restart().unwrap();
    assert_eq!(i.offset(), 0);
    i.write(&data).unwrap();
    i.commit().unwrap();
    assert!(store.contains(&d));
}

#[test]
fn put_verified_checks_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (data, d) = blob(10);
    assert!(store.put_verified(&d, b"other").is_err());
    assert!(!store.contains(&d));
    store.put_verified(&d, &data).unwrap();
    assert_eq!(store.size(&d), Some(10));
}

#[test]
fn a_blob_of_the_wrong_size_is_not_trusted_and_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (data, d) = blob(1000);
    // What a machine crash after an un-fsynced rename can leave: the name, not the bytes.
    fs::write(store.blob_path(&d), b"").unwrap();
    assert!(!store.has(&d, 1000));
    assert!(!store.contains(&d), "the truncated file was removed");
    let mut i = store.begin(&d, Some(1000)).unwrap();
    assert!(!i.already_done());
    i.write(&data).unwrap();
    i.commit().unwrap();
    assert!(store.has(&d, 1000));
}

#[test]
fn bytes_past_the_declared_size_are_refused_before_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (data, d) = blob(100);
    let mut i = store.begin(&d, Some(100)).unwrap();
    i.write(&data[..60]).unwrap();
    assert!(i.write(&[0u8; 41]).unwrap_err().is_verify());
    i.write(&data[60..]).unwrap();
    i.commit().unwrap();
    assert_eq!(store.read_small(&d).unwrap(), data);
}
