//! A flat (non-repeated) string column of one row group read as dictionary indices.
//!
//! Reading a dictionary-encoded string column through `parquet`'s column reader gives one
//! `ByteArray` per row, each a reference-counted clone of its dictionary entry: filling
//! them was a quarter of a grouped scan's time. Grouped scans only need each kept row's
//! text, so this reads the pages directly: the dictionary page's entries are sliced once
//! and every row keeps a `u32` index into them. Pages that fell back to plain encoding
//! (the dictionary grew past its limit) add their values as entries of their own.
//!
//! The page layouts are the Parquet format's (`Encodings.md`): data page v1 holds the
//! definition levels as a length-prefixed RLE/bit-packed hybrid run, then the values; data
//! page v2 gives the levels' length in the header. Dictionary-encoded values are one byte
//! of bit width, then the hybrid runs of indices; plain byte arrays are a 4-byte length
//! before each value.

use bytes::Bytes;
use parquet::basic::Encoding;
use parquet::column::page::{Page, PageReader};

use crate::block_format::FormatError;

/// The index of a row whose value is null.
const NULL: u32 = u32::MAX;

/// The texts of a string column, one per row, by index into a list of entries.
#[derive(Debug, Default)]
pub(crate) struct DictColumn {
    entries: Vec<Bytes>,
    rows: Vec<u32>,
}

