//! Figures for docs/NOTES.md ("The cache of a long-running server"), not checks: ignored by
//! default. Run with
//! `cargo test --release -p ferry-store --test measure -- --ignored --nocapture --test-threads 1`.

use std::fs;
use std::time::{Duration, Instant, SystemTime};

use ferry_core::Digest;
use ferry_store::{Backend, Limits, Store};

fn per(d: Duration, n: usize) -> String {
    format!("{:?} ({:.1} µs each)", d, d.as_secs_f64() * 1e6 / n as f64)
}

#[test]
#[ignore = "a measurement; see the module doc"]
fn measure_scan_of_10000_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let n = 10_000;
    for i in 0..n {
        let data = format!("blob {i}").into_bytes();
        store
            .put_verified(&Digest::sha256_of(&data), &data)
            .unwrap();
    }
    for round in 0..3 {
        let t = Instant::now();
        let s = Store::open(dir.path()).unwrap().stats().unwrap();
        assert_eq!(s.blobs, n as u64);
        println!(
            "scan at open, {n} blobs (round {round}): {}",
            per(t.elapsed(), n)
        );
    }
    let t = Instant::now();
    store
        .set_limits(Limits {
            max_size: Some(0),
            max_age: None,
        })
        .unwrap();
    let ev = store.evict().unwrap();
    assert_eq!(ev.blobs, n as u64);
    println!("evicting all {n}: {}", per(t.elapsed(), n));
}

#[test]
#[ignore = "a measurement; see the module doc"]
fn measure_touch_pin_and_first_serve_against_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let size = 256usize << 20;
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let d = Digest::sha256_of(&data);
    let t = Instant::now();
    let mut ingest = store.begin(&d, Some(size as u64)).unwrap();
    ingest.write(&data).unwrap();
    ingest.commit().unwrap();
    println!(
        "ingest + commit of 256 MiB (hashing included): {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    fs::File::open(store.blob_path(&d))
        .unwrap()
        .sync_all()
        .unwrap();
    fs::File::open(store.blob_path(&d).parent().unwrap())
        .unwrap()
        .sync_all()
        .unwrap();
    println!(
        "fsync of that blob and its directory (the cost of fsync at commit): {:?}",
        t.elapsed()
    );

    // The same per blob, as fsync at commit would pay it: four 64 MiB blobs, each synced
    // right after its commit.
    let mut synced = Duration::ZERO;
    for k in 0..4u8 {
        let data: Vec<u8> = (0..64usize << 20)
            .map(|i| (i * 7 % 251) as u8 ^ k)
            .collect();
        let d = Digest::sha256_of(&data);
        let mut ingest = store.begin(&d, Some(data.len() as u64)).unwrap();
        ingest.write(&data).unwrap();
        ingest.commit().unwrap();
        let t = Instant::now();
        fs::File::open(store.blob_path(&d))
            .unwrap()
            .sync_all()
            .unwrap();
        fs::File::open(store.blob_path(&d).parent().unwrap())
            .unwrap()
            .sync_all()
            .unwrap();
        synced += t.elapsed();
    }
    println!("fsync at commit, 4 × 64 MiB: {synced:?} in all");

    let other = Store::open(dir.path()).unwrap();
    other.stats().unwrap();
    let t = Instant::now();
    drop(other.open_served(&d, 0).unwrap().expect("cached"));
    println!(
        "first serve in a new process: hashing 256 MiB from the page cache: {:?}",
        t.elapsed()
    );
    let n = 10_000;
    let t = Instant::now();
    for _ in 0..n {
        drop(other.open_served(&d, 0).unwrap().expect("cached"));
    }
    println!(
        "later serves (pin, stat, open, seek): {}",
        per(t.elapsed(), n)
    );
    let t = Instant::now();
    for _ in 0..n {
        drop(other.pin(&d));
    }
    println!(
        "pin + unpin (in memory; a touch at most once a minute): {}",
        per(t.elapsed(), n)
    );
    let t = Instant::now();
    let now = SystemTime::now();
    for _ in 0..n {
        other.backend().touch(&d, now).unwrap();
    }
    println!("touch (open + futimens + close): {}", per(t.elapsed(), n));
}
