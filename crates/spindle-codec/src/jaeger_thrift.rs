//! Jaeger thrift (`jaeger.thrift`, `agent.thrift`) → model.
//!
//! Three entry points, one per transport:
//! - [`decode_emit_batch_compact`]: a UDP 6831 datagram, an `Agent.emitBatch` oneway
//!   message in the compact protocol;
//! - [`decode_emit_batch_binary`]: a UDP 6832 datagram, the same message in the binary
//!   protocol;
//! - [`decode_batch_binary`]: an HTTP 14268 `POST /api/traces` body, a bare `Batch` in the
//!   binary protocol.
//!
//! The thrift structs are walked field by field (unknown fields skipped, known fields with
//! the wrong type refused) into the api_v2 messages of [`crate::jaeger_proto`], whose
//! mapping onto the model is shared with the gRPC receiver. Field ids and types follow
//! jaeger-idl: Batch{1 process, 2 spans, 3 seqNo, 4 stats}, Process{1 serviceName, 2 tags},
//! Span{1 traceIdLow, 2 traceIdHigh, 3 spanId, 4 parentSpanId, 5 operationName,
//! 6 references, 7 flags, 8 startTime µs, 9 duration µs, 10 tags, 11 logs, 12 incomplete},
//! Tag{1 key, 2 vType, 3 vStr, 4 vDouble, 5 vBool, 6 vLong, 7 vBinary}, Log{1 timestamp,
//! 2 fields}, SpanRef{1 refType, 2 traceIdLow, 3 traceIdHigh, 4 spanId}.

use spindle_model::{SpanId, TraceId};

use crate::jaeger_proto::{self, duration_from_micros, timestamp_from_micros, SpanRefType, ValueType};
use crate::thrift::{
    BinaryReader, CompactReader, FieldHeader, Limits, MessageType, ProtocolReader, TType, ThriftError,
};
use crate::{CodecError, Decoded};

/// Decodes a UDP 6831 datagram: `Agent.emitBatch` in the thrift compact protocol.
pub fn decode_emit_batch_compact(datagram: &[u8]) -> Result<Decoded, CodecError> {
    let batch = read_emit_batch(&mut CompactReader::new(datagram, Limits::default())).map_err(compact_error)?;
    Ok(jaeger_proto::batch_to_spans(batch))
}

/// Decodes a UDP 6832 datagram: `Agent.emitBatch` in the thrift binary protocol.
pub fn decode_emit_batch_binary(datagram: &[u8]) -> Result<Decoded, CodecError> {
    let batch = read_emit_batch(&mut BinaryReader::new(datagram, Limits::default())).map_err(binary_error)?;
    Ok(jaeger_proto::batch_to_spans(batch))
}

/// Decodes an HTTP 14268 `/api/traces` body: one `jaeger.Batch` in the thrift binary protocol.
pub fn decode_batch_binary(body: &[u8]) -> Result<Decoded, CodecError> {
    let batch = read_batch(&mut BinaryReader::new(body, Limits::default())).map_err(binary_error)?;
    Ok(jaeger_proto::batch_to_spans(batch))
}

/// Decodes a bare `jaeger.Batch` in the thrift compact protocol (as some collectors and
/// Kafka pipelines carry it).
pub fn decode_batch_compact(body: &[u8]) -> Result<Decoded, CodecError> {
    let batch = read_batch(&mut CompactReader::new(body, Limits::default())).map_err(compact_error)?;
    Ok(jaeger_proto::batch_to_spans(batch))
}

fn compact_error(source: ThriftError) -> CodecError {
    CodecError::Thrift { protocol: "compact", source }
}

fn binary_error(source: ThriftError) -> CodecError {
    CodecError::Thrift { protocol: "binary", source }
}

// ---- the struct walkers ----

/// A thrift string as Jaeger (Go) accepts it: any bytes, invalid UTF-8 replaced rather
/// than refusing the whole batch.
fn read_text<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<String, ThriftError> {
    Ok(String::from_utf8_lossy(r.read_binary()?).into_owned())
}

fn invalid(at: usize, what: &'static str, detail: String) -> ThriftError {
    ThriftError::Invalid { offset: at, what, detail }
}

