//! What a service asks of tracing: the builder and how it merges with `OTEL_*` variables.
//!
//! This module owns configuration only. It reads the environment through a lookup function so
//! the merge rules are tested without touching the process environment, and it starts nothing:
//! `crate::install` turns a resolved [`Settings`] into a running pipeline.
//!
//! Precedence, highest first: an explicit builder call, then the `OTEL_*` variable, then the
//! SDK default. The service name passed to [`crate::init`] is the one exception: it is a default
//! that `OTEL_SERVICE_NAME` overrides, so an operator can rename a deployment without a rebuild.

use std::path::PathBuf;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::Sampler;

use crate::error::InitError;
use crate::transport::{check_header, FileSetting, Headers, TlsFiles};

/// The header that names the tenant spans are written for (Spindle, Tempo, Mimir, Loki).
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// Default OTLP/gRPC endpoint (Spindle and every OpenTelemetry collector listen there).
pub const DEFAULT_GRPC_ENDPOINT: &str = "http://localhost:4317";
/// Default OTLP/HTTP endpoint; `/v1/traces` is appended when the path is empty.
pub const DEFAULT_HTTP_ENDPOINT: &str = "http://localhost:4318";

/// The OTLP transport spans are exported with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP over gRPC (`grpc`), port 4317 by default.
    Grpc,
    /// OTLP protobuf over HTTP (`http/protobuf`), port 4318 by default.
    HttpProtobuf,
    /// OTLP JSON over HTTP (`http/json`), port 4318 by default.
    HttpJson,
}

impl Protocol {
    /// Parses the values `OTEL_EXPORTER_OTLP_PROTOCOL` allows.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            "http/json" => Some(Self::HttpJson),
            _ => None,
        }
    }

    fn default_endpoint(self) -> &'static str {
        match self {
            Self::Grpc => DEFAULT_GRPC_ENDPOINT,
            Self::HttpProtobuf | Self::HttpJson => DEFAULT_HTTP_ENDPOINT,
        }
    }
}

/// Whether export requests are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Sent as they are (`none`, the default): on a local network or loopback, compressing
    /// costs the service more CPU than it saves.
    #[default]
    None,
    /// gzip (`gzip`), for `grpc` and `http/protobuf`.
    Gzip,
}

impl Compression {
    /// Parses the values `OTEL_EXPORTER_OTLP_COMPRESSION` allows.
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim() {
            "none" => Some(Self::None),
            "gzip" => Some(Self::Gzip),
            _ => None,
        }
    }
}

/// Which traces are recorded and exported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    /// Record every trace (`always_on`).
    AlwaysOn,
    /// Record nothing (`always_off`).
    AlwaysOff,
    /// Record this fraction of traces, chosen by trace id (`traceidratio`).
    Ratio(f64),
    /// Follow the caller's decision when there is a parent; otherwise apply the inner choice
    /// (`parentbased_*`). The default is `ParentBased(AlwaysOn)`.
    ParentBased(ParentBasedRoot),
}

/// The decision a [`SamplerConfig::ParentBased`] sampler makes for root spans.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParentBasedRoot {
    /// Sample every root.
    AlwaysOn,
    /// Sample no root.
    AlwaysOff,
    /// Sample this fraction of roots.
    Ratio(f64),
}

impl SamplerConfig {
    /// Parses `OTEL_TRACES_SAMPLER` with its `OTEL_TRACES_SAMPLER_ARG`.
    pub fn parse(name: &str, arg: Option<&str>) -> Result<Self, InitError> {
        let ratio = || -> Result<f64, InitError> {
            match arg {
                None => Ok(1.0),
                Some(text) => parse_ratio("OTEL_TRACES_SAMPLER_ARG", text),
            }
        };
        Ok(match name.trim() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::Ratio(ratio()?),
            "parentbased_always_on" => Self::ParentBased(ParentBasedRoot::AlwaysOn),
            "parentbased_always_off" => Self::ParentBased(ParentBasedRoot::AlwaysOff),
            "parentbased_traceidratio" => Self::ParentBased(ParentBasedRoot::Ratio(ratio()?)),
            other => {
                return Err(InitError::InvalidSetting {
                    name: "OTEL_TRACES_SAMPLER",
                    value: other.to_owned(),
                    reason: "expected always_on, always_off, traceidratio, parentbased_always_on, \
                             parentbased_always_off or parentbased_traceidratio"
                        .to_owned(),
                })
            }
        })
    }

    pub(crate) fn to_sampler(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBased(root) => Sampler::ParentBased(Box::new(match root {
                ParentBasedRoot::AlwaysOn => Sampler::AlwaysOn,
                ParentBasedRoot::AlwaysOff => Sampler::AlwaysOff,
                ParentBasedRoot::Ratio(r) => Sampler::TraceIdRatioBased(r),
            })),
        }
    }
}

