//! The block writer's arena: the strings of a row group copied into shared chunks, handed
//! out as reference-counted `ByteArray` slices, plus the encodings it reuses from one span
//! to the next. Writer-side only; readers never fill it.

use bytes::BytesMut;
use parquet::data_type::{ByteArray, FixedLenByteArray};
use spindle_model::TraceId;

/// What lets [`SpanColumns::push`] avoid an allocation per value: strings are copied into
/// shared chunks and every `ByteArray` is a reference-counted slice of one (allocating and
/// freeing one buffer per string was a third of the block writer's time), the current
/// trace id is encoded once per trace, and the last attribute layout is reused.
#[derive(Debug, Default)]
pub(super) struct PushBuffers {
    chunk: BytesMut,
    pub(super) trace: Option<(TraceId, FixedLenByteArray)>,
    layout: Option<(Vec<u32>, ByteArray)>,
}

impl PushBuffers {
    const CHUNK_BYTES: usize = 64 * 1024;

    pub(super) fn bytes(&mut self, value: &[u8]) -> ByteArray {
        if self.chunk.capacity() - self.chunk.len() < value.len() {
            self.chunk = BytesMut::with_capacity(Self::CHUNK_BYTES.max(value.len()));
        }
        self.chunk.extend_from_slice(value);
        ByteArray::from(self.chunk.split().freeze())
    }

    pub(super) fn trace_id(&mut self, id: TraceId) -> FixedLenByteArray {
        match &self.trace {
            Some((last, bytes)) if *last == id => bytes.clone(),
            _ => {
                let bytes = FixedLenByteArray::from(self.bytes(&id.to_bytes()));
                self.trace = Some((id, bytes.clone()));
                bytes
            }
        }
    }

    pub(super) fn layout(&mut self, positions: &[u32]) -> ByteArray {
        match &self.layout {
            Some((last, bytes)) if last.as_slice() == positions => bytes.clone(),
            _ => {
                let bytes = ByteArray::from(postcard::to_stdvec(positions).unwrap_or_default());
                self.layout = Some((positions.to_vec(), bytes.clone()));
                bytes
            }
        }
    }

    pub(super) fn non_empty(&mut self, s: &str) -> Option<ByteArray> {
        (!s.is_empty()).then(|| self.bytes(s.as_bytes()))
    }
}