/// Refuses a known field whose wire type is not the IDL's.
fn check_type(field: FieldHeader, want: TType, at: usize, strukt: &'static str, name: &str) -> Result<(), ThriftError> {
    if field.ttype == want {
        Ok(())
    } else {
        Err(invalid(
            at,
            "field type",
            format!("{strukt}.{name} (field {}) has type {}, expected {want}", field.id, field.ttype),
        ))
    }
}

/// Reads the `emitBatch` message header and its argument struct, returning the batch.
fn read_emit_batch<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<jaeger_proto::Batch, ThriftError> {
    let at = r.offset();
    let header = r.read_message_begin()?;
    match header.name {
        "emitBatch" => {}
        "emitZipkinBatch" => {
            return Err(invalid(at, "method", "emitZipkinBatch (zipkin thrift over the agent) is not supported".into()))
        }
        other => return Err(invalid(at, "method", format!("unknown method {other:?}, expected \"emitBatch\""))),
    }
    if !matches!(header.kind, MessageType::Oneway | MessageType::Call) {
        return Err(invalid(at, "message type", format!("{:?} is not a call", header.kind)));
    }
    let mut batch = None;
    r.read_struct_begin()?;
    while let Some(field) = r.read_field_begin()? {
        let at = r.offset();
        if field.id == 1 {
            check_type(field, TType::Struct, at, "emitBatch_args", "batch")?;
            batch = Some(read_batch(r)?);
        } else {
            r.skip(field.ttype)?;
        }
    }
    r.read_struct_end()?;
    batch.ok_or_else(|| invalid(r.offset(), "emitBatch", "arguments carry no batch (field 1)".into()))
}

fn read_batch<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<jaeger_proto::Batch, ThriftError> {
    let mut process = None;
    let mut spans = None;
    r.read_struct_begin()?;
    while let Some(field) = r.read_field_begin()? {
        let at = r.offset();
        match field.id {
            1 => {
                check_type(field, TType::Struct, at, "Batch", "process")?;
                process = Some(read_process(r)?);
            }
            2 => {
                check_type(field, TType::List, at, "Batch", "spans")?;
                spans = Some(read_list(r, "Batch.spans", TType::Struct, read_span)?);
            }
            // 3 seqNo and 4 stats describe the client, not the spans.
            _ => r.skip(field.ttype)?,
        }
    }
    r.read_struct_end()?;
    let spans = spans.ok_or_else(|| invalid(r.offset(), "Batch", "required field 2 (spans) is missing".into()))?;
    Ok(jaeger_proto::Batch { spans, process })
}

/// Reads a list whose elements must be `element`, each with `read`.
fn read_list<'a, R, T>(
    r: &mut R,
    what: &'static str,
    element: TType,
    mut read: impl FnMut(&mut R) -> Result<T, ThriftError>,
) -> Result<Vec<T>, ThriftError>
where
    R: ProtocolReader<'a>,
{
    let at = r.offset();
    let header = r.read_list_begin()?;
    if header.len > 0 && header.element != element {
        return Err(invalid(at, "list element type", format!("{what} holds {}, expected {element}", header.element)));
    }
    // len is bounded by the remaining bytes, but one byte of input can become hundreds of
    // bytes of struct: reserve modestly and let real elements grow the vector.
    let mut out = Vec::with_capacity(header.len.min(1024));
    for _ in 0..header.len {
        out.push(read(r)?);
    }
    r.read_container_end();
    Ok(out)
}

fn read_process<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<jaeger_proto::Process, ThriftError> {
    let mut process = jaeger_proto::Process::default();
    r.read_struct_begin()?;
    while let Some(field) = r.read_field_begin()? {
        let at = r.offset();
        match field.id {
            1 => {
                check_type(field, TType::Binary, at, "Process", "serviceName")?;
                process.service_name = read_text(r)?;
            }
            2 => {
                check_type(field, TType::List, at, "Process", "tags")?;
                process.tags = read_list(r, "Process.tags", TType::Struct, read_tag)?;
            }
            _ => r.skip(field.ttype)?,
        }
    }
    r.read_struct_end()?;
    Ok(process)
}

