//! A fuzz smoke in the normal test suite: every decoder over every fixture and over a
//! deterministic set of mutations of each (truncations, bit flips, interesting bytes,
//! spliced duplicates). Decoding may fail; it must never panic. The real fuzzing lives in
//! `fuzz/` (cargo fuzz), seeded from the same fixtures.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use spindle_codec::{jaeger_proto, jaeger_thrift, otlp, otlp_json, sampling, zipkin};

type Decoder = (&'static str, fn(&[u8]) -> bool);

/// Every decoder; the bool only keeps the result alive so nothing is optimized away.
const DECODERS: &[Decoder] = &[
    ("otlp_proto", |b| otlp::decode_request(b).is_ok()),
    ("otlp_json", |b| otlp_json::decode_request(b).is_ok()),
    ("jaeger_emit_batch_compact", |b| jaeger_thrift::decode_emit_batch_compact(b).is_ok()),
    ("jaeger_emit_batch_binary", |b| jaeger_thrift::decode_emit_batch_binary(b).is_ok()),
    ("jaeger_batch_binary", |b| jaeger_thrift::decode_batch_binary(b).is_ok()),
    ("jaeger_batch_compact", |b| jaeger_thrift::decode_batch_compact(b).is_ok()),
    ("jaeger_proto", |b| jaeger_proto::decode_post_spans_request(b).is_ok()),
    ("zipkin_v2_json", |b| zipkin::decode_v2_json(b).is_ok()),
    ("zipkin_v2_proto", |b| zipkin::decode_v2_proto(b).is_ok()),
    ("zipkin_v1_json", |b| zipkin::decode_v1_json(b).is_ok()),
    ("sampling_file", |b| {
        sampling::SamplingStrategies::parse(b, 0.001).map(|s| s.default_strategy.to_json().len()).is_ok()
    }),
];

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            if name.ends_with(".meta") {
                return None;
            }
            Some((name, std::fs::read(&path).ok()?))
        })
        .collect();
    out.sort();
    out
}

/// xorshift64*: deterministic, so a failure names a reproducible mutation.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The mutations of one input, each with a description for failure messages.
fn mutations(input: &[u8], seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let n = input.len();
    // Truncations: every length near both ends, and a spread in between.
    let step = (n / 128).max(1);
    for len in (0..n).filter(|l| *l < 64 || *l + 64 > n || l % step == 0) {
        out.push((format!("truncated to {len}"), input[..len].to_vec()));
    }
    if n == 0 {
        return out;
    }
    let mut rng = Rng(seed | 1);
    for _ in 0..200 {
        let (i, bit) = (rng.below(n), rng.below(8));
        let mut m = input.to_vec();
        m[i] ^= 1 << bit;
        out.push((format!("bit {bit} of byte {i} flipped"), m));
    }
    // Bytes that turn lengths and counts into huge, negative or zero values.
    for value in [0x00, 0x7f, 0x80, 0xff] {
        for _ in 0..40 {
            let i = rng.below(n);
            let mut m = input.to_vec();
            m[i] = value;
            out.push((format!("byte {i} set to {value:#04x}"), m));
        }
    }
    for _ in 0..40 {
        let (a, b) = (rng.below(n), rng.below(n));
        let (start, end) = (a.min(b), a.max(b));
        let mut m = input[..end].to_vec();
        m.extend_from_slice(&input[start..]);
        out.push((format!("bytes {start}..{end} duplicated"), m));
    }
    out
}

#[test]
fn no_decoder_panics_on_fixtures_or_their_mutations() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 10, "expected the captured fixtures, found {}", fixtures.len());
    let mut runs = 0usize;
    let mut decoded_ok = 0usize;
    for (i, (name, bytes)) in fixtures.iter().enumerate() {
        let mut inputs = vec![("unchanged".to_string(), bytes.clone())];
        inputs.extend(mutations(bytes, 0x9e37_79b9 + i as u64));
        for (mutation, input) in &inputs {
            for (decoder, decode) in DECODERS {
                let result = catch_unwind(AssertUnwindSafe(|| decode(input)));
                match result {
                    Ok(ok) => decoded_ok += usize::from(ok),
                    Err(_) => panic!("{decoder} panicked on {name} ({mutation})"),
                }
                runs += 1;
            }
        }
    }
    // Guard against a vacuous pass: the unchanged fixtures must decode somewhere.
    assert!(decoded_ok >= fixtures.len(), "only {decoded_ok} of {runs} decodes succeeded");
}

#[test]
fn no_decoder_panics_on_adversarial_shapes() {
    let mut inputs: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("zeros", vec![0; 4096]),
        ("ones", vec![0xff; 4096]),
        ("compact struct nesting", vec![0x1c; 65_000]),
        ("binary list nesting", [0x0f, 0, 0, 0, 1].repeat(13_000)),
        ("protobuf length-delimited nesting", [0x0a, 0x80, 0x80, 0x04].repeat(16_000)),
        ("json array nesting", [b"[".repeat(50_000), b"]".repeat(50_000)].concat()),
        ("json object nesting", b"{\"a\":".repeat(20_000)),
    ];
    // A compact emitBatch header followed by a list that claims 2^31-1 spans.
    let mut huge = vec![0x82, 0x81, 0x00, 0x09];
    huge.extend_from_slice(b"emitBatch");
    huge.extend_from_slice(&[0x1c, 0x29, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07]);
    inputs.push(("compact huge span count", huge));
    for (what, input) in &inputs {
        for (decoder, decode) in DECODERS {
            if catch_unwind(AssertUnwindSafe(|| decode(input))).is_err() {
                panic!("{decoder} panicked on {what}");
            }
        }
    }
}
