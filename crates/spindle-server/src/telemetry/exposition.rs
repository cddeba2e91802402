//! The body of `/metrics`: the registry in the OpenMetrics text format, as
//! `prometheus-client` encodes it, with trace-id exemplars on the span-duration buckets.
//!
//! Every scrape gets OpenMetrics whatever it asks for: Prometheus (2.x and later) asks for
//! it first, and `prometheus-client` writes no other text format. The classic text format
//! would need the exposition rewritten by hand; this module must not do that.

use super::Telemetry;

/// The content type of [`Telemetry::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Telemetry {
    /// The whole exposition, `# EOF` included.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use spindle_model::{SpanKind, StatusCode};

    use super::*;
    use crate::telemetry::ProtocolLabels;

    #[test]
    fn the_exposition_is_openmetrics_with_the_connector_names_and_exemplars() {
        let dir = tempfile::tempdir().unwrap();
        let telemetry = Telemetry::new(dir.path(), &crate::limits::Limits::default());
        let mut spans = spindle_workload::Workload::new(7).trace(crate::api::params::now_unix_nano());
        for span in &mut spans {
            span.kind = SpanKind::Server;
            span.status.code = StatusCode::Error;
            span.name = "checkout".into();
        }
        let service = spans[0].service_name().to_string();
        let n = spans.iter().filter(|s| s.service_name() == service).count();
        let trace = spans.last().unwrap().trace_id.to_hex();
        telemetry.record(telemetry.prepare(&spans));
        telemetry.server.spans_accepted.get_or_create(&ProtocolLabels { protocol: "otlp_grpc".into() }).inc_by(3);
        telemetry.server.storage_bytes.set(4096);

        let text = telemetry.encode().unwrap();
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        let labels = format!(
            "service_name=\"{service}\",span_name=\"checkout\",span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_ERROR\""
        );
        for line in [
            "# TYPE traces_span_metrics_calls counter".to_string(),
            format!("traces_span_metrics_calls_total{{{labels}}} {n}"),
            "# TYPE traces_span_metrics_duration_seconds histogram".to_string(),
            "# UNIT traces_span_metrics_duration_seconds seconds".to_string(),
            format!("traces_span_metrics_duration_seconds_count{{{labels}}} {n}"),
            "spindle_spans_accepted_total{protocol=\"otlp_grpc\"} 3".to_string(),
            "# TYPE spindle_storage_bytes gauge".to_string(),
            "spindle_storage_bytes 4096".to_string(),
            "# TYPE process_cpu_seconds counter".to_string(),
            "# TYPE process_resident_memory_bytes gauge".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(
            text.lines().any(|l| l.starts_with("traces_span_metrics_duration_seconds_bucket{")
                && l.contains(&format!(" # {{trace_id=\"{trace}\"}} "))),
            "a bucket carries the last span's trace as its exemplar:\n{text}"
        );
    }
}
