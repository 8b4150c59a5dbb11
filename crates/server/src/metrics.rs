//! `GET /metrics`: requests by route and status, bytes served, upstream bytes fetched, cache
//! hits, misses, evictions and size, fetches in flight, upstream errors by kind, clients
//! cut for reading too slowly by reason.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    pub bytes_served: Counter,
    pub upstream_bytes: Counter,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    upstream_errors: Family<Labels, Counter>,
    cuts: Family<Labels, Counter>,
    jobs_in_flight: Gauge,
    cache_bytes: Gauge,
    cache_blobs: Gauge,
    evicted_blobs: Counter,
    /// The store's eviction count at the last scrape (it counts since it was opened).
    evicted_seen: Mutex<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ferry_serve");
        let m = Metrics {
            requests: Family::default(),
            bytes_served: Counter::default(),
            upstream_bytes: Counter::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            upstream_errors: Family::default(),
            cuts: Family::default(),
            jobs_in_flight: Gauge::default(),
            cache_bytes: Gauge::default(),
            cache_blobs: Gauge::default(),
            evicted_blobs: Counter::default(),
            evicted_seen: Mutex::new(0),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        registry.register(
            "served_bytes",
            "Archive bytes sent to clients",
            m.bytes_served.clone(),
        );
        registry.register(
            "upstream_bytes",
            "Blob bytes image fetches downloaded from registries (configs read while resolving not counted)",
            m.upstream_bytes.clone(),
        );
        registry.register(
            "cache_hits",
            "Blobs found in the cache",
            m.cache_hits.clone(),
        );
        registry.register(
            "cache_misses",
            "Blobs fetched because the cache lacked them",
            m.cache_misses.clone(),
        );
        registry.register(
            "cache_evicted_blobs",
            "Blobs evicted from the cache",
            m.evicted_blobs.clone(),
        );
        registry.register(
            "cache_size_bytes",
            "Bytes of complete blobs in the cache",
            m.cache_bytes.clone(),
        );
        registry.register(
            "cache_blobs",
            "Complete blobs in the cache",
            m.cache_blobs.clone(),
        );
        registry.register(
            "jobs_in_flight",
            "Upstream image fetches running",
            m.jobs_in_flight.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed upstream requests by kind",
            m.upstream_errors.clone(),
        );
        registry.register(
            "cut_connections",
            "Connections cut because the client read too slowly, by reason (idle: nothing taken for the idle time; slow: under the minimum rate)",
            m.cuts.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&vec![
                ("route".into(), route.into()),
                ("status".into(), status.to_string()),
            ])
            .inc();
    }

    pub fn upstream_error(&self, kind: &str) {
        self.upstream_errors
            .get_or_create(&vec![("kind".into(), kind.into())])
            .inc();
    }

    /// A client cut for `reason` (`idle` or `slow`).
    pub fn cut(&self, reason: &str) {
        self.cuts
            .get_or_create(&vec![("reason".into(), reason.into())])
            .inc();
    }

    /// The text exposition, with the gauges read now.
    pub fn render(&self, stats: Option<ferry_store::CacheStats>, jobs: usize) -> String {
        self.jobs_in_flight.set(jobs as i64);
        if let Some(s) = stats {
            self.cache_bytes.set(s.bytes as i64);
            self.cache_blobs.set(s.blobs as i64);
            let mut seen = self.evicted_seen.lock().unwrap_or_else(|e| e.into_inner());
            if s.evicted_blobs > *seen {
                self.evicted_blobs.inc_by(s.evicted_blobs - *seen);
                *seen = s.evicted_blobs;
            }
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
