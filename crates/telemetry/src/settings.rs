//! Whether traces are exported, and how, from the standard `OTEL_*` variables: read here
//! rather than left to the exporter so that a setting this build cannot honour (gRPC, another
//! exporter) stops the start with a message instead of silently exporting nothing.

use opentelemetry_otlp::Protocol;

/// What the environment asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traces {
    /// No endpoint set, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    Off,
    /// Export over OTLP/HTTP with this encoding; the exporter reads the endpoint, headers,
    /// timeout and compression variables itself.
    Otlp(Protocol),
}

/// A setting that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "{variable}={value}: this build exports OTLP over HTTP only; use http/protobuf or http/json (the collector's port 4318)"
    )]
    /// A protocol other than OTLP over HTTP.
    Protocol {
        /// The variable that named it.
        variable: &'static str,
        /// What it said.
        value: String,
    },
    /// An exporter other than OTLP.
    #[error("OTEL_TRACES_EXPORTER={0}: only otlp (or none) is built in")]
    Exporter(String),
}

/// Reads the settings through `var` (the process environment in production).
pub fn traces(var: impl Fn(&str) -> Option<String>) -> Result<Traces, SettingsError> {
    let set = |name: &str| var(name).filter(|value| !value.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
        return Ok(Traces::Off);
    }
    match set("OTEL_TRACES_EXPORTER").map(|value| value.trim().to_ascii_lowercase()) {
        None => {}
        Some(exporter) if exporter == "otlp" => {}
        Some(exporter) if exporter == "none" => return Ok(Traces::Off),
        Some(exporter) => return Err(SettingsError::Exporter(exporter)),
    }
    if set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none()
        && set("OTEL_EXPORTER_OTLP_ENDPOINT").is_none()
    {
        return Ok(Traces::Off);
    }
    let (variable, value) = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .into_iter()
    .find_map(|variable| set(variable).map(|value| (variable, value)))
    .unwrap_or(("", "http/protobuf".to_owned()));
    match value.trim() {
        "http/protobuf" => Ok(Traces::Otlp(Protocol::HttpBinary)),
        "http/json" => Ok(Traces::Otlp(Protocol::HttpJson)),
        _ => Err(SettingsError::Protocol { variable, value }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn traces_with(pairs: &[(&str, &str)]) -> Result<Traces, SettingsError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        traces(|name| env.get(name).cloned())
    }

    #[test]
    fn traces_are_off_without_an_endpoint() {
        assert_eq!(traces_with(&[]), Ok(Traces::Off));
        assert_eq!(
            traces_with(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]),
            Ok(Traces::Off)
        );
    }

    #[test]
    fn an_endpoint_turns_protobuf_export_on() {
        for variable in [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ] {
            assert_eq!(
                traces_with(&[(variable, "http://collector:4318")]),
                Ok(Traces::Otlp(Protocol::HttpBinary))
            );
        }
    }

    #[test]
    fn the_traces_protocol_wins_over_the_general_one() {
        assert_eq!(
            traces_with(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            ]),
            Ok(Traces::Otlp(Protocol::HttpJson))
        );
    }

    #[test]
    fn rejects_grpc_naming_the_variable() {
        let refused = traces_with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .expect_err("grpc is not built in");
        assert!(
            refused
                .to_string()
                .starts_with("OTEL_EXPORTER_OTLP_PROTOCOL=grpc:"),
            "{refused}"
        );
    }

    #[test]
    fn rejects_an_exporter_that_is_not_built_in() {
        assert_eq!(
            traces_with(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_TRACES_EXPORTER", "zipkin"),
            ]),
            Err(SettingsError::Exporter("zipkin".into()))
        );
    }

    #[test]
    fn disabled_sdk_or_none_exporter_turns_traces_off() {
        for off in [
            ("OTEL_SDK_DISABLED", "TRUE"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ] {
            assert_eq!(
                traces_with(&[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                    off
                ]),
                Ok(Traces::Off)
            );
        }
    }
}
