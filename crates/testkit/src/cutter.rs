//! A cutting TCP proxy for tests: listens on 127.0.0.1:0, forwards every connection to a
//! target, counts the bytes each way, and cuts connections at pseudo-random points — after
//! a seeded random number of server→client bytes in a range — a bounded number of times.
//! A cut closes both sides at once, as a dropped link does in the middle of a response.
//!
//! ```no_run
//! # async fn f(target: std::net::SocketAddr) {
//! use ferry_testkit::cutter::{CutPlan, Cutter};
//! let c = Cutter::start(target, Some(CutPlan { seed: 7, min_bytes: 100_000, max_bytes: 900_000, cuts: 3 })).await;
//! // point the client at c.host(); afterwards:
//! assert!(c.cuts_done() <= 3);
//! println!("{} bytes went to the client", c.down_bytes());
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Where and how often to cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutPlan {
    pub seed: u64,
    /// Each connection is cut after a number of server→client bytes drawn from
    /// `min_bytes..max_bytes`, while cuts remain.
    pub min_bytes: u64,
    pub max_bytes: u64,
    /// Cuts in all; after these, connections are left alone.
    pub cuts: usize,
}

struct Shared {
    target: SocketAddr,
    plan: Option<CutPlan>,
    rng: Mutex<u64>,
    cuts_left: AtomicUsize,
    cuts_done: AtomicUsize,
    up: AtomicU64,
    down: AtomicU64,
    connections: AtomicUsize,
    /// Server→client bytes per second per connection; 0: as fast as they come.
    rate: AtomicU64,
}

impl Shared {
    /// The next pseudo-random number (splitmix64: deterministic for a seed).
    fn next(&self) -> u64 {
        let mut s = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Take one cut, if any is left.
    fn take_cut(&self) -> bool {
        self.cuts_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The running proxy; stops when dropped.
pub struct Cutter {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Cutter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cutter {
    /// Forward 127.0.0.1:PORT to `target`, cutting as `plan` says (never without one).
    pub async fn start(target: SocketAddr, plan: Option<CutPlan>) -> Cutter {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the cutter");
        let addr = listener.local_addr().expect("cutter address");
        let shared = Arc::new(Shared {
            target,
            plan,
            rng: Mutex::new(plan.map_or(0, |p| p.seed)),
            cuts_left: AtomicUsize::new(plan.map_or(0, |p| p.cuts)),
            cuts_done: AtomicUsize::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            rate: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move { forward(client, s).await });
            }
        });
        Cutter { addr, shared, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Bytes forwarded from the target to clients.
    pub fn down_bytes(&self) -> u64 {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Bytes forwarded from clients to the target.
    pub fn up_bytes(&self) -> u64 {
        self.shared.up.load(Ordering::SeqCst)
    }

    /// Connections cut so far.
    pub fn cuts_done(&self) -> usize {
        self.shared.cuts_done.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Send server→client bytes at no more than `bytes_per_sec` on each connection (0: no
    /// limit), so a test can stop a client in the middle of a download.
    pub fn set_rate(&self, bytes_per_sec: u64) {
        self.shared.rate.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Set both byte counters back to zero.
    pub fn reset_counts(&self) {
        self.shared.up.store(0, Ordering::SeqCst);
        self.shared.down.store(0, Ordering::SeqCst);
    }
}

async fn forward(client: TcpStream, s: Arc<Shared>) {
    s.connections.fetch_add(1, Ordering::SeqCst);
    let Ok(server) = TcpStream::connect(s.target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let cut_at = s.plan.map(|p| {
        let span = p.max_bytes.saturating_sub(p.min_bytes).max(1);
        p.min_bytes + s.next() % span
    });
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let s_up = s.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    s_up.up.fetch_add(n as u64, Ordering::SeqCst);
                }
            }
        }
        let _ = sw.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let rate = s.rate.load(Ordering::SeqCst);
        let want = if rate > 0 {
            (rate as usize / 20).clamp(1, buf.len())
        } else {
            buf.len()
        };
        let n = match sr.read(&mut buf[..want]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut take = n;
        let mut cut = false;
        if let Some(at) = cut_at {
            if sent + n as u64 >= at && s.cuts_left.load(Ordering::SeqCst) > 0 {
                take = (at - sent.min(at)) as usize;
                cut = s.take_cut();
                if !cut {
                    take = n;
                }
            }
        }
        if take > 0 {
            if cw.write_all(&buf[..take]).await.is_err() {
                break;
            }
            sent += take as u64;
            s.down.fetch_add(take as u64, Ordering::SeqCst);
            if rate > 0 {
                let secs = take as f64 / rate as f64;
                tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
            }
        }
        if cut {
            s.cuts_done.fetch_add(1, Ordering::SeqCst);
            up.abort();
            let _ = cw.flush().await;
            // Dropping both halves closes the connection mid-response.
            return;
        }
    }
    let _ = cw.shutdown().await;
    let _ = up.await;
}

#[cfg(test)]
mod tests {
    use super::{CutPlan, Cutter};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A target that sends `n` bytes to every connection, then closes it.
    async fn sender(n: usize) -> std::net::SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let _ = s.write_all(&vec![7u8; n]).await;
                });
            }
        });
        addr
    }

    async fn read_all(c: &Cutter) -> usize {
        let mut s = tokio::net::TcpStream::connect(c.addr()).await.unwrap();
        let mut v = Vec::new();
        let _ = s.read_to_end(&mut v).await;
        v.len()
    }

    #[tokio::test]
    async fn cuts_within_the_range_as_many_times_as_planned_and_counts() {
        let target = sender(100_000).await;
        let plan = CutPlan {
            seed: 1,
            min_bytes: 10_000,
            max_bytes: 20_000,
            cuts: 2,
        };
        let c = Cutter::start(target, Some(plan)).await;
        let a = read_all(&c).await;
        let b = read_all(&c).await;
        let whole = read_all(&c).await;
        assert!((10_000..20_000).contains(&a), "{a}");
        assert!((10_000..20_000).contains(&b), "{b}");
        assert_eq!(whole, 100_000);
        assert_eq!(c.cuts_done(), 2);
        assert_eq!(c.down_bytes(), (a + b + whole) as u64);
        // The same seed cuts at the same points.
        let again = Cutter::start(target, Some(plan)).await;
        assert_eq!(read_all(&again).await, a);
    }
}