impl DictColumn {
    /// A column of `rows` nulls: what a row group without the column holds.
    pub(crate) fn nulls(rows: usize) -> Self {
        DictColumn { entries: Vec::new(), rows: vec![NULL; rows] }
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    /// The value of row `row`; `None` when null or out of range.
    pub(crate) fn get(&self, row: usize) -> Option<&[u8]> {
        let index = *self.rows.get(row)?;
        self.entries.get(index as usize).map(|b| &b[..])
    }

    /// Clears `mask[row]` for every row whose value is not `value` (nulls included): one
    /// comparison per entry, not per row.
    pub(crate) fn retain_equal(&self, value: &[u8], mask: &mut [bool]) {
        for (slot, equal) in mask.iter_mut().zip(self.equal_rows(value)) {
            *slot &= equal;
        }
    }

    /// Sets `hit[row]` for every row whose value is `value`, leaving the others as they are.
    pub(crate) fn mark_equal(&self, value: &[u8], hit: &mut [bool]) {
        for (slot, equal) in hit.iter_mut().zip(self.equal_rows(value)) {
            *slot |= equal;
        }
    }

    /// Whether each row's value is `value` (nulls are not), one comparison per entry.
    fn equal_rows<'s>(&'s self, value: &[u8]) -> impl Iterator<Item = bool> + 's {
        let equal: Vec<bool> = self.entries.iter().map(|e| &e[..] == value).collect();
        self.rows.iter().map(move |index| equal.get(*index as usize).copied().unwrap_or(false))
    }

    /// Keeps only the rows of `runs` (ascending, disjoint `(first row, count)` pairs), one
    /// after the other.
    pub(crate) fn select(&mut self, runs: &[(usize, usize)]) -> Result<(), FormatError> {
        if let [(0, count)] = runs {
            if *count == self.rows.len() {
                return Ok(());
            }
        }
        let mut kept = Vec::with_capacity(self.rows.len());
        for &(first, count) in runs {
            let past = || FormatError::Malformed("row selection past the row group");
            let end = first.checked_add(count).ok_or_else(past)?;
            let rows = self.rows.get(first..end).ok_or_else(past)?;
            kept.extend_from_slice(rows);
        }
        self.rows = kept;
        Ok(())
    }

    /// Reads every page of one column chunk with definition levels up to `max_def` (0 for
    /// a required column, 1 for an optional one) and no repetition.
    pub(crate) fn read(pages: &mut dyn PageReader, max_def: i16, expected_rows: usize) -> Result<Self, FormatError> {
        if max_def > 1 {
            return Err(FormatError::Malformed("dictionary read of a nested column"));
        }
        let mut column = DictColumn { entries: Vec::new(), rows: Vec::with_capacity(expected_rows) };
        // Entries of the dictionary page come first; plain pages append theirs after.
        let mut dictionary_len = 0usize;
        while let Some(page) = pages.get_next_page().map_err(|_| FormatError::Malformed("unreadable page"))? {
            match page {
                Page::DictionaryPage { buf, num_values, encoding, .. } => {
                    if !matches!(encoding, Encoding::PLAIN | Encoding::PLAIN_DICTIONARY) || !column.entries.is_empty() {
                        return Err(FormatError::Malformed("dictionary page"));
                    }
                    plain_byte_arrays(&buf, num_values as usize, &mut column.entries)?;
                    dictionary_len = column.entries.len();
                }
                Page::DataPage { buf, num_values, encoding, def_level_encoding, .. } => {
                    let mut at = 0;
                    let defined = if max_def == 1 {
                        if def_level_encoding != Encoding::RLE {
                            return Err(FormatError::Malformed("definition level encoding"));
                        }
                        let len = read_u32(&buf, 0)? as usize;
                        let levels = buf.get(4..4 + len).ok_or(FormatError::Malformed("definition levels"))?;
                        at = 4 + len;
                        Some(levels)
                    } else {
                        None
                    };
                    column.page(&buf, at, defined, num_values as usize, encoding, dictionary_len)?;
                }
                Page::DataPageV2 { buf, num_values, encoding, def_levels_byte_len, rep_levels_byte_len, .. } => {
                    if rep_levels_byte_len != 0 {
                        return Err(FormatError::Malformed("repetition levels in a flat column"));
                    }
                    let len = def_levels_byte_len as usize;
                    let levels = buf.get(..len).ok_or(FormatError::Malformed("definition levels"))?;
                    let defined = (max_def == 1).then_some(levels);
                    column.page(&buf, len, defined, num_values as usize, encoding, dictionary_len)?;
                }
            }
        }
        if column.rows.len() != expected_rows {
            return Err(FormatError::Malformed("row count"));
        }
        Ok(column)
    }

    /// Adds the rows of one data page whose values start at `buf[at..]`.
    fn page(
        &mut self,
        buf: &Bytes,
        at: usize,
        defined: Option<&[u8]>,
        rows: usize,
        encoding: Encoding,
        dictionary_len: usize,
    ) -> Result<(), FormatError> {
        let first = self.rows.len();
        match defined {
            Some(levels) => {
                // One level per row: 1 defined, 0 null; defined rows get their index below.
                let mut decoder = Hybrid::new(levels, 1);
                for _ in 0..rows {
                    let level = decoder.next().ok_or(FormatError::Malformed("definition levels"))?;
                    self.rows.push(if level == 1 { 0 } else { NULL });
                }
            }
            None => self.rows.resize(first + rows, 0),
        }
        let values = buf.get(at..).ok_or(FormatError::Malformed("page values"))?;
        match encoding {
            Encoding::RLE_DICTIONARY | Encoding::PLAIN_DICTIONARY => {
                let (&width, runs) = values.split_first().ok_or(FormatError::Malformed("dictionary indices"))?;
                if width > 32 {
                    return Err(FormatError::Malformed("dictionary index width"));
                }
                let mut decoder = Hybrid::new(runs, width);
                for slot in self.rows[first..].iter_mut().filter(|r| **r != NULL) {
                    let index = decoder.next().ok_or(FormatError::Malformed("dictionary indices"))?;
                    if index as usize >= dictionary_len {
                        return Err(FormatError::Malformed("dictionary index out of range"));
                    }
                    *slot = index;
                }
            }
            Encoding::PLAIN => {
                let start = self.entries.len();
                let values = buf.slice_ref(values);
                let defined_rows = self.rows[first..].iter().filter(|r| **r != NULL).count();
                plain_byte_arrays(&values, defined_rows, &mut self.entries)?;
                for (next, slot) in (start..).zip(self.rows[first..].iter_mut().filter(|r| **r != NULL)) {
                    *slot = u32::try_from(next).map_err(|_| FormatError::Malformed("too many values"))?;
                }
            }
            _ => return Err(FormatError::Malformed("string column encoding")),
        }
        Ok(())
    }
}

fn read_u32(buf: &[u8], at: usize) -> Result<u32, FormatError> {
    let bytes: [u8; 4] =
        buf.get(at..at + 4).and_then(|b| b.try_into().ok()).ok_or(FormatError::Malformed("length prefix"))?;
    Ok(u32::from_le_bytes(bytes))
}

