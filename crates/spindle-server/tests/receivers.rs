//! Every protocol's receiver, fed bytes captured from real client libraries
//! (`crates/spindle-codec/tests/fixtures`), read back through the query API; malformed
//! input on every port; remote sampling from a strategies file that changes.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Spindle;
use serde_json::Value;
use spindle_codec::Decoded;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spindle-codec/tests/fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Waits until the service's traces hold every span the fixture decodes to, with the
/// same names and parents.
fn assert_arrived(spindle: &Spindle, decoded: &Decoded) {
    let service = decoded.spans[0].service_name().to_string();
    let trace_id = decoded.spans[0].trace_id.to_jaeger_hex();
    let deadline = Instant::now() + Duration::from_secs(10);
    let trace = loop {
        let (status, body) = spindle.get_json(&format!("/api/traces/{trace_id}"));
        if status == 200 && body["data"][0]["spans"].as_array().map(Vec::len) == Some(decoded.spans.len()) {
            break body["data"][0].clone();
        }
        assert!(Instant::now() < deadline, "{service}: trace {trace_id} incomplete: {body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    for span in &decoded.spans {
        let got = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["spanID"] == span.span_id.to_hex())
            .unwrap_or_else(|| panic!("{service}: span {} missing", span.name));
        assert_eq!(got["operationName"], span.name.as_str());
        assert_eq!(got["startTime"], span.start_time_unix_nano / 1000);
        let parent = got["references"].as_array().unwrap().iter().find(|r| r["refType"] == "CHILD_OF");
        assert_eq!(
            parent.map(|r| r["spanID"].as_str().unwrap().to_string()),
            span.parent_span_id.is_valid().then(|| span.parent_span_id.to_hex())
        );
        let process = &trace["processes"][got["processID"].as_str().unwrap()];
        assert_eq!(process["serviceName"], service.as_str());
    }
    let (_, services) = spindle.get_json("/api/services");
    assert!(services["data"].as_array().unwrap().iter().any(|s| s == service.as_str()));
}

fn post(url: String, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::blocking::Client::new().post(url).header("content-type", content_type).body(body).send().unwrap();
    (r.status().as_u16(), r.text().unwrap_or_default())
}

#[test]
fn bytes_from_real_clients_arrive_through_every_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let spindle = Spindle::start(dir.path());
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();

    for name in ["jaeger_compact_otel_python.bin", "jaeger_compact_py_jaeger_client.bin"] {
        let bytes = fixture(name);
        udp.send_to(&bytes, spindle.jaeger_compact).unwrap();
        assert_arrived(&spindle, &spindle_codec::jaeger_thrift::decode_emit_batch_compact(&bytes).unwrap());
    }
    let bytes = fixture("jaeger_binary_udp_node_jaeger_client.bin");
    udp.send_to(&bytes, spindle.jaeger_binary).unwrap();
    assert_arrived(&spindle, &spindle_codec::jaeger_thrift::decode_emit_batch_binary(&bytes).unwrap());

    for (name, content_type) in [
        ("jaeger_binary_http_otel_python.bin", "application/x-thrift"),
        ("jaeger_binary_http_node_jaeger_client.bin", "application/vnd.apache.thrift.binary; charset=utf-8"),
    ] {
        let bytes = fixture(name);
        let (status, _) = post(format!("http://{}/api/traces", spindle.jaeger_http), content_type, bytes.clone());
        assert_eq!(status, 202, "{name}");
        assert_arrived(&spindle, &spindle_codec::jaeger_thrift::decode_batch_binary(&bytes).unwrap());
    }

    let bytes = fixture("zipkin_v2_json_otel_python.json");
    let (status, _) = post(format!("http://{}/api/v2/spans", spindle.zipkin), "application/json", bytes.clone());
    assert_eq!(status, 202);
    assert_arrived(&spindle, &spindle_codec::zipkin::decode_v2_json(&bytes).unwrap());
    let bytes = fixture("zipkin_v2_proto_otel_python.bin");
    let (status, _) = post(format!("http://{}/api/v2/spans", spindle.zipkin), "application/x-protobuf", bytes.clone());
    assert_eq!(status, 202);
    assert_arrived(&spindle, &spindle_codec::zipkin::decode_v2_proto(&bytes).unwrap());
    let bytes = fixture("zipkin_v1_json_otel_python.json");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &bytes).unwrap();
    let r = reqwest::blocking::Client::new()
        .post(format!("http://{}/api/v1/spans", spindle.zipkin))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_arrived(&spindle, &spindle_codec::zipkin::decode_v1_json(&bytes).unwrap());

    // Jaeger gRPC: the captured PostSpansRequest, sent with a plain tonic client.
    let bytes = fixture("jaeger_proto_grpc_otel_python.bin");
    let request: spindle_codec::jaeger_proto::PostSpansRequest = prost::Message::decode(bytes.as_slice()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", spindle.jaeger_grpc))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/jaeger.api_v2.CollectorService/PostSpans");
        let codec: tonic_prost::ProstCodec<
            spindle_codec::jaeger_proto::PostSpansRequest,
            spindle_codec::jaeger_proto::PostSpansResponse,
        > = tonic_prost::ProstCodec::default();
        client.unary(tonic::Request::new(request), path, codec).await.unwrap();
    });
    assert_arrived(&spindle, &spindle_codec::jaeger_proto::decode_post_spans_request(&bytes).unwrap());

    // UDP counters tell what arrived.
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", spindle.admin)).unwrap().text().unwrap();
    assert!(
        metrics.contains("spindle_udp_datagrams_total{protocol=\"jaeger_thrift_compact_udp\",outcome=\"received\"} 2"),
        "{metrics}"
    );
}