fn read_tag<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<jaeger_proto::KeyValue, ThriftError> {
    let mut tag = jaeger_proto::KeyValue::default();
    r.read_struct_begin()?;
    while let Some(field) = r.read_field_begin()? {
        let at = r.offset();
        match field.id {
            1 => {
                check_type(field, TType::Binary, at, "Tag", "key")?;
                tag.key = read_text(r)?;
            }
            2 => {
                check_type(field, TType::I32, at, "Tag", "vType")?;
                // thrift TagType {STRING, DOUBLE, BOOL, LONG, BINARY} → api_v2 ValueType.
                let v_type = r.read_i32()?;
                tag.v_type = match v_type {
                    0 => ValueType::String,
                    1 => ValueType::Float64,
                    2 => ValueType::Bool,
                    3 => ValueType::Int64,
                    4 => ValueType::Binary,
                    other => return Err(invalid(at, "tag type", format!("unknown TagType {other}"))),
                } as i32;
            }
            3 => {
                check_type(field, TType::Binary, at, "Tag", "vStr")?;
                tag.v_str = read_text(r)?;
            }
            4 => {
                check_type(field, TType::Double, at, "Tag", "vDouble")?;
                tag.v_float64 = r.read_double()?;
            }
            5 => {
                check_type(field, TType::Bool, at, "Tag", "vBool")?;
                tag.v_bool = r.read_bool()?;
            }
            6 => {
                check_type(field, TType::I64, at, "Tag", "vLong")?;
                tag.v_int64 = r.read_i64()?;
            }
            7 => {
                check_type(field, TType::Binary, at, "Tag", "vBinary")?;
                tag.v_binary = r.read_binary()?.to_vec();
            }
            _ => r.skip(field.ttype)?,
        }
    }
    r.read_struct_end()?;
    Ok(tag)
}

fn read_log<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<jaeger_proto::Log, ThriftError> {
    let mut log = jaeger_proto::Log::default();
    r.read_struct_begin()?;
    while let Some(field) = r.read_field_begin()? {
        let at = r.offset();
        match field.id {
            1 => {
                check_type(field, TType::I64, at, "Log", "timestamp")?;
                log.timestamp = Some(timestamp_from_micros(r.read_i64()?));
            }
            2 => {
                check_type(field, TType::List, at, "Log", "fields")?;
                log.fields = read_list(r, "Log.fields", TType::Struct, read_tag)?;
            }
            _ => r.skip(field.ttype)?,
        }
    }
    r.read_struct_end()?;
    Ok(log)
}

fn read_span_ref<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<jaeger_proto::SpanRef, ThriftError> {
    let (mut ref_type, mut low, mut high, mut span_id) = (0i32, 0i64, 0i64, 0i64);
    r.read_struct_begin()?;
    while let Some(field) = r.read_field_begin()? {
        let at = r.offset();
        match field.id {
            1 => {
                check_type(field, TType::I32, at, "SpanRef", "refType")?;
                ref_type = r.read_i32()?;
            }
            2 => {
                check_type(field, TType::I64, at, "SpanRef", "traceIdLow")?;
                low = r.read_i64()?;
            }
            3 => {
                check_type(field, TType::I64, at, "SpanRef", "traceIdHigh")?;
                high = r.read_i64()?;
            }
            4 => {
                check_type(field, TType::I64, at, "SpanRef", "spanId")?;
                span_id = r.read_i64()?;
            }
            _ => r.skip(field.ttype)?,
        }
    }
    r.read_struct_end()?;
    Ok(jaeger_proto::SpanRef {
        trace_id: TraceId::from_parts(high as u64, low as u64).to_bytes().to_vec(),
        span_id: SpanId(span_id as u64).to_bytes().to_vec(),
        ref_type: if ref_type == 1 { SpanRefType::FollowsFrom } else { SpanRefType::ChildOf } as i32,
    })
}

