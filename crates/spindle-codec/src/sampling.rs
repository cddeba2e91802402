//! Jaeger remote sampling: the strategies file format in, the `SamplingStrategyResponse`
//! out, both as current Jaeger (v2.16+) handles them.
//!
//! The file (`default_strategy`, `service_strategies`, each with `type` `probabilistic` or
//! `ratelimiting`, `param`, and optional per-operation `operation_strategies`) is resolved
//! once into one response per service, with Jaeger's rules:
//! - a service without its own per-operation strategies inherits the default strategy's,
//!   with its own probabilistic rate as `defaultSamplingProbability`;
//! - a service with its own gets the default's appended for operations it does not name;
//! - per-operation strategies are probabilistic only: a `ratelimiting` one is left out with
//!   a warning, so that operation falls back to `defaultSamplingProbability`;
//! - an unknown `type` becomes the default probabilistic strategy, with a warning.
//!
//! Responses are prost messages (`jaeger.api_v2` `sampling.proto`, for the gRPC
//! `SamplingManager`) and render to the JSON Jaeger serves on `/sampling`: string enums,
//! zero values emitted, absent strategies left out, numbers formatted as Go formats them.
//! Reading the file and reloading it on change belong to the server; this module does no IO.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use crate::CodecError;

/// What Jaeger uses when no file says otherwise.
pub const DEFAULT_SAMPLING_PROBABILITY: f64 = 0.001;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SamplingStrategyType {
    Probabilistic = 0,
    RateLimiting = 1,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct ProbabilisticSamplingStrategy {
    #[prost(double, tag = "1")]
    pub sampling_rate: f64,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct RateLimitingSamplingStrategy {
    #[prost(int32, tag = "1")]
    pub max_traces_per_second: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OperationSamplingStrategy {
    #[prost(string, tag = "1")]
    pub operation: String,
    #[prost(message, optional, tag = "2")]
    pub probabilistic_sampling: Option<ProbabilisticSamplingStrategy>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PerOperationSamplingStrategies {
    #[prost(double, tag = "1")]
    pub default_sampling_probability: f64,
    #[prost(double, tag = "2")]
    pub default_lower_bound_traces_per_second: f64,
    #[prost(message, repeated, tag = "3")]
    pub per_operation_strategies: Vec<OperationSamplingStrategy>,
    #[prost(double, tag = "4")]
    pub default_upper_bound_traces_per_second: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SamplingStrategyResponse {
    #[prost(enumeration = "SamplingStrategyType", tag = "1")]
    pub strategy_type: i32,
    #[prost(message, optional, tag = "2")]
    pub probabilistic_sampling: Option<ProbabilisticSamplingStrategy>,
    #[prost(message, optional, tag = "3")]
    pub rate_limiting_sampling: Option<RateLimitingSamplingStrategy>,
    #[prost(message, optional, tag = "4")]
    pub operation_sampling: Option<PerOperationSamplingStrategies>,
}

/// `SamplingManager/GetSamplingStrategy` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SamplingStrategyParameters {
    #[prost(string, tag = "1")]
    pub service_name: String,
}

impl SamplingStrategyResponse {
    pub fn probabilistic(rate: f64) -> Self {
        SamplingStrategyResponse {
            strategy_type: SamplingStrategyType::Probabilistic as i32,
            probabilistic_sampling: Some(ProbabilisticSamplingStrategy { sampling_rate: rate }),
            ..Default::default()
        }
    }

    pub fn rate_limiting(max_traces_per_second: i32) -> Self {
        SamplingStrategyResponse {
            strategy_type: SamplingStrategyType::RateLimiting as i32,
            rate_limiting_sampling: Some(RateLimitingSamplingStrategy { max_traces_per_second }),
            ..Default::default()
        }
    }

    /// The JSON body of `GET /sampling?service=`, byte for byte as Jaeger writes it
    /// (gogo jsonpb with defaults emitted, then the null strategies removed).
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(128);
        let kind = match SamplingStrategyType::try_from(self.strategy_type) {
            Ok(SamplingStrategyType::RateLimiting) => "RATE_LIMITING",
            _ => "PROBABILISTIC",
        };
        let _ = write!(out, r#"{{"strategyType":"{kind}""#);
        if let Some(p) = &self.probabilistic_sampling {
            let _ = write!(out, r#","probabilisticSampling":{{"samplingRate":{}}}"#, go_float(p.sampling_rate));
        }
        if let Some(r) = &self.rate_limiting_sampling {
            let _ = write!(out, r#","rateLimitingSampling":{{"maxTracesPerSecond":{}}}"#, r.max_traces_per_second);
        }
        if let Some(ops) = &self.operation_sampling {
            let _ = write!(
                out,
                r#","operationSampling":{{"defaultSamplingProbability":{},"defaultLowerBoundTracesPerSecond":{},"perOperationStrategies":["#,
                go_float(ops.default_sampling_probability),
                go_float(ops.default_lower_bound_traces_per_second)
            );
            for (i, op) in ops.per_operation_strategies.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, r#"{{"operation":{}"#, json_string(&op.operation));
                if let Some(p) = &op.probabilistic_sampling {
                    let _ = write!(out, r#","probabilisticSampling":{{"samplingRate":{}}}"#, go_float(p.sampling_rate));
                }
                out.push('}');
            }
            let _ = write!(
                out,
                r#"],"defaultUpperBoundTracesPerSecond":{}}}"#,
                go_float(ops.default_upper_bound_traces_per_second)
            );
        }
        out.push('}');
        out
    }
}

/// A float as Go's `encoding/json` writes it: shortest round-trip digits, plain notation
/// for 1e-6 ≤ |x| < 1e21, exponent notation otherwise (`1e-7`, `1.5e+21`: Go drops the
/// padding zero of a negative exponent and keeps the sign of a positive one).
fn go_float(x: f64) -> String {
    if !x.is_finite() {
        // Go refuses to encode these; a response must still be JSON.
        return "0".to_string();
    }
    let abs = x.abs();
    if abs == 0.0 || (1e-6..1e21).contains(&abs) {
        format!("{x}")
    } else {
        let text = format!("{x:e}");
        match text.split_once('e') {
            Some((mantissa, exponent)) if !exponent.starts_with('-') => format!("{mantissa}e+{exponent}"),
            _ => text,
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

// ---- the file ----

#[derive(Debug, Deserialize)]
struct StrategiesFile {
    #[serde(default)]
    default_strategy: Option<ServiceStrategy>,
    #[serde(default)]
    service_strategies: Option<Vec<ServiceStrategy>>,
}

#[derive(Debug, Deserialize)]
struct ServiceStrategy {
    #[serde(default)]
    service: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    param: Option<f64>,
    #[serde(default)]
    operation_strategies: Option<Vec<OperationStrategy>>,
}

#[derive(Debug, Deserialize)]
struct OperationStrategy {
    #[serde(default)]
    operation: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    param: Option<f64>,
}

/// The resolved strategies of one file: a response per named service and a default.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingStrategies {
    pub default_strategy: SamplingStrategyResponse,
    pub service_strategies: BTreeMap<String, SamplingStrategyResponse>,
    /// What the file asked for that Jaeger does not support, for the server to log.
    pub warnings: Vec<String>,
}

impl SamplingStrategies {
    /// No file: every service gets probabilistic sampling at `default_probability`.
    pub fn with_default_probability(default_probability: f64) -> Self {
        SamplingStrategies {
            default_strategy: SamplingStrategyResponse::probabilistic(default_probability),
            service_strategies: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Parses a strategies file. `default_probability` is what Jaeger calls
    /// `default_sampling_probability` (0.001 unless configured).
    pub fn parse(json: &[u8], default_probability: f64) -> Result<Self, CodecError> {
        let file: Option<StrategiesFile> =
            serde_json::from_slice(json).map_err(|e| CodecError::Json(format!("sampling strategies file: {e}")))?;
        let mut out = SamplingStrategies::with_default_probability(default_probability);
        let Some(file) = file else {
            return Ok(out); // a `null` file means defaults, as in Jaeger
        };
        if let Some(default) = &file.default_strategy {
            out.default_strategy = out.resolve_service(default, default_probability, "default_strategy");
        }
        for (i, s) in file.service_strategies.iter().flatten().enumerate() {
            let service = s.service.clone().unwrap_or_default();
            let context = format!("service_strategies[{i}] ({service:?})");
            let mut resolved = out.resolve_service(s, default_probability, &context);
            if let Some(default_ops) = &out.default_strategy.operation_sampling {
                match &mut resolved.operation_sampling {
                    None => {
                        let mut ops = default_ops.clone();
                        if let Some(p) = &resolved.probabilistic_sampling {
                            ops.default_sampling_probability = p.sampling_rate;
                        }
                        resolved.operation_sampling = Some(ops);
                    }
                    Some(own) => {
                        for op in &default_ops.per_operation_strategies {
                            if !own.per_operation_strategies.iter().any(|o| o.operation == op.operation) {
                                own.per_operation_strategies.push(op.clone());
                            }
                        }
                    }
                }
            }
            out.service_strategies.insert(service, resolved);
        }
        Ok(out)
    }

    /// The response for `service`: its own strategy, or the default.
    pub fn strategy_for(&self, service: &str) -> &SamplingStrategyResponse {
        self.service_strategies.get(service).unwrap_or(&self.default_strategy)
    }

    fn resolve_strategy(
        &mut self,
        kind: Option<&str>,
        param: Option<f64>,
        default_probability: f64,
        context: &str,
    ) -> SamplingStrategyResponse {
        let param = param.unwrap_or(0.0);
        match kind.unwrap_or("") {
            "probabilistic" => SamplingStrategyResponse::probabilistic(param),
            // Go's int32(float64) truncates toward zero; out-of-range values saturate here.
            "ratelimiting" => SamplingStrategyResponse::rate_limiting(param as i32),
            other => {
                self.warnings.push(format!(
                    "{context}: unknown strategy type {other:?}, using probabilistic {default_probability}"
                ));
                SamplingStrategyResponse::probabilistic(default_probability)
            }
        }
    }

    fn resolve_service(
        &mut self,
        s: &ServiceStrategy,
        default_probability: f64,
        context: &str,
    ) -> SamplingStrategyResponse {
        let mut response = self.resolve_strategy(s.kind.as_deref(), s.param, default_probability, context);
        let operations = s.operation_strategies.as_deref().unwrap_or_default();
        if operations.is_empty() {
            return response;
        }
        let mut ops = PerOperationSamplingStrategies {
            default_sampling_probability: response
                .probabilistic_sampling
                .map(|p| p.sampling_rate)
                .unwrap_or(default_probability),
            ..Default::default()
        };
        for (i, op) in operations.iter().enumerate() {
            let name = op.operation.clone().unwrap_or_default();
            let op_context = format!("{context}.operation_strategies[{i}] ({name:?})");
            let resolved = self.resolve_strategy(op.kind.as_deref(), op.param, default_probability, &op_context);
            if resolved.rate_limiting_sampling.is_some() {
                self.warnings.push(format!(
                    "{op_context}: operation strategies support probabilistic sampling only, \
                     the operation uses probability {}",
                    ops.default_sampling_probability
                ));
                continue;
            }
            ops.per_operation_strategies.push(OperationSamplingStrategy {
                operation: name,
                probabilistic_sampling: resolved.probabilistic_sampling,
            });
        }
        response.operation_sampling = Some(ops);
        response
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// The example file of Jaeger's documentation, plus a rate-limiting operation.
    const FILE: &str = r#"{
      "service_strategies": [
        {"service": "foo", "type": "probabilistic", "param": 0.8,
         "operation_strategies": [
           {"operation": "op1", "type": "probabilistic", "param": 0.2},
           {"operation": "op2", "type": "probabilistic", "param": 0.4},
           {"operation": "op3", "type": "ratelimiting", "param": 10}]},
        {"service": "bar", "type": "ratelimiting", "param": 5}
      ],
      "default_strategy": {"type": "probabilistic", "param": 0.5,
        "operation_strategies": [
          {"operation": "/health", "type": "probabilistic", "param": 0.0},
          {"operation": "op1", "type": "probabilistic", "param": 0.9}]}
    }"#;

    #[test]
    fn responses_match_jaeger_byte_for_byte() {
        let s = SamplingStrategies::parse(FILE.as_bytes(), DEFAULT_SAMPLING_PROBABILITY).unwrap();
        assert_eq!(
            s.strategy_for("foo").to_json(),
            r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.8},"operationSampling":{"defaultSamplingProbability":0.8,"defaultLowerBoundTracesPerSecond":0,"perOperationStrategies":[{"operation":"op1","probabilisticSampling":{"samplingRate":0.2}},{"operation":"op2","probabilisticSampling":{"samplingRate":0.4}},{"operation":"/health","probabilisticSampling":{"samplingRate":0}}],"defaultUpperBoundTracesPerSecond":0}}"#
        );
        // A rate-limited service inherits the default's operations, and their default
        // probability, unchanged (Jaeger copies them by value).
        assert_eq!(
            s.strategy_for("bar").to_json(),
            r#"{"strategyType":"RATE_LIMITING","rateLimitingSampling":{"maxTracesPerSecond":5},"operationSampling":{"defaultSamplingProbability":0.5,"defaultLowerBoundTracesPerSecond":0,"perOperationStrategies":[{"operation":"/health","probabilisticSampling":{"samplingRate":0}},{"operation":"op1","probabilisticSampling":{"samplingRate":0.9}}],"defaultUpperBoundTracesPerSecond":0}}"#
        );
        assert_eq!(
            s.strategy_for("unknown").to_json(),
            r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.5},"operationSampling":{"defaultSamplingProbability":0.5,"defaultLowerBoundTracesPerSecond":0,"perOperationStrategies":[{"operation":"/health","probabilisticSampling":{"samplingRate":0}},{"operation":"op1","probabilisticSampling":{"samplingRate":0.9}}],"defaultUpperBoundTracesPerSecond":0}}"#
        );
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("\"op3\""), "{}", s.warnings[0]);
        assert!(s.warnings[0].contains("probabilistic sampling only"), "{}", s.warnings[0]);
    }

    #[test]
    fn the_reference_example_renders_as_documented() {
        let s = SamplingStrategies::parse(
            br#"{"service_strategies":[{"service":"x","type":"ratelimiting","param":42}]}"#,
            1.0,
        )
        .unwrap();
        assert_eq!(
            s.strategy_for("x").to_json(),
            r#"{"strategyType":"RATE_LIMITING","rateLimitingSampling":{"maxTracesPerSecond":42}}"#
        );
        assert_eq!(
            s.strategy_for("y").to_json(),
            r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":1}}"#
        );
    }

    #[test]
    fn unknown_types_and_null_files_fall_back_to_defaults() {
        let s = SamplingStrategies::parse(br#"{"default_strategy":{"type":"adaptive","param":3}}"#, 0.25).unwrap();
        assert_eq!(s.default_strategy, SamplingStrategyResponse::probabilistic(0.25));
        assert!(s.warnings[0].contains("unknown strategy type \"adaptive\""), "{:?}", s.warnings);
        let s = SamplingStrategies::parse(b"null", DEFAULT_SAMPLING_PROBABILITY).unwrap();
        assert_eq!(
            s.strategy_for("any").to_json(),
            r#"{"strategyType":"PROBABILISTIC","probabilisticSampling":{"samplingRate":0.001}}"#
        );
    }

    #[test]
    fn malformed_files_are_errors_naming_the_file() {
        for body in ["", "{", r#"{"service_strategies":{}}"#, r#"{"default_strategy":{"param":"high"}}"#] {
            let err = SamplingStrategies::parse(body.as_bytes(), 0.001).unwrap_err().to_string();
            assert!(err.contains("sampling strategies file"), "{body}: {err}");
        }
    }

    #[test]
    fn floats_are_formatted_as_go_does() {
        assert_eq!(go_float(1.0), "1");
        assert_eq!(go_float(0.001), "0.001");
        assert_eq!(go_float(1e-7), "1e-7");
        assert_eq!(go_float(1.5e21), "1.5e+21");
        assert_eq!(go_float(0.1 + 0.2), "0.30000000000000004");
    }

    #[test]
    fn responses_are_protobuf_messages_for_grpc() {
        let r = SamplingStrategyResponse::rate_limiting(7);
        assert_eq!(SamplingStrategyResponse::decode(r.encode_to_vec().as_slice()).unwrap(), r);
    }
}
