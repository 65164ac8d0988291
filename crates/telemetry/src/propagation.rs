//! W3C trace context (`traceparent`, `tracestate`) in and out. A request joins the trace its
//! caller names; an outgoing call names the trace of the span it runs in. Without trace
//! export there are no spans of ours to name, but a caller's trace id is still reported, so
//! a problem answer and the log lines can be matched with the caller's own trace.

use std::sync::LazyLock;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// The id of the trace `headers` name, if they name a valid one.
pub fn remote_trace_id(headers: &HeaderMap) -> Option<String> {
    let remote = PROPAGATOR.extract(&HeaderExtractor(headers));
    let context = remote.span().span_context().clone();
    context.is_valid().then(|| context.trace_id().to_string())
}

/// Makes `span`, a request's span just created, a child of the trace `headers` name, and
/// answers the id of the trace it is in: its own when traces are exported (a new trace when
/// the caller named none), else the caller's.
pub fn join_remote_trace(span: &Span, headers: &HeaderMap) -> Option<String> {
    let remote_id = remote_trace_id(headers);
    if remote_id.is_some() {
        let remote = PROPAGATOR.extract(&HeaderExtractor(headers));
        // Without the OpenTelemetry layer there is no parent to set: that is the only error.
        let _ = span.set_parent(remote);
    }
    trace_id_of(span).or(remote_id)
}

/// The trace id of `span` when traces are exported.
pub fn trace_id_of(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The trace id of the span the caller runs in, when traces are exported.
pub fn current_trace_id() -> Option<String> {
    trace_id_of(&Span::current())
}

/// Adds `traceparent` (and `tracestate`) naming the current span to `headers`, for an
/// outgoing call; nothing when traces are not exported.
pub fn inject_current(headers: &mut HeaderMap) {
    let context = Span::current().context();
    if context.span().span_context().is_valid() {
        PROPAGATOR.inject_context(&context, &mut HeaderInjector(headers));
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers_with(traceparent: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_str(traceparent).expect("a header value"),
        );
        headers
    }

    #[test]
    fn reads_the_callers_trace_id() {
        assert_eq!(
            remote_trace_id(&headers_with(TRACEPARENT)).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn ignores_a_malformed_or_all_zero_traceparent() {
        for broken in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(remote_trace_id(&headers_with(broken)), None, "{broken}");
        }
        assert_eq!(remote_trace_id(&HeaderMap::new()), None);
    }

    #[test]
    fn without_export_a_request_reports_its_callers_trace() {
        let span = tracing::info_span!("request");
        assert_eq!(
            join_remote_trace(&span, &headers_with(TRACEPARENT)).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn without_export_nothing_is_injected() {
        let mut headers = HeaderMap::new();
        inject_current(&mut headers);
        assert!(headers.is_empty());
    }
}