fn read_span<'a, R: ProtocolReader<'a>>(r: &mut R) -> Result<jaeger_proto::Span, ThriftError> {
    let mut span = jaeger_proto::Span::default();
    let (mut low, mut high, mut span_id, mut parent) = (0i64, 0i64, 0i64, 0i64);
    let (mut start, mut duration) = (0i64, 0i64);
    r.read_struct_begin()?;
    while let Some(field) = r.read_field_begin()? {
        let at = r.offset();
        match field.id {
            1 => {
                check_type(field, TType::I64, at, "Span", "traceIdLow")?;
                low = r.read_i64()?;
            }
            2 => {
                check_type(field, TType::I64, at, "Span", "traceIdHigh")?;
                high = r.read_i64()?;
            }
            3 => {
                check_type(field, TType::I64, at, "Span", "spanId")?;
                span_id = r.read_i64()?;
            }
            4 => {
                check_type(field, TType::I64, at, "Span", "parentSpanId")?;
                parent = r.read_i64()?;
            }
            5 => {
                check_type(field, TType::Binary, at, "Span", "operationName")?;
                span.operation_name = read_text(r)?;
            }
            6 => {
                check_type(field, TType::List, at, "Span", "references")?;
                span.references = read_list(r, "Span.references", TType::Struct, read_span_ref)?;
            }
            7 => {
                check_type(field, TType::I32, at, "Span", "flags")?;
                span.flags = r.read_i32()? as u32;
            }
            8 => {
                check_type(field, TType::I64, at, "Span", "startTime")?;
                start = r.read_i64()?;
            }
            9 => {
                check_type(field, TType::I64, at, "Span", "duration")?;
                duration = r.read_i64()?;
            }
            10 => {
                check_type(field, TType::List, at, "Span", "tags")?;
                span.tags = read_list(r, "Span.tags", TType::Struct, read_tag)?;
            }
            11 => {
                check_type(field, TType::List, at, "Span", "logs")?;
                span.logs = read_list(r, "Span.logs", TType::Struct, read_log)?;
            }
            _ => r.skip(field.ttype)?,
        }
    }
    r.read_struct_end()?;
    let trace_id = TraceId::from_parts(high as u64, low as u64);
    span.trace_id = trace_id.to_bytes().to_vec();
    span.span_id = SpanId(span_id as u64).to_bytes().to_vec();
    span.start_time = Some(timestamp_from_micros(start));
    span.duration = Some(duration_from_micros(duration));
    // parentSpanId is a CHILD_OF reference in disguise; Jaeger puts it first unless a
    // reference of any type already names that span (`model.MaybeAddParentSpanID`).
    if parent != 0 {
        let parent_id = SpanId(parent as u64).to_bytes().to_vec();
        let already = span.references.iter().any(|r| r.span_id == parent_id && r.trace_id == span.trace_id);
        if !already {
            span.references.insert(
                0,
                jaeger_proto::SpanRef {
                    trace_id: span.trace_id.clone(),
                    span_id: parent_id,
                    ref_type: SpanRefType::ChildOf as i32,
                },
            );
        }
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use spindle_model::{AttributeValue, SpanKind, StatusCode};

    use super::*;

    /// A minimal thrift writer for tests: enough of both protocols to build batches and
    /// malformed variants of them. Kept here, not in the library: Spindle never writes thrift.
    pub(crate) struct Writer {
        pub compact: bool,
        pub out: Vec<u8>,
        last: Vec<i16>,
    }

    impl Writer {
        pub fn new(compact: bool) -> Self {
            Writer { compact, out: Vec::new(), last: vec![0] }
        }
        fn varint(&mut self, mut v: u64) {
            loop {
                let b = (v & 0x7f) as u8;
                v >>= 7;
                if v == 0 {
                    self.out.push(b);
                    return;
                }
                self.out.push(b | 0x80);
            }
        }
        fn code(&self, t: TType) -> u8 {
            let (c, b) = match t {
                TType::Bool => (1, 2),
                TType::I8 => (3, 3),
                TType::I16 => (4, 6),
                TType::I32 => (5, 8),
                TType::I64 => (6, 10),
                TType::Double => (7, 4),
                TType::Binary => (8, 11),
                TType::List => (9, 15),
                TType::Set => (10, 14),
                TType::Map => (11, 13),
                TType::Struct => (12, 12),
                TType::Uuid => (13, 16),
            };
            if self.compact {
                c
            } else {
                b
            }
        }
        pub fn message(&mut self, name: &str) {
            if self.compact {
                self.out.extend_from_slice(&[0x82, (4 << 5) | 1, 0]);
                self.varint(name.len() as u64);
            } else {
                self.out.extend_from_slice(&[0x80, 0x01, 0x00, 0x04]);
                self.out.extend_from_slice(&(name.len() as i32).to_be_bytes());
            }
            self.out.extend_from_slice(name.as_bytes());
            if !self.compact {
                self.out.extend_from_slice(&0i32.to_be_bytes());
            }
        }
        pub fn field(&mut self, id: i16, t: TType) {
            if self.compact {
                let last = *self.last.last().unwrap_or(&0);
                let delta = id - last;
                if (1..=15).contains(&delta) {
                    self.out.push(((delta as u8) << 4) | self.code(t));
                } else {
                    self.out.push(self.code(t));
                    self.varint(((id as i32) << 1 ^ ((id as i32) >> 31)) as u32 as u64);
                }
                if let Some(l) = self.last.last_mut() {
                    *l = id;
                }
            } else {
                self.out.push(self.code(t));
                self.out.extend_from_slice(&id.to_be_bytes());
            }
        }
        pub fn begin(&mut self) {
            self.last.push(0);
        }
        pub fn stop(&mut self) {
            self.out.push(0);
            self.last.pop();
        }
        pub fn i64(&mut self, v: i64) {
            if self.compact {
                self.varint(((v << 1) ^ (v >> 63)) as u64);
            } else {
                self.out.extend_from_slice(&v.to_be_bytes());
            }
        }
        pub fn i32(&mut self, v: i32) {
            if self.compact {
                self.varint(((v << 1) ^ (v >> 31)) as u32 as u64);
            } else {
                self.out.extend_from_slice(&v.to_be_bytes());
            }
        }
        pub fn string(&mut self, s: &str) {
            if self.compact {
                self.varint(s.len() as u64);
            } else {
                self.out.extend_from_slice(&(s.len() as i32).to_be_bytes());
            }
            self.out.extend_from_slice(s.as_bytes());
        }
        pub fn list(&mut self, t: TType, len: usize) {
            if self.compact {
                if len < 15 {
                    self.out.push(((len as u8) << 4) | self.code(t));
                } else {
                    self.out.push(0xf0 | self.code(t));
                    self.varint(len as u64);
                }
            } else {
                self.out.push(self.code(t));
                self.out.extend_from_slice(&(len as i32).to_be_bytes());
            }
        }
        pub fn string_tag(&mut self, key: &str, value: &str) {
            self.begin();
            self.field(1, TType::Binary);
            self.string(key);
            self.field(2, TType::I32);
            self.i32(0);
            self.field(3, TType::Binary);
            self.string(value);
            self.stop();
        }
    }

    /// emitBatch(Batch{process "svc", spans [root, child]}) with unknown fields sprinkled in.
    pub(crate) fn emit_batch(compact: bool) -> Vec<u8> {
        let mut w = Writer::new(compact);
        w.message("emitBatch");
        w.begin(); // args
        w.field(1, TType::Struct);
        w.begin(); // Batch
        w.field(1, TType::Struct);
        w.begin(); // Process
        w.field(1, TType::Binary);
        w.string("svc");
        w.field(2, TType::List);
        w.list(TType::Struct, 1);
        w.string_tag("hostname", "h1");
        w.stop();
        w.field(2, TType::List);
        w.list(TType::Struct, 2);
        for (id, parent, name) in [(1i64, 0i64, "root"), (2, 1, "child")] {
            w.begin();
            w.field(1, TType::I64);
            w.i64(0x1234);
            w.field(2, TType::I64);
            w.i64(-1); // high bits all set: a 128-bit id
            w.field(3, TType::I64);
            w.i64(id);
            w.field(4, TType::I64);
            w.i64(parent);
            w.field(5, TType::Binary);
            w.string(name);
            w.field(7, TType::I32);
            w.i32(1);
            w.field(8, TType::I64);
            w.i64(1_700_000_000_000_000 + id);
            w.field(9, TType::I64);
            w.i64(1500);
            w.field(10, TType::List);
            w.list(TType::Struct, 2);
            w.string_tag("span.kind", "server");
            w.begin();
            w.field(1, TType::Binary);
            w.string("n");
            w.field(2, TType::I32);
            w.i32(3);
            w.field(6, TType::I64);
            w.i64(-42);
            w.stop();
            w.field(11, TType::List);
            w.list(TType::Struct, 1);
            w.begin();
            w.field(1, TType::I64);
            w.i64(1_700_000_000_000_100);
            w.field(2, TType::List);
            w.list(TType::Struct, 1);
            w.string_tag("event", "retry");
            w.stop();
            w.field(99, TType::Binary); // unknown field: skipped
            w.string("future");
            w.stop();
        }
        w.field(3, TType::I64); // seqNo
        w.i64(5);
        w.stop(); // Batch
        w.stop(); // args
        w.out
    }

    fn check(decoded: &Decoded) {
        assert_eq!(decoded.rejected, 0, "{}", decoded.rejection_reason);
        assert_eq!(decoded.spans.len(), 2);
        let root = &decoded.spans[0];
        let child = &decoded.spans[1];
        assert_eq!(root.service_name(), "svc");
        assert_eq!(root.trace_id, TraceId::from_parts(u64::MAX, 0x1234));
        assert!(root.is_root());
        assert_eq!(child.parent_span_id, SpanId(1));
        assert_eq!(child.name, "child");
        assert_eq!(root.kind, SpanKind::Server);
        assert_eq!(root.start_time_unix_nano, 1_700_000_000_000_001_000);
        assert_eq!(root.duration_nanos(), 1_500_000);
        assert_eq!(root.attribute("n"), Some(&AttributeValue::Int(-42)));
        assert_eq!(root.events[0].name, "retry");
        assert_eq!(root.status.code, StatusCode::Unset);
    }

    #[test]
    fn emit_batch_decodes_in_both_protocols() {
        check(&decode_emit_batch_compact(&emit_batch(true)).unwrap());
        check(&decode_emit_batch_binary(&emit_batch(false)).unwrap());
    }

    #[test]
    fn bare_batch_decodes() {
        // The HTTP body is the batch without the message header and args struct.
        let full = emit_batch(false);
        let header_len = 4 + 4 + "emitBatch".len() + 4;
        let args_field = 3; // type byte + i16 id
        let batch = &full[header_len + args_field..full.len() - 1];
        check(&decode_batch_binary(batch).unwrap());
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        for compact in [true, false] {
            let bytes = emit_batch(compact);
            for len in 0..bytes.len() {
                let result = if compact {
                    decode_emit_batch_compact(&bytes[..len])
                } else {
                    decode_emit_batch_binary(&bytes[..len])
                };
                assert!(result.is_err(), "compact={compact} len={len} decoded a truncated batch");
            }
        }
    }

    #[test]
    fn malformed_messages_name_the_problem() {
        let mut w = Writer::new(true);
        w.message("emitZipkinBatch");
        let err = decode_emit_batch_compact(&w.out).unwrap_err().to_string();
        assert!(err.contains("emitZipkinBatch"), "{err}");

        let mut w = Writer::new(false);
        w.message("getTrace");
        let err = decode_emit_batch_binary(&w.out).unwrap_err().to_string();
        assert!(err.contains("unknown method \"getTrace\""), "{err}");

        // The compact datagram sent to the binary port, and vice versa.
        let err = decode_emit_batch_binary(&emit_batch(true)).unwrap_err().to_string();
        assert!(err.starts_with("invalid thrift binary"), "{err}");
        let err = decode_emit_batch_compact(&emit_batch(false)).unwrap_err().to_string();
        assert!(err.contains("protocol id"), "{err}");

        // Batch.spans as a string instead of a list.
        let mut w = Writer::new(false);
        w.begin();
        w.field(2, TType::Binary);
        w.string("x");
        w.stop();
        let err = decode_batch_binary(&w.out).unwrap_err().to_string();
        assert!(err.contains("Batch.spans (field 2) has type binary, expected list"), "{err}");

        // A batch without spans.
        let err = decode_batch_binary(&[0]).unwrap_err().to_string();
        assert!(err.contains("required field 2 (spans) is missing"), "{err}");

        // A list that claims a billion spans in a 20-byte datagram.
        let mut w = Writer::new(true);
        w.begin();
        w.field(2, TType::List);
        w.list(TType::Struct, 1_000_000_000);
        w.out.extend_from_slice(&[0; 8]);
        let err = decode_batch_compact(&w.out).unwrap_err().to_string();
        assert!(err.contains("list of length 1000000000"), "{err}");

        // Garbage.
        assert!(decode_emit_batch_compact(&[0xde, 0xad, 0xbe, 0xef]).is_err());
        assert!(decode_emit_batch_binary(&[]).is_err());
    }

    #[test]
    fn deeply_nested_unknown_fields_are_refused() {
        let mut w = Writer::new(true);
        w.begin();
        for _ in 0..200 {
            w.field(9, TType::Struct);
            w.begin();
        }
        let err = decode_batch_compact(&w.out).unwrap_err().to_string();
        assert!(err.contains("nesting deeper than 32 levels"), "{err}");
    }
}