fn parse_ratio(name: &'static str, text: &str) -> Result<f64, InitError> {
    match text.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(InitError::InvalidSetting {
            name,
            value: text.to_owned(),
            reason: "expected a number between 0 and 1".to_owned(),
        }),
    }
}

/// How log lines are written to standard output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per event, for log shippers.
    Json,
}

/// Settings of the bounded span queue and its export worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSettings {
    /// Spans waiting for export at most; further spans are dropped and counted.
    pub max_queue_size: usize,
    /// Spans sent in one export request at most.
    pub max_export_batch_size: usize,
    /// How long a partial batch waits before it is exported.
    pub scheduled_delay: Duration,
    /// How long one export may take before it is abandoned and counted as failed.
    pub export_timeout: Duration,
}

impl Default for BatchSettings {
    fn default() -> Self {
        Self {
            max_queue_size: 2048,
            max_export_batch_size: 512,
            scheduled_delay: Duration::from_secs(1),
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything the builder collects; `None` means "not set in code".
#[derive(Debug, Clone, Default)]
pub(crate) struct BuilderSettings {
    pub service_name: String,
    pub endpoint: Option<String>,
    pub protocol: Option<Protocol>,
    pub compression: Option<Compression>,
    pub sampler: Option<SamplerConfig>,
    pub resource_attributes: Vec<KeyValue>,
    pub log_filter: Option<String>,
    pub span_filter: Option<String>,
    pub log_format: LogFormat,
    pub span_details: bool,
    pub otel_context_activation: Option<bool>,
    pub max_queue_size: Option<usize>,
    pub max_export_batch_size: Option<usize>,
    pub scheduled_delay: Option<Duration>,
    pub export_timeout: Option<Duration>,
    pub shutdown_timeout: Option<Duration>,
    pub drop_log_interval: Option<Duration>,
    pub disabled: Option<bool>,
    pub ca_certificate: Option<PathBuf>,
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub headers: Headers,
    pub tenant: Option<String>,
}

/// The merged configuration the pipeline is built from.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub service_name: String,
    pub disabled: bool,
    pub protocol: Protocol,
    pub compression: Compression,
    /// The full URL the exporter sends to.
    pub endpoint: String,
    pub sampler: SamplerConfig,
    pub resource_attributes: Vec<KeyValue>,
    pub log_filter: String,
    pub span_filter: String,
    pub log_format: LogFormat,
    pub span_details: bool,
    /// Whether entering a `tracing` span also makes its OpenTelemetry context current.
    pub otel_context_activation: bool,
    pub batch: BatchSettings,
    pub shutdown_timeout: Duration,
    pub drop_log_interval: Duration,
    /// Used when the endpoint is `https://`.
    pub tls: TlsFiles,
    /// Sent with every export request, [`TENANT_HEADER`] included when a tenant is set.
    pub headers: Headers,
    pub tenant: Option<String>,
}

impl Settings {
    /// Merges builder values with the environment read through `env`.
    pub(crate) fn resolve(builder: &BuilderSettings, env: impl Fn(&str) -> Option<String>) -> Result<Self, InitError> {
        // Empty variables count as unset, as the OpenTelemetry specification asks.
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());

        let disabled = match builder.disabled {
            Some(d) => d,
            None => match env("OTEL_SDK_DISABLED") {
                None => false,
                Some(v) => parse_bool("OTEL_SDK_DISABLED", &v)?,
            },
        };
        let service_name = env("OTEL_SERVICE_NAME").unwrap_or_else(|| builder.service_name.clone());

        let protocol = match builder.protocol {
            Some(p) => p,
            None => match env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL")) {
                None => Protocol::Grpc,
                Some(v) => Protocol::parse(&v).ok_or_else(|| InitError::InvalidSetting {
                    name: "OTEL_EXPORTER_OTLP_PROTOCOL",
                    value: v.clone(),
                    reason: "expected grpc, http/protobuf or http/json".to_owned(),
                })?,
            },
        };

        let compression = match builder.compression {
            Some(c) => c,
            None => {
                match env("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION").or_else(|| env("OTEL_EXPORTER_OTLP_COMPRESSION")) {
                    None => Compression::None,
                    Some(v) => Compression::parse(&v).ok_or_else(|| InitError::InvalidSetting {
                        name: "OTEL_EXPORTER_OTLP_COMPRESSION",
                        value: v.clone(),
                        reason: "expected gzip or none".to_owned(),
                    })?,
                }
            }
        };
        if compression == Compression::Gzip && protocol == Protocol::HttpJson {
            return Err(InitError::InvalidSetting {
                name: "OTEL_EXPORTER_OTLP_COMPRESSION",
                value: "gzip".to_owned(),
                reason: "gzip is supported with grpc and http/protobuf, not http/json".to_owned(),
            });
        }

        // The per-signal variable is a complete URL; the generic one is a base to which HTTP
        // appends the signal path. A builder endpoint behaves like the generic variable.
        let endpoint = if let Some(e) = &builder.endpoint {
            base_endpoint(protocol, e)
        } else if let Some(e) = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            e
        } else if let Some(e) = env("OTEL_EXPORTER_OTLP_ENDPOINT") {
            base_endpoint(protocol, &e)
        } else {
            base_endpoint(protocol, protocol.default_endpoint())
        };

