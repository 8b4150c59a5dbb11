//! The contract every [`Backend`] keeps, as one suite each implementation runs (the
//! filesystem backend here; the object-storage backend of a later issue calls
//! [`conformance`] with its own `damage` hook).

use std::io::Read;
use std::time::{Duration, SystemTime};

use ferry_core::Digest;
use ferry_store::{Backend, Partials, Removal, Store, StoreError};

fn blob(n: usize, seed: u8) -> (Vec<u8>, Digest) {
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8 ^ seed).collect();
    let d = Digest::sha256_of(&data);
    (data, d)
}

/// `damage(digest)` replaces the stored bytes of a complete blob with others of the same
/// length, behind the backend's back.
fn conformance(b: &dyn Backend, damage: &dyn Fn(&Digest)) {
    let (data, d) = blob(100_000, 1);
    assert_eq!(b.size(&d).unwrap(), None);
    assert!(b.open_at(&d, 0).unwrap().is_none());
    assert!(!b.verify(&d).unwrap());
    assert_eq!(b.remove(&d).unwrap(), Removal::Absent);

    // A partial write is invisible, and resumes where it stopped.
    {
        let mut w = b.begin(&d, Some(100_000)).unwrap();
        assert!(!w.already_done());
        w.write(&data[..30_000]).unwrap();
    }
    assert_eq!(b.size(&d).unwrap(), None);
    assert!(b.list().unwrap().is_empty());
    assert_eq!(b.partials(None).unwrap().held, 30_000);
    let mut w = b.begin(&d, Some(100_000)).unwrap();
    assert_eq!(w.offset(), 30_000);
    w.write(&data[30_000..]).unwrap();
    w.commit().unwrap();
    assert_eq!(b.partials(None).unwrap().held, 0);

    // Visible, readable from any offset, listed with its size.
    assert_eq!(b.size(&d).unwrap(), Some(100_000));
    let mut tail = Vec::new();
    b.open_at(&d, 99_000)
        .unwrap()
        .expect("present")
        .read_to_end(&mut tail)
        .unwrap();
    assert_eq!(tail, data[99_000..]);
    assert!(b.verify(&d).unwrap());
    let listed = b.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((&listed[0].digest, listed[0].size), (&d, 100_000));

    // A recorded use is what the listing reports.
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    b.touch(&d, at).unwrap();
    assert_eq!(b.list().unwrap()[0].last_use, at);

    // A second writer finds it done; while it holds the blob, removal leaves it.
    let holder = b.begin(&d, Some(100_000)).unwrap();
    assert!(holder.already_done());
    assert_eq!(b.remove(&d).unwrap(), Removal::Busy);
    holder.commit().unwrap();

    // Wrong bytes never become visible.
    let (other, d2) = blob(5_000, 2);
    let mut w = b.begin(&d2, Some(5_000)).unwrap();
    w.write(&other[..4_999]).unwrap();
    w.write(&[0]).unwrap();
    assert!(w.commit().unwrap_err().is_verify());
    assert_eq!(b.size(&d2).unwrap(), None);

    // Damage is caught by verify, and the damaged copy removed.
    damage(&d);
    let err = b.verify(&d).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert_eq!(b.size(&d).unwrap(), None);

    // Removal of a complete blob nobody holds.
    let mut w = b.begin(&d2, Some(5_000)).unwrap();
    w.write(&other).unwrap();
    w.commit().unwrap();
    assert_eq!(b.remove(&d2).unwrap(), Removal::Removed { size: 5_000 });
    assert_eq!(b.size(&d2).unwrap(), None);

    // Stale partials nobody writes are removed; one being written is kept.
    let (p, dp) = blob(9_000, 3);
    drop({
        let mut w = b.begin(&dp, Some(9_000)).unwrap();
        w.write(&p[..1_000]).unwrap();
        w
    });
    // (Larger than a writer's buffer, so its bytes are on the storage already.)
    let (q, dq) = blob(600_000, 4);
    let mut busy = b.begin(&dq, Some(600_000)).unwrap();
    busy.write(&q[..400_000]).unwrap();
    let future = SystemTime::now() + Duration::from_secs(60);
    assert_eq!(
        b.partials(Some(future)).unwrap(),
        Partials {
            held: 400_000,
            removed: 1_000
        }
    );
}

#[test]
fn the_filesystem_backend_keeps_the_backend_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let damage = |d: &Digest| {
        let path = store.blob_path(d);
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::write(&path, vec![0u8; len as usize]).unwrap();
    };
    conformance(store.backend(), &damage);
}
