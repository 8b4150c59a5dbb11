//! The store as a long-running server's cache: accounting, pins, eviction, rescans and
//! crash recovery, through the public API only.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use ferry_core::Digest;
use ferry_store::{Evicted, Limits, Store};

fn blob(n: usize, seed: u8) -> (Vec<u8>, Digest) {
    let data: Vec<u8> = (0..n)
        .map(|i| (i * 7 % 251) as u8 ^ seed.wrapping_mul(31))
        .collect();
    let d = Digest::sha256_of(&data);
    (data, d)
}

fn put(store: &Store, data: &[u8], d: &Digest) {
    let mut i = store.begin(d, Some(data.len() as u64)).unwrap();
    if !i.already_done() {
        i.write(data).unwrap();
    }
    i.commit().unwrap();
}

/// What `blobs/` holds, counted the slow way.
fn disk(root: &Path) -> (u64, u64) {
    let (mut n, mut bytes) = (0, 0);
    for alg in ["sha256", "sha512"] {
        for e in fs::read_dir(root.join("blobs").join(alg)).unwrap() {
            n += 1;
            bytes += e.unwrap().metadata().unwrap().len();
        }
    }
    (n, bytes)
}

fn set_mtime(path: &Path, t: SystemTime) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

#[test]
fn accounting_matches_the_disk_after_commits_removals_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let s = store.stats().unwrap();
    assert_eq!((s.blobs, s.bytes, s.partial_bytes), (0, 0, 0));

    let (a, da) = blob(10_000, 1);
    let (b, db) = blob(3_000, 2);
    let (c, dc) = blob(777, 3);
    put(&store, &a, &da);
    store.put_verified(&db, &b).unwrap();
    put(&store, &c, &dc);
    // Storing the same blob again does not count it twice.
    put(&store, &c, &dc);
    store.put_verified(&dc, &c).unwrap();
    let s = store.stats().unwrap();
    assert_eq!((s.blobs, s.bytes), disk(dir.path()));
    assert_eq!((s.blobs, s.bytes), (3, 13_777));

    // A damaged copy found by a verified read is removed, and leaves the accounting.
    fs::write(store.blob_path(&db), vec![0u8; 3_000]).unwrap();
    assert!(store.open_verified(&db, None).unwrap().verify().is_err());
    let s = store.stats().unwrap();
    assert_eq!((s.blobs, s.bytes), disk(dir.path()));
    assert_eq!((s.blobs, s.bytes), (2, 10_777));

    // Evicted blobs leave it too.
    store
        .set_limits(Limits {
            max_size: Some(10_000),
            max_age: None,
        })
        .unwrap();
    let ev = store.evict().unwrap();
    assert_eq!(ev.blobs, 1);
    let s = store.stats().unwrap();
    assert_eq!((s.blobs, s.bytes), disk(dir.path()));

    // A partial download counts as partial bytes, not as a blob.
    let (p, dp) = blob(5_000, 4);
    {
        let mut i = store.begin(&dp, Some(5_000)).unwrap();
        i.write(&p[..1_234]).unwrap();
    }
    assert_eq!(store.rescan().unwrap().partial_bytes, 1_234);

    // A new process finds the same figures.
    let reopened = Store::open(dir.path()).unwrap();
    let s2 = reopened.stats().unwrap();
    assert_eq!((s2.blobs, s2.bytes), disk(dir.path()));
    assert_eq!(s2.partial_bytes, 1_234);
}

#[test]
fn eviction_by_size_removes_the_least_recently_used_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blobs: Vec<_> = (0..4).map(|i| blob(1_000, i)).collect();
    for (data, d) in &blobs {
        put(&store, data, d);
    }
    // Use the oldest: it becomes the most recently used.
    drop(store.pin(&blobs[0].1));
    store
        .set_limits(Limits {
            max_size: Some(2_500),
            max_age: None,
        })
        .unwrap();
    let ev = store.evict().unwrap();
    assert_eq!(
        ev,
        Evicted {
            blobs: 2,
            bytes: 2_000,
            partial_bytes: 0
        }
    );
    let present: Vec<bool> = blobs.iter().map(|(_, d)| store.contains(d)).collect();
    assert_eq!(present, [true, false, false, true]);
    let s = store.stats().unwrap();
    assert_eq!(
        (s.evicted_blobs, s.evicted_bytes, s.bytes),
        (2, 2_000, 2_000)
    );
}