/// `count` plain-encoded byte arrays of `buf` (each a 4-byte little-endian length, then
/// the bytes), appended to `into` as slices of `buf`.
fn plain_byte_arrays(buf: &Bytes, count: usize, into: &mut Vec<Bytes>) -> Result<(), FormatError> {
    into.reserve(count);
    let mut at = 0;
    for _ in 0..count {
        let len = read_u32(buf, at)? as usize;
        let end = (at + 4)
            .checked_add(len)
            .filter(|end| *end <= buf.len())
            .ok_or(FormatError::Malformed("byte array length"))?;
        into.push(buf.slice(at + 4..end));
        at = end;
    }
    Ok(())
}

/// Decodes Parquet's RLE/bit-packed hybrid encoding of `width`-bit values: runs, each a
/// ULEB128 header whose low bit says bit-packed (groups of 8 values, least significant
/// bit first) or repeated (one value in `ceil(width / 8)` little-endian bytes).
struct Hybrid<'a> {
    buf: &'a [u8],
    at: usize,
    width: u8,
    /// Values left in the current run.
    left: usize,
    /// The repeated run's value, or `None` within a bit-packed run.
    repeated: Option<u32>,
    /// The bit position within `buf` of the next bit-packed value.
    bit: usize,
}

impl<'a> Hybrid<'a> {
    fn new(buf: &'a [u8], width: u8) -> Self {
        Hybrid { buf, at: 0, width, left: 0, repeated: None, bit: 0 }
    }

    /// The next value; `None` at the end of the data or on malformed runs.
    fn next(&mut self) -> Option<u32> {
        if self.left == 0 && !self.start_run() {
            return None;
        }
        self.left -= 1;
        if let Some(value) = self.repeated {
            return Some(value);
        }
        let width = usize::from(self.width);
        let byte = self.bit / 8;
        if let Some(word) = self.buf.get(byte..byte + 8) {
            // Width ≤ 32 and offset < 8: the value lies within one little-endian word.
            let word = u64::from_le_bytes(word.try_into().ok()?);
            let value = (word >> (self.bit % 8)) & ((1u64 << width) - 1);
            self.bit += width;
            return Some(value as u32);
        }
        let mut value = 0u64;
        let mut got = 0;
        while got < width {
            let byte = *self.buf.get(self.bit / 8)?;
            let offset = self.bit % 8;
            let take = (8 - offset).min(width - got);
            let bits = (u64::from(byte) >> offset) & ((1u64 << take) - 1);
            value |= bits << got;
            got += take;
            self.bit += take;
        }
        Some(value as u32)
    }

