//! Prometheus metrics an operator watches: requests by verb and resource,
//! their latency, open watches, and store write latency.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
    watches: Family<Labels, Gauge>,
    store_writes: Histogram,
    open_watches: Arc<AtomicI64>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("apiserver");
        let requests = Family::<Labels, Counter>::default();
        let latency = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let watches = Family::<Labels, Gauge>::default();
        let store_writes = latency_histogram();
        registry.register("request", "Requests by verb, resource and HTTP code", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Request latency by verb and resource (watches: time to first byte)",
            latency.clone(),
        );
        registry.register("registered_watchers", "Open watches by resource", watches.clone());
        registry.register("storage_write_duration_seconds", "Durable store write latency", store_writes.clone());
        Metrics { registry, requests, latency, watches, store_writes, open_watches: Arc::new(AtomicI64::new(0)) }
    }

    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        let labels = vec![("verb".to_string(), verb.to_string()), ("resource".to_string(), resource.to_string())];
        self.latency.get_or_create(&labels).observe(elapsed.as_secs_f64());
        let mut with_code = labels;
        with_code.push(("code".to_string(), code.to_string()));
        self.requests.get_or_create(&with_code).inc();
    }

    pub fn observe_store_write(&self, elapsed: Duration) {
        self.store_writes.observe(elapsed.as_secs_f64());
    }

    /// Count a watch as open until the guard drops.
    pub fn watch_started(&self, resource: &str) -> WatchGuard {
        let gauge = self.watches.get_or_create(&vec![("resource".to_string(), resource.to_string())]).clone();
        gauge.inc();
        self.open_watches.fetch_add(1, Ordering::Relaxed);
        WatchGuard { gauge, total: self.open_watches.clone() }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

pub struct WatchGuard {
    gauge: Gauge,
    total: Arc<AtomicI64>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        self.total.fetch_sub(1, Ordering::Relaxed);
    }
}