#[test]
fn a_commit_over_the_size_limit_evicts_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .set_limits(Limits {
            max_size: Some(2_500),
            max_age: None,
        })
        .unwrap();
    let blobs: Vec<_> = (0..3).map(|i| blob(1_000, i)).collect();
    for (data, d) in &blobs {
        put(&store, data, d);
    }
    let present: Vec<bool> = blobs.iter().map(|(_, d)| store.contains(d)).collect();
    assert_eq!(present, [false, true, true]);
    assert_eq!(store.stats().unwrap().bytes, 2_000);
}

#[test]
fn eviction_never_removes_a_pinned_blob_and_an_open_reader_reads_an_evicted_blob_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, da) = blob(4 << 20, 1);
    let (b, db) = blob(1_000, 2);
    put(&store, &b, &db);
    put(&store, &a, &da);
    let pin_b = store.pin(&db);
    // Pinned before it exists: a blob a pull in progress has announced it needs.
    let (c, dc) = blob(2_000, 3);
    let pin_c = store.pin(&dc);

    let (opened_tx, opened_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let reader_store = store.clone();
    let reader_digest = da.clone();
    let reader = std::thread::spawn(move || {
        let mut f = reader_store.open_blob(&reader_digest).unwrap();
        let mut got = vec![0u8; 64 * 1024];
        f.read_exact(&mut got).unwrap();
        opened_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        f.read_to_end(&mut got).unwrap();
        got
    });
    opened_rx.recv().unwrap();
    put(&store, &c, &dc);
    store
        .set_limits(Limits {
            max_size: Some(0),
            max_age: None,
        })
        .unwrap();
    let ev = store.evict().unwrap();
    assert_eq!((ev.blobs, ev.bytes), (1, 4 << 20), "only the unpinned blob");
    assert!(!store.contains(&da));
    assert!(store.contains(&db) && store.contains(&dc));
    go_tx.send(()).unwrap();
    let got = reader.join().unwrap();
    assert_eq!(Digest::sha256_of(&got), da, "the reader got every byte");
    assert!(
        store.open_served(&da, 0).unwrap().is_none(),
        "a new open after eviction finds it absent"
    );
    assert_eq!(store.stats().unwrap().pinned, 2);

    drop(pin_b);
    store.evict().unwrap();
    assert!(!store.contains(&db), "unpinned, it goes");
    assert!(store.contains(&dc));
    drop(pin_c);
    store.evict().unwrap();
    assert!(!store.contains(&dc));
    assert_eq!(store.stats().unwrap().bytes, 0);
}

#[test]
fn a_served_blob_is_pinned_while_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, da) = blob(100_000, 1);
    put(&store, &a, &da);
    let mut served = store.open_served(&da, 40_000).unwrap().expect("cached");
    assert_eq!(served.size, 100_000);
    store
        .set_limits(Limits {
            max_size: Some(0),
            max_age: None,
        })
        .unwrap();
    assert_eq!(store.evict().unwrap().blobs, 0);
    let mut rest = Vec::new();
    served.reader.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, a[40_000..]);
    drop(served);
    assert_eq!(store.evict().unwrap().blobs, 1);
}

#[test]
fn eviction_skips_a_blob_a_writer_of_another_process_holds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Store::open(dir.path()).unwrap();
    let other = Store::open(dir.path()).unwrap();
    let (a, da) = blob(1_000, 1);
    let (b, db) = blob(1_000, 2);
    put(&server, &a, &da);
    put(&server, &b, &db);
    // Another process begins writing `a` (it finds it done, and holds the lock until it
    // drops the ingest), and is in the middle of writing `c`.
    let holding = other.begin(&da, Some(1_000)).unwrap();
    assert!(holding.already_done());
    let (c, dc) = blob(3_000, 3);
    let mut writing = other.begin(&dc, Some(3_000)).unwrap();
    writing.write(&c[..1_500]).unwrap();
    writing.flush().unwrap();

    server
        .set_limits(Limits {
            max_size: Some(0),
            max_age: Some(Duration::from_secs(1)),
        })
        .unwrap();
    let later = SystemTime::now() + Duration::from_secs(3600);
    let ev = server.evict_at(later).unwrap();
    assert_eq!((ev.blobs, ev.partial_bytes), (1, 0));
    assert!(server.contains(&da), "the locked blob stays");
    assert!(!server.contains(&db));
    assert_eq!(
        server.partial_bytes(&dc),
        1_500,
        "the partial being written stays"
    );
    drop(holding);
    writing.write(&c[1_500..]).unwrap();
    writing.commit().unwrap();
    assert!(other.contains(&dc));
    assert_eq!(server.evict_at(later).unwrap().blobs, 1);
    assert!(!server.contains(&da));
}