        let sampler = match builder.sampler {
            Some(s) => s,
            None => match env("OTEL_TRACES_SAMPLER") {
                Some(name) => SamplerConfig::parse(&name, env("OTEL_TRACES_SAMPLER_ARG").as_deref())?,
                None => SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOn),
            },
        };
        if let SamplerConfig::Ratio(r) | SamplerConfig::ParentBased(ParentBasedRoot::Ratio(r)) = sampler {
            if !(0.0..=1.0).contains(&r) {
                return Err(InitError::InvalidSetting {
                    name: "sampler",
                    value: r.to_string(),
                    reason: "a ratio must lie between 0 and 1".to_owned(),
                });
            }
        }

        let defaults = BatchSettings::default();
        let batch = BatchSettings {
            max_queue_size: pick(builder.max_queue_size, &env, "OTEL_BSP_MAX_QUEUE_SIZE")?
                .unwrap_or(defaults.max_queue_size),
            max_export_batch_size: pick(builder.max_export_batch_size, &env, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")?
                .unwrap_or(defaults.max_export_batch_size),
            scheduled_delay: pick_millis(builder.scheduled_delay, &env, "OTEL_BSP_SCHEDULE_DELAY")?
                .unwrap_or(defaults.scheduled_delay),
            export_timeout: pick_millis(builder.export_timeout, &env, "OTEL_BSP_EXPORT_TIMEOUT")?
                .unwrap_or(defaults.export_timeout),
        };
        if batch.max_queue_size == 0 || batch.max_export_batch_size == 0 {
            return Err(InitError::InvalidSetting {
                name: "max_queue_size",
                value: format!("{}/{}", batch.max_queue_size, batch.max_export_batch_size),
                reason: "queue and batch sizes must be positive".to_owned(),
            });
        }

        // Builder, then the per-signal variable, then the generic one, as for the endpoint.
        let file = |explicit: &Option<PathBuf>, method: &'static str, traces: &'static str, generic: &'static str| {
            if let Some(path) = explicit {
                return Some(FileSetting { path: path.clone(), source: method });
            }
            env(traces)
                .map(|v| FileSetting { path: v.into(), source: traces })
                .or_else(|| env(generic).map(|v| FileSetting { path: v.into(), source: generic }))
        };
        let tls = TlsFiles {
            ca: file(
                &builder.ca_certificate,
                "ca_certificate",
                "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
            ),
            client_certificate: file(
                &builder.client_certificate,
                "client_certificate",
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            ),
            client_key: file(
                &builder.client_key,
                "client_key",
                "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            ),
        };
        if let (Some(given), None) | (None, Some(given)) = (&tls.client_certificate, &tls.client_key) {
            return Err(InitError::InvalidSetting {
                name: given.source,
                value: given.path.display().to_string(),
                reason: "a client certificate and its key are set together".to_owned(),
            });
        }

        // Generic, then per-signal, then builder: each wins per header name over the one before.
        let mut headers = Headers::default();
        for variable in ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            if let Some(text) = env(variable) {
                headers.extend(Headers::parse(variable, &text)?);
            }
        }
        for (name, value) in builder.headers.iter() {
            check_header("header", name, value)?;
            headers.set(name, value.to_owned());
        }
        let tenant = match &builder.tenant {
            Some(t) => Some(("tenant", t.clone())),
            None => env("SPINDLE_TENANT").map(|t| ("SPINDLE_TENANT", t.trim().to_owned())),
        };
        let tenant = match tenant {
            None => None,
            Some((setting, name)) => {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(InitError::InvalidSetting {
                        name: setting,
                        value: name,
                        reason: "a tenant is a non-empty name of printable ASCII without spaces".to_owned(),
                    });
                }
                headers.set(TENANT_HEADER, name.clone());
                Some(name)
            }
        };

        Ok(Self {
            service_name,
            disabled,
            protocol,
            compression,
            endpoint,
            sampler,
            resource_attributes: builder.resource_attributes.clone(),
            log_filter: builder.log_filter.clone().or_else(|| env("RUST_LOG")).unwrap_or_else(|| "info".to_owned()),
            span_filter: builder.span_filter.clone().unwrap_or_else(|| "info".to_owned()),
            log_format: builder.log_format,
            span_details: builder.span_details,
            otel_context_activation: builder.otel_context_activation.unwrap_or(false),
            batch,
            shutdown_timeout: builder.shutdown_timeout.unwrap_or(Duration::from_secs(5)),
            drop_log_interval: builder.drop_log_interval.unwrap_or(Duration::from_secs(10)),
            tls,
            headers,
            tenant,
        })
    }
}

