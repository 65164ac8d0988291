//! Logs and traces. [`init`] installs the process's tracing subscriber: log lines on stderr
//! (pretty or JSON, filtered by `RUST_LOG`) and, when the standard `OTEL_*` variables name an
//! OTLP endpoint, OpenTelemetry traces exported over OTLP/HTTP by a batch processor on a
//! thread of its own. [`join_remote_trace`] and [`inject_current`] carry W3C trace context
//! into requests and out of outgoing calls.

mod propagation;
mod settings;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use propagation::{
    current_trace_id, inject_current, join_remote_trace, remote_trace_id, trace_id_of,
};
pub use settings::{SettingsError, Traces, traces};

/// The `service.name` of exported spans unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const SERVICE_NAME: &str = "tenant-registry";

/// Set once [`init`] has installed trace export.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports spans: what only an exported span needs (its name in a
/// trace) can be skipped on the hot path otherwise.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For a terminal.
    Pretty,
    /// One JSON object per line, with the fields of the spans it was written in.
    Json,
}

/// Why the subscriber could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// An `OTEL_*` setting this build cannot honour.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The exporter refused its settings (an endpoint that is not a URL, a bad header).
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    /// Another subscriber was installed first.
    #[error("a tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// The installed subscriber's trace export; dropping it exports the spans still queued.
#[must_use = "dropping it ends trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exports_traces(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("warning: the last spans could not be exported: {error}");
        }
    }
}

/// Installs the subscriber: logs in `format` and trace export as the `OTEL_*` variables ask,
/// both filtered by `RUST_LOG` (else `default_filter`): a span or event it leaves out is
/// neither logged nor exported.
pub fn init(format: LogFormat, default_filter: &str) -> Result<Telemetry, InitError> {
    let traces = settings::traces(|name| std::env::var(name).ok())?;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Logs go to stderr so that stdout carries only a command's answer (a new key).
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Pretty => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    };
    let provider = match traces {
        Traces::Off => None,
        Traces::Otlp(protocol) => Some(provider(protocol)?),
    };
    let spans = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(SERVICE_NAME)));
    // One filter for both layers: with a filter per layer (tracing-subscriber 0.3.23) some
    // events were dropped for both, the server's "serving" line among them.
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(spans)
        .try_init()
        .map_err(|_| InitError::AlreadyInstalled)?;
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    Ok(Telemetry { provider })
}

/// A provider exporting over OTLP/HTTP; the exporter reads the endpoint, headers, timeout and
/// compression variables, the SDK the sampler (`OTEL_TRACES_SAMPLER`), batch (`OTEL_BSP_*`)
/// and resource (`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_SERVICE_NAME`) ones.
fn provider(protocol: opentelemetry_otlp::Protocol) -> Result<SdkTracerProvider, InitError> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()
        .map_err(|error| InitError::Exporter(error.to_string()))?;
    let detected = Resource::builder().build();
    let named = detected
        .get(&opentelemetry::Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let resource = if named {
        detected
    } else {
        Resource::builder().with_service_name(SERVICE_NAME).build()
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