#[test]
fn malformed_input_on_every_port_is_answered_or_counted_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut spindle = Spindle::start(dir.path());
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let good = fixture("jaeger_compact_py_jaeger_client.bin");
    for garbage in [vec![], vec![0xff; 100], good[..good.len() / 2].to_vec(), vec![0x82, 0x81, 0x01, 0x09]] {
        udp.send_to(&garbage, spindle.jaeger_compact).unwrap();
        udp.send_to(&garbage, spindle.jaeger_binary).unwrap();
    }
    // Deep nesting: a struct field opening a struct, a thousand times.
    let mut deep = vec![0x82, 0x81, 0x01, 0x09];
    deep.extend(b"emitBatch");
    deep.extend(std::iter::repeat_n(0x1c, 5000));
    udp.send_to(&deep, spindle.jaeger_compact).unwrap();

    let thrift = fixture("jaeger_binary_http_otel_python.bin");
    let jaeger = format!("http://{}/api/traces", spindle.jaeger_http);
    let (status, body) = post(jaeger.clone(), "application/json", thrift.clone());
    assert_eq!(status, 400);
    assert!(body.contains("Unsupported content type"), "{body}");
    let (status, body) = post(jaeger.clone(), "application/x-thrift", thrift[..thrift.len() - 7].to_vec());
    assert_eq!(status, 400);
    assert!(!body.is_empty());
    // Too large: refused from its Content-Length, before the body is sent (a client still
    // writing 20 MB when the 413 arrives may see a broken pipe instead of the answer).
    let mut conn = std::net::TcpStream::connect(spindle.jaeger_http).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(conn, "POST /api/traces HTTP/1.1\r\nHost: spindle\r\nContent-Type: application/x-thrift\r\nContent-Length: 20000000\r\n\r\n").unwrap();
    let mut head = [0u8; 12];
    conn.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&head));
    drop((conn, jaeger));

    let zipkin = format!("http://{}/api/v2/spans", spindle.zipkin);
    for (ct, body) in [
        ("application/json", b"{not json".to_vec()),
        ("application/json", b"[{\"traceId\":\"xyz\",\"id\":\"1\"}]".to_vec()),
        ("application/x-protobuf", vec![0xff; 40]),
    ] {
        let (status, reason) = post(zipkin.clone(), ct, body);
        assert_eq!(status, 400, "{ct}");
        assert!(!reason.is_empty());
    }
    let (status, _) = post(zipkin, "application/xml", b"<spans/>".to_vec());
    assert_eq!(status, 415);

    // The UDP garbage was counted as rejected; the server is still up and good input works.
    std::thread::sleep(Duration::from_millis(500));
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", spindle.admin)).unwrap().text().unwrap();
    let rejected: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("spindle_udp_datagrams_total") && l.contains("outcome=\"rejected\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(rejected, 9, "{metrics}");
    assert!(spindle.is_running());
    udp.send_to(&good, spindle.jaeger_compact).unwrap();
    assert_arrived(&spindle, &spindle_codec::jaeger_thrift::decode_emit_batch_compact(&good).unwrap());
}

#[test]
fn remote_sampling_serves_the_strategies_file_and_follows_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let strategies = dir.path().join("strategies.json");
    std::fs::write(
        &strategies,
        r#"{"default_strategy": {"type": "probabilistic", "param": 0.5},
            "service_strategies": [
              {"service": "foo", "type": "probabilistic", "param": 0.8,
               "operation_strategies": [{"operation": "op1", "type": "probabilistic", "param": 0.2}]},
              {"service": "bar", "type": "ratelimiting", "param": 5}]}"#,
    )
    .unwrap();
    let spindle =
        Spindle::start_with(&dir.path().join("data"), &["--sampling-strategies", strategies.to_str().unwrap()]);
    let get = |url: String| {
        let r = reqwest::blocking::get(url).unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    let (status, bar) = get(format!("http://{}/sampling?service=bar", spindle.sampling));
    assert_eq!(status, 200);
    let bar: Value = serde_json::from_str(&bar).unwrap();
    assert_eq!(bar["strategyType"], "RATE_LIMITING");
    assert_eq!(bar["rateLimitingSampling"]["maxTracesPerSecond"], 5);
    let (_, foo) = get(format!("http://{}/api/sampling?service=foo", spindle.jaeger_http));
    let foo: Value = serde_json::from_str(&foo).unwrap();
    assert_eq!(foo["strategyType"], "PROBABILISTIC");
    let ops = &foo["operationSampling"]["perOperationStrategies"];
    assert_eq!(ops[0]["operation"], "op1");
    assert_eq!(ops[0]["probabilisticSampling"]["samplingRate"], 0.2);
    let (_, other) = get(format!("http://{}/?service=unknown", spindle.sampling));
    let other: Value = serde_json::from_str(&other).unwrap();
    assert_eq!(other["probabilisticSampling"]["samplingRate"], 0.5);
    let (status, msg) = get(format!("http://{}/sampling", spindle.sampling));
    assert_eq!((status, msg.trim()), (400, "'service' parameter must be provided once"));
    let (status, _) = get(format!("http://{}/sampling?service=a&service=b", spindle.sampling));
    assert_eq!(status, 400);

    // Change the file: the new strategy is served within a few seconds.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(
        &strategies,
        r#"{"service_strategies": [{"service": "bar", "type": "probabilistic", "param": 0.1}]}"#,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, bar) = get(format!("http://{}/sampling?service=bar", spindle.sampling));
        let bar: Value = serde_json::from_str(&bar).unwrap();
        if bar["strategyType"] == "PROBABILISTIC" {
            assert_eq!(bar["probabilisticSampling"]["samplingRate"], 0.1);
            break;
        }
        assert!(Instant::now() < deadline, "strategies not reloaded: {bar}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