/// Appends `/v1/traces` to an HTTP base URL that has no path; gRPC URLs stay as given.
fn base_endpoint(protocol: Protocol, endpoint: &str) -> String {
    match protocol {
        Protocol::Grpc => endpoint.to_owned(),
        Protocol::HttpProtobuf | Protocol::HttpJson => {
            let trimmed = endpoint.trim_end_matches('/');
            let after_scheme = trimmed.split_once("://").map_or(trimmed, |(_, rest)| rest);
            if after_scheme.contains('/') {
                trimmed.to_owned()
            } else {
                format!("{trimmed}/v1/traces")
            }
        }
    }
}

fn parse_bool(name: &'static str, value: &str) -> Result<bool, InitError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(InitError::InvalidSetting {
            name,
            value: value.to_owned(),
            reason: "expected true or false".to_owned(),
        }),
    }
}

fn pick(
    explicit: Option<usize>,
    env: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<usize>, InitError> {
    if explicit.is_some() {
        return Ok(explicit);
    }
    env(name)
        .map(|v| {
            v.trim().parse::<usize>().map_err(|e| InitError::InvalidSetting {
                name,
                value: v.clone(),
                reason: e.to_string(),
            })
        })
        .transpose()
}

fn pick_millis(
    explicit: Option<Duration>,
    env: &impl Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<Option<Duration>, InitError> {
    if explicit.is_some() {
        return Ok(explicit);
    }
    Ok(pick(None, env, name)?.map(|ms| Duration::from_millis(ms as u64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(builder: &BuilderSettings, vars: &[(&str, &str)]) -> Result<Settings, InitError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Settings::resolve(builder, |k| map.get(k).cloned())
    }

    fn named(name: &str) -> BuilderSettings {
        BuilderSettings { service_name: name.to_owned(), ..BuilderSettings::default() }
    }

    #[test]
    fn defaults_are_grpc_to_localhost_with_parent_based_always_on() {
        let s = resolve(&named("svc"), &[]).expect("defaults resolve");
        assert_eq!(s.service_name, "svc");
        assert!(!s.disabled);
        assert_eq!(s.protocol, Protocol::Grpc);
        assert_eq!(s.endpoint, "http://localhost:4317");
        assert_eq!(s.sampler, SamplerConfig::ParentBased(ParentBasedRoot::AlwaysOn));
        assert_eq!(s.batch, BatchSettings::default());
        assert_eq!(s.log_filter, "info");
    }

    #[test]
    fn otel_service_name_overrides_the_name_given_in_code() {
        let s = resolve(&named("svc"), &[("OTEL_SERVICE_NAME", "renamed")]).expect("resolves");
        assert_eq!(s.service_name, "renamed");
        let s = resolve(&named("svc"), &[("OTEL_SERVICE_NAME", "  ")]).expect("resolves");
        assert_eq!(s.service_name, "svc", "an empty variable counts as unset");
    }

    #[test]
    fn sdk_disabled_accepts_true_and_rejects_garbage() {
        assert!(resolve(&named("s"), &[("OTEL_SDK_DISABLED", "true")]).expect("ok").disabled);
        assert!(resolve(&named("s"), &[("OTEL_SDK_DISABLED", "TRUE")]).expect("ok").disabled);
        assert!(!resolve(&named("s"), &[("OTEL_SDK_DISABLED", "false")]).expect("ok").disabled);
        let err = resolve(&named("s"), &[("OTEL_SDK_DISABLED", "maybe")]).expect_err("rejects");
        assert!(err.to_string().contains("OTEL_SDK_DISABLED"), "{err}");
        let b = BuilderSettings { disabled: Some(false), ..named("s") };
        assert!(!resolve(&b, &[("OTEL_SDK_DISABLED", "true")]).expect("ok").disabled);
    }

    #[test]
    fn http_endpoints_get_the_traces_path_unless_per_signal() {
        let http = |vars: &[(&str, &str)]| {
            let b = BuilderSettings { protocol: Some(Protocol::HttpProtobuf), ..named("s") };
            resolve(&b, vars).expect("resolves").endpoint
        };
        assert_eq!(http(&[]), "http://localhost:4318/v1/traces");
        assert_eq!(
            http(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(http(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9/custom")]), "http://c:9/custom");
        let b = BuilderSettings {
            protocol: Some(Protocol::HttpJson),
            endpoint: Some("http://127.0.0.1:1".into()),
            ..named("s")
        };
        let s = resolve(&b, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:2")]).expect("ok");
        assert_eq!(s.endpoint, "http://127.0.0.1:1/v1/traces");
    }

    #[test]
    fn protocol_comes_from_the_environment_when_not_set_in_code() {
        let s = resolve(&named("s"), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).expect("ok");
        assert_eq!(s.protocol, Protocol::HttpJson);
        assert_eq!(s.endpoint, "http://localhost:4318/v1/traces");
        let err = resolve(&named("s"), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")]).expect_err("rejects");
        assert!(err.to_string().contains("carrier-pigeon"), "{err}");
    }

    #[test]
    fn compression_from_builder_then_variables() {
        assert_eq!(resolve(&named("s"), &[]).expect("ok").compression, Compression::None);
        let s = resolve(&named("s"), &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]).expect("ok");
        assert_eq!(s.compression, Compression::Gzip);
        let s = resolve(
            &named("s"),
            &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"), ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none")],
        )
        .expect("ok");
        assert_eq!(s.compression, Compression::None, "the per-signal variable wins");
        let b = BuilderSettings { compression: Some(Compression::None), ..named("s") };
        let s = resolve(&b, &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]).expect("ok");
        assert_eq!(s.compression, Compression::None, "the builder wins");
        let err = resolve(&named("s"), &[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]).expect_err("rejects");
        assert!(err.to_string().contains("zstd"), "{err}");
        let b = BuilderSettings { protocol: Some(Protocol::HttpJson), ..named("s") };
        let err = resolve(&b, &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]).expect_err("json has no gzip");
        assert!(err.to_string().contains("http/json"), "{err}");
    }

    #[test]
    fn samplers_parse_from_the_environment() {
        let sampler = |name: &str, arg: Option<&str>| {
            let mut vars = vec![("OTEL_TRACES_SAMPLER", name)];
            if let Some(a) = arg {
                vars.push(("OTEL_TRACES_SAMPLER_ARG", a));
            }
            resolve(&named("s"), &vars).map(|s| s.sampler)
        };
        assert_eq!(sampler("always_off", None).expect("ok"), SamplerConfig::AlwaysOff);
        assert_eq!(sampler("traceidratio", Some("0.25")).expect("ok"), SamplerConfig::Ratio(0.25));
        assert_eq!(
            sampler("parentbased_traceidratio", Some("0.5")).expect("ok"),
            SamplerConfig::ParentBased(ParentBasedRoot::Ratio(0.5))
        );
        assert!(sampler("traceidratio", Some("1.5")).is_err());
        assert!(sampler("sometimes", None).is_err());
        let b = BuilderSettings { sampler: Some(SamplerConfig::AlwaysOn), ..named("s") };
        let s = resolve(&b, &[("OTEL_TRACES_SAMPLER", "always_off")]).expect("ok");
        assert_eq!(s.sampler, SamplerConfig::AlwaysOn, "the builder wins over the environment");
    }

    #[test]
    fn batch_settings_come_from_bsp_variables() {
        let s = resolve(
            &named("s"),
            &[
                ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
                ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "10"),
                ("OTEL_BSP_SCHEDULE_DELAY", "250"),
                ("OTEL_BSP_EXPORT_TIMEOUT", "3000"),
            ],
        )
        .expect("ok");
        assert_eq!(
            s.batch,
            BatchSettings {
                max_queue_size: 100,
                max_export_batch_size: 10,
                scheduled_delay: Duration::from_millis(250),
                export_timeout: Duration::from_secs(3),
            }
        );
        assert!(resolve(&named("s"), &[("OTEL_BSP_MAX_QUEUE_SIZE", "lots")]).is_err());
        assert!(resolve(&named("s"), &[("OTEL_BSP_MAX_QUEUE_SIZE", "0")]).is_err());
    }
    #[test]
    fn tls_files_come_from_builder_then_traces_then_generic_variables() {
        let s = resolve(&named("s"), &[]).expect("ok");
        assert!(s.tls.is_empty());
        let vars = [
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic/ca.pem"),
            ("OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE", "/traces/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/generic/client.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/generic/client.key"),
        ];
        let s = resolve(&named("s"), &vars).expect("ok");
        let ca = s.tls.ca.expect("ca");
        assert_eq!((ca.path.to_str(), ca.source), (Some("/traces/ca.pem"), "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE"));
        let cert = s.tls.client_certificate.expect("cert");
        assert_eq!(cert.path.to_str(), Some("/generic/client.pem"));
        assert_eq!(s.tls.client_key.expect("key").source, "OTEL_EXPORTER_OTLP_CLIENT_KEY");
        let b = BuilderSettings { ca_certificate: Some("/code/ca.pem".into()), ..named("s") };
        let ca = resolve(&b, &vars).expect("ok").tls.ca.expect("ca");
        assert_eq!((ca.path.to_str(), ca.source), (Some("/code/ca.pem"), "ca_certificate"));
    }

    #[test]
    fn a_client_certificate_without_its_key_is_refused() {
        let err = resolve(&named("s"), &[("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/c.pem")]).expect_err("no key");
        assert!(err.to_string().contains("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"), "{err}");
        let b = BuilderSettings { client_key: Some("/k.pem".into()), ..named("s") };
        let err = resolve(&b, &[]).expect_err("no certificate");
        assert!(err.to_string().contains("client_key"), "{err}");
    }

    #[test]
    fn headers_merge_generic_then_traces_then_builder_per_name() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20generic,x-a=1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "Authorization=Bearer%20traces,x-b=2"),
        ];
        let s = resolve(&named("s"), &vars).expect("ok");
        assert_eq!(s.headers.get("authorization"), Some("Bearer traces"), "the per-signal variable wins per key");
        assert_eq!(s.headers.get("x-a"), Some("1"), "keys of the generic variable stay");
        assert_eq!(s.headers.get("x-b"), Some("2"));
        let mut b = named("s");
        b.headers.set("X-A", "code".to_owned());
        let s = resolve(&b, &vars).expect("ok");
        assert_eq!(s.headers.get("x-a"), Some("code"), "the builder wins");
        let mut b = named("s");
        b.headers.set("x-a", "caf\u{e9}".to_owned());
        assert!(resolve(&b, &[]).is_err(), "a value that is no header value is refused");
        let err = resolve(&named("s"), &[("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "token")]).expect_err("no =");
        assert!(err.to_string().contains("OTEL_EXPORTER_OTLP_TRACES_HEADERS"), "{err}");
    }

    #[test]
    fn a_tenant_becomes_the_x_scope_orgid_header() {
        assert_eq!(resolve(&named("s"), &[]).expect("ok").headers.get(TENANT_HEADER), None);
        let vars = [("SPINDLE_TENANT", " team-a "), ("OTEL_EXPORTER_OTLP_HEADERS", "x-scope-orgid=other")];
        let s = resolve(&named("s"), &vars).expect("ok");
        assert_eq!(s.tenant.as_deref(), Some("team-a"));
        assert_eq!(s.headers.get("x-scope-orgid"), Some("team-a"), "the tenant setting wins over a header");
        let b = BuilderSettings { tenant: Some("team-b".into()), ..named("s") };
        assert_eq!(resolve(&b, &vars).expect("ok").headers.get(TENANT_HEADER), Some("team-b"));
        for bad in ["", "two words", "caf\u{e9}"] {
            let b = BuilderSettings { tenant: Some(bad.into()), ..named("s") };
            let err = resolve(&b, &[]).expect_err(bad);
            assert!(err.to_string().contains("tenant"), "{err}");
        }
    }
}