    fn start_run(&mut self) -> bool {
        // A bit-packed run ends on a byte boundary: continue after it.
        if self.repeated.is_none() && self.bit > 0 {
            self.at = self.bit.div_ceil(8);
            self.bit = 0;
        }
        let mut header = 0u64;
        let mut shift = 0;
        loop {
            let Some(&byte) = self.buf.get(self.at) else { return false };
            self.at += 1;
            if shift > 56 {
                return false;
            }
            header |= u64::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let Ok(count) = usize::try_from(header >> 1) else { return false };
        if header & 1 == 1 {
            // Bit-packed: `count` groups of eight values.
            let Some(values) = count.checked_mul(8) else { return false };
            if values == 0 {
                return false;
            }
            self.left = values;
            self.repeated = None;
            self.bit = self.at * 8;
        } else {
            let bytes = usize::from(self.width).div_ceil(8);
            let Some(raw) = self.buf.get(self.at..self.at + bytes) else { return false };
            let mut value = 0u32;
            for (i, b) in raw.iter().enumerate() {
                value |= u32::from(*b) << (8 * i);
            }
            self.at += bytes;
            if count == 0 {
                return false;
            }
            self.left = count;
            self.repeated = Some(value);
            // A repeated run is not bit-packed: the next run starts at `at`.
            self.bit = 0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(buf: &[u8], width: u8, n: usize) -> Vec<Option<u32>> {
        let mut d = Hybrid::new(buf, width);
        (0..n).map(|_| d.next()).collect()
    }

    #[test]
    fn hybrid_reads_repeated_and_bit_packed_runs() {
        // Repeated run of 3 × 5 (width 3: one byte), then one bit-packed group of 8 values
        // 0..8 at width 3 (three bytes, least significant bit first).
        let mut buf = vec![3 << 1, 5];
        buf.push(1 << 1 | 1);
        let mut bits = 0u32;
        for (i, v) in (0..8u32).enumerate() {
            bits |= v << (3 * i);
        }
        buf.extend_from_slice(&bits.to_le_bytes()[..3]);
        let got = decode(&buf, 3, 12);
        let want: Vec<Option<u32>> = [5, 5, 5, 0, 1, 2, 3, 4, 5, 6, 7].into_iter().map(Some).chain([None]).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn hybrid_reads_long_bit_packed_runs_of_every_width() {
        for width in 1..=32u8 {
            let values: Vec<u32> = (0..64u64).map(|i| ((i * 2_654_435_761) & ((1u64 << width) - 1)) as u32).collect();
            // One bit-packed run of 8 groups, least significant bit first, then a repeated
            // run of 2 × the largest value.
            let mut buf = vec![(8 << 1) | 1];
            let mut bits = 0u128;
            let mut held = 0;
            for v in &values {
                bits |= u128::from(*v) << held;
                held += usize::from(width);
                while held >= 8 {
                    buf.push(bits as u8);
                    bits >>= 8;
                    held -= 8;
                }
            }
            let top = ((1u64 << width) - 1) as u32;
            buf.push(2 << 1);
            buf.extend_from_slice(&top.to_le_bytes()[..usize::from(width).div_ceil(8)]);
            let want: Vec<Option<u32>> = values.iter().copied().chain([top, top]).map(Some).chain([None]).collect();
            assert_eq!(decode(&buf, width, 67), want, "width {width}");
        }
    }

    #[test]
    fn hybrid_runs_after_a_bit_packed_run_start_on_the_next_byte() {
        // Bit-packed 8 values of width 1 (one byte), then a repeated run of 2 × 1.
        let buf = [1 << 1 | 1, 0b1010_1010, 2 << 1, 1];
        assert_eq!(
            decode(&buf, 1, 11),
            [0, 1, 0, 1, 0, 1, 0, 1, 1, 1].into_iter().map(Some).chain([None]).collect::<Vec<_>>()
        );
    }

    #[test]
    fn malformed_runs_end_the_values_instead_of_panicking() {
        for buf in [&[][..], &[0x80][..], &[0xff; 12][..], &[3 << 1][..], &[1 << 1 | 1][..], &[0][..]] {
            for width in [0, 1, 7, 8, 13, 32] {
                let mut d = Hybrid::new(buf, width);
                for _ in 0..64 {
                    let _ = d.next();
                }
            }
        }
    }

    #[test]
    fn plain_byte_arrays_reject_lengths_past_the_buffer() {
        let mut out = Vec::new();
        let good = Bytes::from_static(&[2, 0, 0, 0, b'h', b'i', 0, 0, 0, 0]);
        plain_byte_arrays(&good, 2, &mut out).unwrap();
        assert_eq!(out, [Bytes::from_static(b"hi"), Bytes::new()]);
        let bad = Bytes::from_static(&[9, 0, 0, 0, b'h']);
        assert!(plain_byte_arrays(&bad, 1, &mut Vec::new()).is_err());
        let huge = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
        assert!(plain_byte_arrays(&huge, 1, &mut Vec::new()).is_err());
    }

    #[test]
    fn selected_rows_keep_their_values() {
        let mut column = DictColumn {
            entries: vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")],
            rows: vec![0, NULL, 1, 1, 0],
        };
        column.select(&[(1, 2), (4, 1)]).unwrap();
        assert_eq!(
            (column.get(0), column.get(1), column.get(2), column.get(3)),
            (None, Some(&b"b"[..]), Some(&b"a"[..]), None)
        );
        assert!(column.select(&[(2, 5)]).is_err());
        // Rows now: null, "b", "a".
        let mut mask = [true, true, true];
        column.retain_equal(b"a", &mut mask);
        assert_eq!(mask, [false, false, true], "null rows never equal");
        let mut mask = [true, true, false];
        column.retain_equal(b"b", &mut mask);
        assert_eq!(mask, [false, true, false], "cleared rows stay cleared");
    }
}
