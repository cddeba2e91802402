//! ClickHouse's `RowBinary` format, the little of it the store writes and reads: integers
//! little-endian, strings and arrays prefixed by a LEB128 length, `FixedString(16)` raw.

use spindle_model::TraceId;

#[derive(Default)]
pub(crate) struct Writer(Vec<u8>);

impl Writer {
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    fn varint(&mut self, mut n: u64) -> &mut Self {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                self.0.push(byte);
                return self;
            }
            self.0.push(byte | 0x80);
        }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn f64(&mut self, v: f64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// Big-endian, so that ClickHouse's byte order of `FixedString(16)` is numeric order.
    pub(crate) fn trace_id(&mut self, id: TraceId) -> &mut Self {
        self.0.extend_from_slice(&id.0.to_be_bytes());
        self
    }

    pub(crate) fn string(&mut self, bytes: &[u8]) -> &mut Self {
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
        self
    }

    /// The length prefix of an array whose elements the caller writes next.
    pub(crate) fn array_len(&mut self, len: usize) -> &mut Self {
        self.varint(len as u64)
    }

    pub(crate) fn strings(&mut self, items: &[&[u8]]) -> &mut Self {
        self.array_len(items.len());
        for item in items {
            self.string(item);
        }
        self
    }
}

pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("truncated row");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            n |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("length prefix too long")
    }

    pub(crate) fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u64(&mut self) -> Result<u64, &'static str> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "truncated UInt64")?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, &'static str> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "truncated Int64")?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, &'static str> {
        Ok(i32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "truncated Int32")?))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, &'static str> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "truncated Float64")?))
    }

    pub(crate) fn trace_id(&mut self) -> Result<TraceId, &'static str> {
        Ok(TraceId(u128::from_be_bytes(self.take(16)?.try_into().map_err(|_| "truncated trace id")?)))
    }

    pub(crate) fn string(&mut self) -> Result<&'a [u8], &'static str> {
        let len = usize::try_from(self.varint()?).map_err(|_| "string too long")?;
        self.take(len)
    }

    /// What is left to read.
    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.0
    }

    /// An array whose elements `element` reads.
    pub(crate) fn array<T>(
        &mut self,
        mut element: impl FnMut(&mut Self) -> Result<T, &'static str>,
    ) -> Result<Vec<T>, &'static str> {
        let len = usize::try_from(self.varint()?).map_err(|_| "array too long")?;
        // Every element takes a byte at least: a corrupt length allocates no more than the answer.
        let mut items = Vec::with_capacity(len.min(self.0.len()));
        for _ in 0..len {
            items.push(element(self)?);
        }
        Ok(items)
    }

    pub(crate) fn strings(&mut self) -> Result<Vec<&'a [u8]>, &'static str> {
        self.array(Self::string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let mut w = Writer::default();
        let long = vec![7u8; 300];
        w.u8(3).u64(u64::MAX).trace_id(TraceId(42)).string(&long).string(b"").i64(-5).f64(0.25);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(3));
        assert_eq!(r.u64(), Ok(u64::MAX));
        assert_eq!(r.trace_id(), Ok(TraceId(42)));
        assert_eq!(r.string(), Ok(&long[..]));
        assert_eq!(r.string(), Ok(&b""[..]));
        assert_eq!(r.i64(), Ok(-5));
        assert_eq!(r.f64(), Ok(0.25));
        assert!(r.is_empty());
        assert_eq!(Reader::new(&(-3i32).to_le_bytes()).i32(), Ok(-3));
        assert!(Reader::new(&[5, 1]).string().is_err());
        let mut w = Writer::default();
        w.strings(&[b"a", b"bc"]).array_len(2).i64(1).i64(-1);
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.strings(), Ok(vec![&b"a"[..], &b"bc"[..]]));
        assert_eq!(r.array(Reader::i64), Ok(vec![1, -1]));
        assert!(r.is_empty() && r.remaining().is_empty());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0x7f]).strings().is_err(), "a length past the answer");
    }
}
