//! HTTP propagation between two axum services over real loopback HTTP: the caller's reqwest
//! middleware injects, the callee's tower layer extracts, and the spans read back from an OTLP
//! receiver form one trace across both services.

mod support;

use std::time::Duration;

use spindle_sdk::Protocol;
use support::scenarios::{ClStock, RECOMMENDATIONS_SPANS};
use support::{OtlpSink, SinkSpan, TestService};

const WAIT: Duration = Duration::from_secs(20);
const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const ERROR: i32 = 2;

fn one<'a>(spans: &'a [SinkSpan], service: &str, name: &str) -> &'a SinkSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.service == service && s.name == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name:?} of {service}: {spans:#?}");
    found[0]
}

/// The API exports over gRPC, the market-data service over HTTP.
fn start(sink: &OtlpSink) -> (ClStock, TestService, TestService) {
    let api = TestService::new("clstock-api", &sink.grpc_endpoint, Protocol::Grpc);
    let market = TestService::new("market-data-service", &sink.http_endpoint, Protocol::HttpProtobuf);
    (ClStock::start(&api, &market), api, market)
}

#[test]
fn a_request_is_one_trace_across_two_services() {
    let sink = OtlpSink::start();
    let (clstock, _api, _market) = start(&sink);
    let (trace_id, caller_span) = ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174");
    assert_eq!(clstock.call("/recommendations", trace_id, caller_span), 200);
    let spans = sink.wait_for_trace(trace_id, RECOMMENDATIONS_SPANS, WAIT);

    let server = one(&spans, "clstock-api", "GET /recommendations");
    assert_eq!(server.kind, SERVER);
    assert_eq!(server.parent_span_id, caller_span, "parent extracted from the request");
    assert_eq!(server.attr("http.request.method"), Some("GET"));
    assert_eq!(server.attr("http.route"), Some("/recommendations"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_ne!(server.status_code, ERROR);

    let clients: Vec<_> = spans.iter().filter(|s| s.kind == CLIENT).collect();
    assert_eq!(clients.len(), 2, "{spans:#?}");
    let backends: Vec<_> =
        spans.iter().filter(|s| s.service == "market-data-service" && s.name == "GET /stocks/{symbol}").collect();
    assert_eq!(backends.len(), 2, "{spans:#?}");
    for client in &clients {
        assert_eq!(client.service, "clstock-api");
        assert_eq!(client.name, "GET");
        assert_eq!(client.parent_span_id, server.span_id);
        assert_eq!(client.attr("http.response.status_code"), Some("200"));
        assert_eq!(client.attr("server.address"), Some("127.0.0.1"));
        let url = client.attr("url.full").expect("url.full");
        let backend = backends
            .iter()
            .find(|b| b.parent_span_id == client.span_id)
            .unwrap_or_else(|| panic!("a server span under client {url}: {spans:#?}"));
        assert_eq!(backend.kind, SERVER);
        assert_eq!(backend.attr("http.route"), Some("/stocks/{symbol}"));
        assert!(url.ends_with(backend.attr("url.path").expect("url.path")));
        let work = spans
            .iter()
            .find(|w| w.name == "get_stock_data" && w.parent_span_id == backend.span_id)
            .unwrap_or_else(|| panic!("handler span under {}", backend.span_id));
        assert_eq!(work.service, "market-data-service");
        assert!(url.ends_with(work.attr("symbol").expect("symbol attribute")));
    }
}

#[test]
fn server_errors_mark_spans_on_both_sides_and_4xx_does_not() {
    let sink = OtlpSink::start();
    let (clstock, _api, _market) = start(&sink);
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    assert_eq!(clstock.call("/broken", trace_id, "b7ad6b7169203331"), 502);
    let spans = sink.wait_for_trace(trace_id, 3, WAIT);
    let failed = one(&spans, "market-data-service", "GET /fail");
    assert_eq!(failed.status_code, ERROR, "5xx is an error for a server: {failed:?}");
    assert_eq!(failed.attr("error.type"), Some("500"));
    let client = spans.iter().find(|s| s.kind == CLIENT).expect("client span");
    assert_eq!(client.status_code, ERROR, "5xx is an error for a client: {client:?}");
    assert_eq!(failed.parent_span_id, client.span_id);
    let front = one(&spans, "clstock-api", "GET /broken");
    assert_eq!(front.status_code, ERROR);
    assert_eq!(front.attr("http.response.status_code"), Some("502"));

    let not_found_trace = "11111111111111111111111111111111";
    assert_eq!(clstock.call("/no/such/page", not_found_trace, "2222222222222222"), 404);
    let spans = sink.wait_for_trace(not_found_trace, 1, WAIT);
    assert_eq!(spans[0].name, "GET", "no route matched, so the name is the method alone");
    assert_eq!(spans[0].attr("http.route"), None);
    assert_ne!(spans[0].status_code, ERROR, "4xx is not a server error");
}
