//! Prometheus metrics of the proxy: requests by ingress, service and status
//! code, and upstream latency (time to the response head) by ingress and
//! service.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    ingress: Arc<str>,
    service: Arc<str>,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    ingress: Arc<str>,
    service: Arc<str>,
}

fn latency_histogram() -> Histogram {
    // 250 µs … ~8 s
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

/// The proxy's metrics. Cheap to clone; clones share the counters.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<UpstreamLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let mut registry = Registry::with_prefix("skiff_ingress");
        registry.register("requests", "Requests by ingress, service and status code", requests.clone());
        registry.register(
            "upstream_latency_seconds",
            "Time from sending a request upstream to its response head",
            latency.clone(),
        );
        Metrics { registry: Arc::new(registry), requests, latency }
    }

    pub(crate) fn request(&self, ingress: &Arc<str>, service: &Arc<str>, code: u16) {
        self.requests.get_or_create(&RequestLabels { ingress: ingress.clone(), service: service.clone(), code }).inc();
    }

    pub(crate) fn upstream_latency(&self, ingress: &Arc<str>, service: &Arc<str>, seconds: f64) {
        self.latency
            .get_or_create(&UpstreamLabels { ingress: ingress.clone(), service: service.clone() })
            .observe(seconds);
    }

    /// The metrics in the Prometheus text format (for a `/metrics` handler).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
