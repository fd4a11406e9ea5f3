//! Prometheus metrics, served at `/metrics` in the text exposition format: requests by route and
//! status, the writer's batch sizes (how much group commit is saving), and the refused requests
//! without a session (counted here, audited once per source per minute).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    door: String,
    code: String,
}

#[derive(Debug)]
struct Inner {
    anonymous_refusals: Family<RefusalLabels, Counter>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    batch_size: Histogram,
    batch_seconds: Histogram,
    audit_rows: Counter,
}

/// The server's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics(Arc<Inner>);

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("agentkeys");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register("writer_batch_size", "Jobs committed per writer transaction", batch_size.clone());
        let batch_seconds = Histogram::new(exponential_buckets(0.000_125, 2.0, 12));
        registry.register(
            "writer_batch_seconds",
            "Time to apply and commit one writer transaction",
            batch_seconds.clone(),
        );
        let audit_rows = Counter::default();
        registry.register("audit_rows", "Audit rows appended", audit_rows.clone());
        let anonymous_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "anonymous_refusals",
            "Requests without a session refused, by door and code (audited once per source per minute)",
            anonymous_refusals.clone(),
        );
        Self(Arc::new(Inner { anonymous_refusals, registry, requests, batch_size, batch_seconds, audit_rows }))
    }
}

impl Metrics {
    pub fn record_request(&self, route: &str, method: &str, status: u16) {
        self.0
            .requests
            .get_or_create(&RequestLabels { route: route.to_owned(), method: method.to_owned(), status })
            .inc();
    }

    pub fn record_batch(&self, jobs: usize, took: std::time::Duration) {
        self.0.batch_size.observe(jobs as f64);
        self.0.batch_seconds.observe(took.as_secs_f64());
        self.0.audit_rows.inc_by(jobs as u64);
    }

    pub fn record_anonymous_refusal(&self, door: &str, code: &str) {
        self.0.anonymous_refusals.get_or_create(&RefusalLabels { door: door.to_owned(), code: code.to_owned() }).inc();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.0.registry).expect("writing to a String cannot fail");
        out
    }
}