#[test]
fn max_age_removes_what_has_not_been_used_for_longer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, da) = blob(1_000, 1);
    let (b, db) = blob(2_000, 2);
    put(&store, &a, &da);
    put(&store, &b, &db);
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    // `a` was last used two hours ago, as a restarted server reads from the disk.
    set_mtime(&store.blob_path(&da), two_hours_ago);
    // A partial download abandoned two hours ago.
    let (p, dp) = blob(5_000, 3);
    {
        let mut i = store.begin(&dp, Some(5_000)).unwrap();
        i.write(&p[..700]).unwrap();
    }
    set_mtime(&store.partial_path(&dp), two_hours_ago);

    let restarted = Store::open(dir.path()).unwrap();
    restarted
        .set_limits(Limits {
            max_size: None,
            max_age: Some(Duration::from_secs(3600)),
        })
        .unwrap();
    let ev = restarted.evict().unwrap();
    assert_eq!(
        ev,
        Evicted {
            blobs: 1,
            bytes: 1_000,
            partial_bytes: 700
        }
    );
    assert!(!restarted.contains(&da) && restarted.contains(&db));
    assert_eq!(restarted.partial_bytes(&dp), 0);
    let s = restarted.stats().unwrap();
    assert_eq!(
        (s.bytes, s.partial_bytes, s.evicted_partial_bytes),
        (2_000, 0, 700)
    );

    // A use moves a blob's age forward; without one it ages out.
    let in_90_min = SystemTime::now() + Duration::from_secs(5400);
    assert_eq!(restarted.evict_at(in_90_min).unwrap().blobs, 1);
    assert!(!restarted.contains(&db));
}

#[test]
fn uses_are_persisted_so_a_restart_keeps_the_lru_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (a, da) = blob(1_000, 1);
    let (b, db) = blob(1_000, 2);
    put(&store, &a, &da);
    put(&store, &b, &db);
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    set_mtime(&store.blob_path(&da), hour_ago - Duration::from_secs(60));
    set_mtime(&store.blob_path(&db), hour_ago);
    // A fresh process uses `a` (the older one): that use is written to the disk.
    let first = Store::open(dir.path()).unwrap();
    first.stats().unwrap();
    drop(first.pin(&da));
    drop(first);
    let second = Store::open(dir.path()).unwrap();
    second
        .set_limits(Limits {
            max_size: Some(1_000),
            max_age: None,
        })
        .unwrap();
    second.evict().unwrap();
    assert!(second.contains(&da), "the recently used blob stays");
    assert!(!second.contains(&db));
}

#[test]
fn a_rescan_picks_up_blobs_another_process_added_or_removed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Store::open(dir.path()).unwrap();
    let (a, da) = blob(1_000, 1);
    put(&server, &a, &da);
    assert_eq!(server.stats().unwrap().blobs, 1);
    let other = Store::open(dir.path()).unwrap();
    let (b, db) = blob(2_000, 2);
    put(&other, &b, &db);
    fs::remove_file(other.blob_path(&da)).unwrap();
    assert_eq!(
        server.stats().unwrap().bytes,
        1_000,
        "not seen before a rescan"
    );
    let s = server.rescan().unwrap();
    assert_eq!((s.blobs, s.bytes), (1, 2_000));
    // Evicting what is gone already costs nothing and counts nothing.
    fs::remove_file(other.blob_path(&db)).unwrap();
    server
        .set_limits(Limits {
            max_size: Some(0),
            max_age: None,
        })
        .unwrap();
    assert_eq!(server.evict().unwrap().blobs, 0);
    assert_eq!(server.stats().unwrap().bytes, 0);
}

