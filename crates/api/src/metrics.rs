//! Prometheus metrics: requests by method, route template and status, their latency, the
//! pool's connections, credentials checked, authentication failures by reason, and webhook
//! deliveries by outcome with the queue's depth and age, provisioning steps by product, step
//! and outcome with their duration and the queue's depth.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;

/// A request's labels, made without allocating: the method and the matched route template
/// are already held by the request (a standard method is a tag, the template an `Arc`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: MethodLabel,
    route: RouteLabel,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq)]
struct MethodLabel(axum::http::Method);

impl EncodeLabelValue for MethodLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.0.as_str(), encoder)
    }
}

/// The route template, or `unmatched` for a request no route took.
#[derive(Debug, Clone)]
struct RouteLabel(Option<MatchedPath>);

impl RouteLabel {
    fn as_str(&self) -> &str {
        self.0.as_ref().map_or("unmatched", MatchedPath::as_str)
    }
}

impl PartialEq for RouteLabel {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RouteLabel {}

impl std::hash::Hash for RouteLabel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for RouteLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    product: String,
    step: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepKindLabels {
    product: String,
    step: &'static str,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The service's metrics and the registry they are exposed from.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    auth_failures: Family<ReasonLabels, Counter>,
    credential_checks: Counter,
    pool_connections: Family<StateLabels, Gauge>,
    webhook_attempts: Family<OutcomeLabels, Counter>,
    webhook_queue_depth: Gauge,
    webhook_oldest_pending: Gauge,
    provisioning_steps: Family<StepLabels, Counter>,
    provisioning_duration: Family<StepKindLabels, Histogram, fn() -> Histogram>,
    provisioning_queue_depth: Gauge,
}

fn latency_histogram() -> Histogram {
    // 1 ms to about 16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tenant_registry");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        let credential_checks = Counter::default();
        let pool_connections = Family::<StateLabels, Gauge>::default();
        registry.register("http_requests", "HTTP requests handled", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to produce a response",
            latency.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed authentications by reason",
            auth_failures.clone(),
        );
        registry.register(
            "auth_credential_checks",
            "Credentials checked: an API key against its hash, or a token against its issuer's keys",
            credential_checks.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database pool connections by state (in_use, idle)",
            pool_connections.clone(),
        );
        let webhook_attempts = Family::<OutcomeLabels, Counter>::default();
        let webhook_queue_depth = Gauge::default();
        let webhook_oldest_pending = Gauge::default();
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by outcome (delivered, gone, failed)",
            webhook_attempts.clone(),
        );
        registry.register(
            "webhook_queue_depth",
            "Webhook deliveries waiting to be made (enabled endpoints)",
            webhook_queue_depth.clone(),
        );
        registry.register(
            "webhook_oldest_pending_seconds",
            "Age of the oldest webhook delivery still waiting, 0 when none waits",
            webhook_oldest_pending.clone(),
        );
        let provisioning_steps = Family::<StepLabels, Counter>::default();
        let provisioning_duration: Family<StepKindLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let provisioning_queue_depth = Gauge::default();
        registry.register(
            "provisioning_steps",
            "Provisioning steps by product, step and outcome (succeeded, waiting, failed)",
            provisioning_steps.clone(),
        );
        registry.register(
            "provisioning_step_duration_seconds",
            "Time a provisioning step took, by product and step",
            provisioning_duration.clone(),
        );
        registry.register(
            "provisioning_queue_depth",
            "Provisioning runs with work to do (pending, running, deprovisioning)",
            provisioning_queue_depth.clone(),
        );
        Self {
            registry,
            provisioning_steps,
            provisioning_duration,
            provisioning_queue_depth,
            requests,
            latency,
            auth_failures,
            credential_checks,
            pool_connections,
            webhook_attempts,
            webhook_queue_depth,
            webhook_oldest_pending,
        }
    }
}

impl Metrics {
    /// Counts a failed authentication.
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Counts a credential checked (at most once per request).
    pub fn credential_checked(&self) {
        self.credential_checks.inc();
    }

    /// Sets the webhook queue gauges from `depth`, read at `now`.
    pub fn webhook_queue(
        &self,
        depth: &storage::webhooks::deliveries::QueueDepth,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        self.webhook_queue_depth.set(depth.pending);
        let age = depth
            .oldest_created_at
            .map_or(0, |oldest| (now - oldest).num_seconds().max(0));
        self.webhook_oldest_pending.set(age);
    }

    /// The metrics in the OpenMetrics text format, with the pool read now.
    pub fn render(&self, pool: &storage::PgPool) -> String {
        let size = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        self.pool_connections
            .get_or_create(&StateLabels { state: "in_use" })
            .set(size - idle);
        self.pool_connections
            .get_or_create(&StateLabels { state: "idle" })
            .set(idle);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl provisioner::Observer for Metrics {
    fn step(&self, report: &provisioner::StepReport) {
        self.provisioning_steps
            .get_or_create(&StepLabels {
                product: report.product.clone(),
                step: report.step,
                outcome: report.outcome,
            })
            .inc();
        self.provisioning_duration
            .get_or_create(&StepKindLabels {
                product: report.product.clone(),
                step: report.step,
            })
            .observe(report.duration.as_secs_f64());
    }

    fn queue_depth(&self, depth: i64) {
        self.provisioning_queue_depth.set(depth);
    }
}

/// Records each routed request under its route template (never the raw path, which would
/// make one series per tenant id).
pub async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = MethodLabel(request.method().clone());
    let route = RouteLabel(request.extensions().get::<MatchedPath>().cloned());
    let response = next.run(request).await;
    let labels = RequestLabels {
        method,
        route,
        status: response.status().as_u16(),
    };
    let metrics: &Arc<Metrics> = &state.metrics;
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

impl webhooks::Observer for Metrics {
    fn delivered(&self, delivered: &webhooks::deliver::Delivered) {
        self.webhook_attempts
            .get_or_create(&OutcomeLabels {
                outcome: delivered.attempt.outcome.label(),
            })
            .inc();
    }
}
