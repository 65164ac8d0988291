//! An OpenTelemetry collector's trace endpoint on loopback for tests: it accepts OTLP/HTTP
//! exports (`POST /v1/traces`, protobuf), decodes them with the protocol's own generated
//! types and keeps every span, so a test reads what a real collector would receive.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use prost::Message as _;
use tokio::sync::Notify;

/// Span kinds as OTLP numbers them.
pub const SERVER: i32 = 2;
/// A client span (an outgoing call).
pub const CLIENT: i32 = 3;

/// One span as the collector received it; ids in lowercase hex, as `traceparent` writes them.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The trace's id (32 hex digits).
    pub trace_id: String,
    /// The span's id (16 hex digits).
    pub span_id: String,
    /// The parent's span id; empty for a root span.
    pub parent_span_id: String,
    /// The span's name.
    pub name: String,
    /// [`SERVER`], [`CLIENT`], or another OTLP kind.
    pub kind: i32,
    /// Its attributes, each value written as text.
    pub attributes: BTreeMap<String, String>,
    /// The exporting process's `service.name`.
    pub service_name: Option<String>,
}

#[derive(Default)]
struct Collected {
    spans: Mutex<Vec<ReceivedSpan>>,
    arrived: Notify,
}

/// The receiver; stops serving when dropped.
pub struct OtlpReceiver {
    endpoint: String,
    collected: Arc<Collected>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl OtlpReceiver {
    /// Starts serving on a free loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().expect("its address"));
        let collected = Arc::new(Collected::default());
        let router = Router::new()
            .route("/v1/traces", post(export))
            .with_state(Arc::clone(&collected));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self {
            endpoint,
            collected,
            server,
        }
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT` takes it.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collected.spans.lock().expect("the spans").clone()
    }

    /// The first span received matching `wanted`, waiting up to `within` for it.
    pub async fn wait_for(
        &self,
        within: Duration,
        wanted: impl Fn(&ReceivedSpan) -> bool,
    ) -> Option<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.collected.arrived.notified();
            if let Some(found) = self.spans().into_iter().find(|span| wanted(span)) {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }
}

async fn export(
    State(collected): State<Arc<Collected>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let protobuf = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == b"application/x-protobuf");
    if !protobuf {
        return StatusCode::UNSUPPORTED_MEDIA_TYPE;
    }
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return StatusCode::BAD_REQUEST;
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let service_name = resource_spans.resource.and_then(|resource| {
            resource
                .attributes
                .iter()
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| text(attribute.value.as_ref()))
        });
        for span in resource_spans
            .scope_spans
            .into_iter()
            .flat_map(|scope| scope.spans)
        {
            received.push(ReceivedSpan {
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent_span_id: hex::encode(&span.parent_span_id),
                name: span.name,
                kind: span.kind,
                attributes: attributes(&span.attributes),
                service_name: service_name.clone(),
            });
        }
    }
    collected.spans.lock().expect("the spans").extend(received);
    collected.arrived.notify_waiters();
    // An empty ExportTraceServiceResponse encodes as no bytes.
    StatusCode::OK
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .filter_map(|pair| Some((pair.key.clone(), text(pair.value.as_ref())?)))
        .collect()
}

fn text(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        Value::StringValue(text) => Some(text.clone()),
        Value::IntValue(number) => Some(number.to_string()),
        Value::BoolValue(flag) => Some(flag.to_string()),
        Value::DoubleValue(number) => Some(number.to_string()),
        _ => None,
    }
}