#[test]
fn a_blob_a_crash_left_short_or_garbled_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (a, da) = blob(300_000, 1);
    let (b, db) = blob(300_000, 2);
    {
        let before_crash = Store::open(dir.path()).unwrap();
        put(&before_crash, &a, &da);
        put(&before_crash, &b, &db);
    }
    // What power loss after an unsynced rename can leave: the name with fewer bytes, or
    // the right length of garbage.
    let f = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("blobs/sha256").join(da.hex()))
        .unwrap();
    f.set_len(100_000).unwrap();
    fs::write(
        dir.path().join("blobs/sha256").join(db.hex()),
        vec![0u8; 300_000],
    )
    .unwrap();

    let restarted = Store::open(dir.path()).unwrap();
    assert_eq!(restarted.stats().unwrap().blobs, 2);
    assert!(restarted.open_served(&da, 0).unwrap().is_none());
    assert!(restarted.open_served(&db, 299_000).unwrap().is_none());
    assert!(!restarted.contains(&da) && !restarted.contains(&db));
    let s = restarted.stats().unwrap();
    assert_eq!((s.damaged, s.blobs, s.bytes), (2, 0, 0));

    // Fetched again, they are served whole.
    put(&restarted, &a, &da);
    let mut served = restarted.open_served(&da, 0).unwrap().expect("cached");
    let mut got = Vec::new();
    served.reader.read_to_end(&mut got).unwrap();
    assert_eq!(got, a);
}

#[test]
fn a_blob_is_hashed_before_its_first_serve_in_a_process_and_not_again() {
    let dir = tempfile::tempdir().unwrap();
    let (a, da) = blob(100_000, 1);
    put(&Store::open(dir.path()).unwrap(), &a, &da);
    let store = Store::open(dir.path()).unwrap();
    // Not written by this process: hashed on its first serve, found intact.
    drop(store.open_served(&da, 0).unwrap().expect("intact"));
    // Damage after that is the pull path's concern (`CheckedBlob`): serving does not hash a
    // blob twice in one process. The same damage before the first serve is caught (above).
    let path = store.blob_path(&da);
    let mut garbled = a.clone();
    garbled[5] ^= 1;
    fs::write(&path, &garbled).unwrap();
    assert!(store.open_served(&da, 0).unwrap().is_some());
    assert_eq!(
        Store::open(dir.path())
            .unwrap()
            .open_served(&da, 0)
            .unwrap()
            .map(|s| s.size),
        None,
        "a new process hashes it, finds the damage and removes it"
    );
}

#[test]
fn concurrent_first_serves_of_one_blob_all_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, da) = blob(2 << 20, 1);
    put(&Store::open(dir.path()).unwrap(), &a, &da);
    let store = Store::open(dir.path()).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (store, da) = (store.clone(), da.clone());
            std::thread::spawn(move || {
                let mut s = store.open_served(&da, i * 1000).unwrap().expect("cached");
                let mut got = Vec::new();
                s.reader.read_to_end(&mut got).unwrap();
                got.len() as u64 + i * 1000
            })
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 2 << 20);
    }
    assert_eq!(store.stats().unwrap().pinned, 0);
}

#[test]
fn one_blob_that_cannot_be_removed_does_not_stop_the_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blobs: Vec<_> = (0..3).map(|i| blob(1_000, i)).collect();
    for (data, d) in &blobs {
        put(&store, data, d);
    }
    // A planted link in place of the oldest blob's lock file.
    let lock = dir
        .path()
        .join("ingest")
        .join(format!("sha256-{}.lock", blobs[0].1.hex()));
    let _ = fs::remove_file(&lock);
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &lock).unwrap();
    store
        .set_limits(Limits {
            max_size: Some(0),
            max_age: None,
        })
        .unwrap();
    let err = store.evict().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "refusing the cache entry {}: it is a symbolic link",
            lock.display()
        )
    );
    let present: Vec<bool> = blobs.iter().map(|(_, d)| store.contains(d)).collect();
    assert_eq!(present, [true, false, false]);
    let s = store.stats().unwrap();
    assert_eq!((s.evicted_blobs, s.bytes), (2, 1_000));
}
