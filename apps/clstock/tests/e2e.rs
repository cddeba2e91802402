//! End to end: a real spindle server, `market-data-service` and `clstock-api` as child
//! processes exporting to it, and the seed's five use cases read back through Spindle's
//! Jaeger API (`GET /api/traces/{id}`), one trace each, with parentage checked span by span
//! across both services.

mod support;

use std::collections::BTreeSet;

use support::{Service, Spindle, Trace, TraceSpan};

const API: &str = "clstock-api";
const MARKET: &str = "market-data-service";
const UNIVERSE_SIZE: usize = 18;
/// Spans one market-data fetch adds under `get_stock_data`'s parent: `get_stock_data`,
/// `http_get`, the SDK's CLIENT span, the market-data SERVER span and `load_history`.
const FETCH_SPANS: usize = 5;

/// The ancestry of a market-data `load_history` span fetched from under `tail` (the API
/// spans above `get_stock_data`, innermost first).
fn fetch_chain(tail: &[&str]) -> Vec<String> {
    let mut chain: Vec<String> = [
        format!("load_history@{MARKET}"),
        format!("GET /v1/history/{{ticker}}@{MARKET}"),
        format!("GET@{API}"),
        format!("http_get@{API}"),
        format!("get_stock_data@{API}"),
    ]
    .into();
    chain.extend(tail.iter().map(|op| format!("{op}@{API}")));
    chain
}

/// Checks the kinds along a fetch: the API's CLIENT span is the parent of the market-data
/// SERVER span, which is where the trace crosses the service boundary.
fn assert_fetch_crosses_services(trace: &Trace, load: &TraceSpan) {
    let server = trace.parent_of(load).expect("load_history has its server span");
    assert_eq!(server.tag("span.kind"), Some("server"), "{server:?}");
    assert_eq!(server.tag("http.route"), Some("/v1/history/{ticker}"));
    let client = trace.parent_of(server).expect("the server span has the api's client span");
    assert_eq!((client.service.as_str(), client.tag("span.kind")), (API, Some("client")), "{client:?}");
    assert_eq!(client.tag("http.response.status_code"), server.tag("http.response.status_code"));
}

/// Checks that every symbol of the universe was fetched once from under `tail`, across both
/// services, and returns the market-data `load_history` spans.
fn universe_fetched<'a>(trace: &'a Trace, tail: &[&str]) -> Vec<&'a TraceSpan> {
    let loads: Vec<&TraceSpan> = trace.named(MARKET, "load_history").collect();
    assert_eq!(loads.len(), UNIVERSE_SIZE, "{:#?}", trace.summary());
    for load in &loads {
        assert_eq!(trace.ancestry(load), fetch_chain(tail));
        assert_fetch_crosses_services(trace, load);
    }
    loads
}

/// Polls `GET /train/{id}` until the job is no longer running; its last state.
fn finished_job(api: &Service, id: &str) -> serde_json::Value {
    support::wait_until(&format!("training job {id} to finish"), std::time::Duration::from_secs(120), || {
        let status = api.get(&format!("/train/{id}")).json();
        (status["status"] != "running").then_some(status)
    })
}

fn score_of(span: &TraceSpan) -> f64 {
    span.tag("score").and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no score on {span:?}"))
}

#[test]
fn request_flow_prediction_and_data_fetching_are_each_one_trace_across_both_services() {
    let spindle = Spindle::start();
    let market = Service::market_data(&spindle, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Service::api(&spindle, &market, &dir.path().join("model.json"));

    // 1. API request flow: GET /recommendations ranks the whole universe.
    let reply = api.get("/recommendations?top_n=3");
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = reply.json();
    let recommended = body["recommendations"].as_array().expect("recommendations");
    assert_eq!(recommended.len(), 3, "{body}");
    let scores: Vec<f64> = recommended.iter().map(|r| r["score"].as_f64().expect("score")).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    let trace = spindle.wait_for_spans(reply.trace_id(), 2 + UNIVERSE_SIZE * (1 + FETCH_SPANS));
    let root = trace.one(API, "GET /recommendations");
    assert_eq!(root.parent, None, "the api's server span is the root");
    assert_eq!(root.tag("http.response.status_code"), Some("200"));
    let ranking = trace.one(API, "get_recommendations");
    assert_eq!(ranking.parent.as_deref(), Some(root.span_id.as_str()));
    assert_eq!(ranking.tag("top_n"), Some("3"));
    assert_eq!(ranking.tag("recommendation_count"), Some("3"));
    let scored: Vec<&TraceSpan> = trace.named(API, "calculate_score").collect();
    assert_eq!(scored.len(), UNIVERSE_SIZE);
    assert!(scored.iter().all(|s| s.parent.as_deref() == Some(ranking.span_id.as_str())));
    let mut span_scores: Vec<f64> = scored.iter().map(|s| score_of(s)).collect();
    span_scores.sort_by(|a, b| b.total_cmp(a));
    for (body_score, span_score) in scores.iter().zip(&span_scores) {
        assert!(
            (body_score - span_score).abs() < 1e-9,
            "the top scores are the best spans: {scores:?} {span_scores:?}"
        );
    }
    universe_fetched(&trace, &["calculate_score", "get_recommendations", "GET /recommendations"]);
    let tickers: BTreeSet<&str> = trace.named(API, "get_stock_data").filter_map(|s| s.tag("ticker")).collect();
    assert!(tickers.contains("7203.T") && tickers.contains("AAPL"), "tokyo codes are fetched as .T: {tickers:?}");

    // 2. Prediction workflow: one symbol, a Tokyo one.
    let reply = api.get("/predict/7203");
    assert_eq!(reply.status, 200, "{reply:?}");
    let prediction = reply.json();
    assert_eq!(prediction["ticker"], "7203.T");
    assert_eq!(prediction["model_version"], "builtin");
    let trace = spindle.wait_for_spans(reply.trace_id(), 2 + FETCH_SPANS);
    assert_eq!(trace.0.len(), 2 + FETCH_SPANS, "{:#?}", trace.summary());
    let load = trace.one(MARKET, "load_history");
    assert_eq!(trace.ancestry(load), fetch_chain(&["calculate_score", "GET /predict/{symbol}"]));
    assert_fetch_crosses_services(&trace, load);
    let score = trace.one(API, "calculate_score");
    assert_eq!(score.tag("symbol"), Some("7203"));
    assert!((score_of(score) - prediction["score"].as_f64().expect("score")).abs() < 1e-9);
    let fetch = trace.one(API, "get_stock_data");
    assert_eq!(fetch.tag("ticker"), Some("7203.T"));
    assert_eq!(fetch.tag("period"), Some("1y"));
    assert_eq!(fetch.tag("data_points"), Some("261"));

    // 3. Data fetching: the bars themselves.
    let reply = api.get("/data/AAPL?period=6mo");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["data_points"], 130);
    let trace = spindle.wait_for_spans(reply.trace_id(), 1 + FETCH_SPANS);
    let load = trace.one(MARKET, "load_history");
    assert_eq!(trace.ancestry(load), fetch_chain(&["GET /data/{symbol}"]));
    assert_eq!(load.tag("bars"), Some("130"));
    let fetch = trace.one(API, "get_stock_data");
    for (key, value) in [("symbol", "AAPL"), ("period", "6mo"), ("ticker", "AAPL"), ("data_points", "130")] {
        assert_eq!(fetch.tag(key), Some(value), "{key} on {fetch:?}");
    }
    assert!(fetch.event("No data returned").is_none());

    // A bad top_n is a 422, traced as an error with the reason.
    for bad in ["0", "11", "abc"] {
        let reply = api.get(&format!("/recommendations?top_n={bad}"));
        assert_eq!(reply.status, 422, "{reply:?}");
        let message = format!("top_n must be an integer from 1 to 10, got {bad:?}");
        assert_eq!(reply.json()["error"], message);
        let trace = spindle.wait_for_spans(reply.trace_id(), 1);
        let root = trace.one(API, "GET /recommendations");
        assert!(root.is_error(), "{root:?}");
        assert_eq!(root.tag("http.response.status_code"), Some("422"));
        let exception = root.event("exception").unwrap_or_else(|| panic!("exception event on {root:?}"));
        assert_eq!(exception.get("exception.message"), Some(&message));
        assert_eq!(reply.json()["trace_id"], reply.trace_id());
    }

    // An unknown symbol is a 404: not a server error on the market-data side.
    let reply = api.get("/predict/ZZZZ");
    assert_eq!(reply.status, 404, "{reply:?}");
    // The two services export separately, each in its own batches: wait for a span of each
    // side, not a span count one side alone may reach.
    let trace = spindle.wait_for_trace(reply.trace_id(), "the market-data server span and the API's fetch", |t| {
        t.named(MARKET, "GET /v1/history/{ticker}").next().is_some() && t.named(API, "get_stock_data").next().is_some()
    });
    let server = trace.one(MARKET, "GET /v1/history/{ticker}");
    assert_eq!(server.tag("http.response.status_code"), Some("404"));
    assert!(!server.is_error(), "a 4xx is not a server error: {server:?}");
    assert!(trace.one(API, "get_stock_data").is_error());

    // Both services expose metrics and health.
    for service in [&api, &market] {
        let health = service.get("/healthz");
        assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
        assert!(health.trace_id.is_none(), "probes are not traced");
    }
    let metrics = api.get("/metrics").body;
    for expected in [
        r#"http_server_requests_total{method="GET",route="/recommendations",status="422"} 3"#,
        r#"clstock_predictions_total{outcome="ok"} 19"#,
        "# TYPE http_server_request_duration_seconds histogram",
    ] {
        assert!(metrics.contains(expected), "{expected} in {metrics}");
    }
    let metrics = market.get("/metrics").body;
    assert!(metrics.contains(r#"market_data_responses_total{outcome="ok"} 20"#), "{metrics}");
    assert!(metrics.contains(r#"market_data_responses_total{outcome="unknown_ticker"} 1"#), "{metrics}");
}

#[test]
fn a_training_job_is_one_trace_with_its_stages_in_order_and_its_model_is_used_afterwards() {
    let spindle = Spindle::start();
    let market = Service::market_data(&spindle, &[]);
    let dir = tempfile::tempdir().expect("tempdir");
    let model_path = dir.path().join("models/clstock.json");
    let api = Service::api(&spindle, &market, &model_path);

    let reply = api.post("/train", "");
    assert_eq!(reply.status, 202, "{reply:?}");
    let job = reply.json();
    assert_eq!(job["id"], "train-1");
    assert_eq!(job["status"], "running");
    assert_eq!(job["trace_id"], reply.trace_id());
    assert_eq!(reply.headers.get("location").and_then(|v| v.to_str().ok()), Some("/train/train-1"));

    let done = finished_job(&api, "train-1");
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["model_version"], "train-1");
    assert_eq!(done["symbols_loaded"], UNIVERSE_SIZE);
    let accuracy = done["validation"]["accuracy"].as_f64().expect("accuracy");
    assert!(accuracy > done["validation"]["baseline_accuracy"].as_f64().expect("baseline"), "{done}");
    assert!(model_path.is_file(), "the model is saved");

    // 4. Model training: the POST's server span, the job under it, its stages in order.
    let stages = ["load_data", "build_features", "fit_model", "validate_model", "save_model"];
    let trace = spindle.wait_for_spans(reply.trace_id(), 2 + stages.len() + UNIVERSE_SIZE * FETCH_SPANS);
    let root = trace.one(API, "POST /train");
    assert_eq!(root.parent, None);
    assert_eq!(root.tag("http.response.status_code"), Some("202"));
    let job_span = trace.one(API, "train_model");
    assert_eq!(job_span.parent.as_deref(), Some(root.span_id.as_str()));
    assert_eq!(job_span.tag("job.id"), Some("train-1"));
    assert_eq!(job_span.tag("model.version"), Some("train-1"));
    assert!(!job_span.is_error());
    // The job outlives the request, and the request's span says how long the request took.
    assert!(
        root.start + root.duration < job_span.start + job_span.duration,
        "POST /train ends when its response is sent, before the job: {root:?} {job_span:?}"
    );
    let mut children: Vec<&TraceSpan> = trace.children_of(job_span).collect();
    children.sort_by_key(|s| s.start);
    let names: Vec<&str> = children.iter().map(|s| s.operation.as_str()).collect();
    assert_eq!(names, stages, "stages in order");
    for pair in children.windows(2) {
        assert!(
            pair[0].start + pair[0].duration <= pair[1].start,
            "{} ends before {} starts",
            pair[0].operation,
            pair[1].operation
        );
    }
    let validate = trace.one(API, "validate_model");
    let span_accuracy: f64 =
        validate.tag("validation.accuracy").and_then(|v| v.parse().ok()).expect("validation.accuracy");
    assert!((span_accuracy - accuracy).abs() < 1e-9);
    assert_eq!(validate.tag("beats_baseline"), Some("true"));
    assert!(validate.tag("baseline.log_loss").is_some() && validate.tag("validation.log_loss").is_some());
    for load in universe_fetched(&trace, &["load_data", "train_model", "POST /train"]) {
        assert_eq!(load.tag("period"), Some("5y"));
    }

    // Later predictions use the trained model, and so does a restarted api.
    let prediction = api.get("/predict/AAPL").json();
    assert_eq!(prediction["model_version"], "train-1", "{prediction}");
    drop(api);
    let restarted = Service::api(&spindle, &market, &model_path);
    let model = restarted.get("/model").json();
    assert_eq!(model["version"], "train-1");
    assert_eq!(model["validation"]["accuracy"].as_f64(), Some(accuracy));

    // A bad request starts nothing; an unknown job is a 404.
    let reply = restarted.post("/train", r#"{"horizon_days": 0}"#);
    assert_eq!(reply.status, 422, "{reply:?}");
    assert_eq!(reply.json()["error"], "horizon_days must be between 1 and 60, got 0");
    assert_eq!(restarted.post("/train", r#"{"period": "1d"}"#).status, 422);
    assert_eq!(restarted.get("/train/train-9").status, 404);
}

#[test]
fn a_batch_fans_out_under_one_span_with_a_concurrent_child_per_symbol() {
    let spindle = Spindle::start();
    // Enough latency that concurrent fetches visibly overlap.
    let market = Service::market_data(&spindle, &[("MARKET_DATA_LATENCY_MS", "150")]);
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Service::api(&spindle, &market, &dir.path().join("model.json"));

    let symbols = ["AAPL", "7203", "MSFT", "6758", "NVDA"];
    let reply = api.post("/batch/predictions", &serde_json::json!({ "symbols": symbols }).to_string());
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = reply.json();
    assert_eq!((body["succeeded"].as_u64(), body["failed"].as_u64()), (Some(5), Some(0)), "{body}");

    // 5. Batch processing: every child under the batch span, each crossing to market data.
    let trace = spindle.wait_for_spans(reply.trace_id(), 2 + symbols.len() * (1 + FETCH_SPANS));
    let root = trace.one(API, "POST /batch/predictions");
    let batch = trace.one(API, "batch_predictions");
    assert_eq!(batch.parent.as_deref(), Some(root.span_id.as_str()));
    assert_eq!(batch.tag("batch.size"), Some("5"));
    assert_eq!(batch.tag("batch.succeeded"), Some("5"));
    let children: Vec<&TraceSpan> = trace.children_of(batch).collect();
    assert_eq!(children.len(), symbols.len(), "{:#?}", trace.summary());
    assert!(children.iter().all(|c| c.operation == "calculate_score"));
    let scored: BTreeSet<&str> = children.iter().filter_map(|c| c.tag("symbol")).collect();
    assert_eq!(scored, symbols.into_iter().collect());
    for load in trace.named(MARKET, "load_history") {
        assert_eq!(
            trace.ancestry(load),
            fetch_chain(&["calculate_score", "batch_predictions", "POST /batch/predictions"])
        );
    }
    let last_start = children.iter().map(|c| c.start).max().unwrap_or_default();
    let first_end = children.iter().map(|c| c.start + c.duration).min().unwrap_or_default();
    assert!(last_start < first_end, "the children ran concurrently: {children:#?}");

    // Bad batches are refused before any work, as traced errors.
    for bad in [r#"{"symbols": []}"#, r#"{"symbols": ["A B"]}"#, r#"{"tickers": ["AAPL"]}"#, "not json"] {
        let reply = api.post("/batch/predictions", bad);
        assert_eq!(reply.status, 422, "{bad}: {reply:?}");
        let trace = spindle.wait_for_spans(reply.trace_id(), 1);
        assert!(trace.one(API, "POST /batch/predictions").is_error());
    }
}

#[test]
fn market_data_failures_and_empty_answers_show_in_the_api_traces() {
    let spindle = Spindle::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let failing = Service::market_data(&spindle, &[("MARKET_DATA_ERROR_RATE", "1")]);
    let api = Service::api(&spindle, &failing, &dir.path().join("model.json"));

    let reply = api.get("/predict/AAPL");
    assert_eq!(reply.status, 502, "{reply:?}");
    let error = reply.json()["error"].as_str().map(str::to_owned).unwrap_or_default();
    assert_eq!(error, "market data answered 503 for AAPL: simulated upstream outage for AAPL");
    let trace = spindle.wait_for_spans(reply.trace_id(), 2 + FETCH_SPANS);
    let load = trace.one(MARKET, "load_history");
    assert_eq!(trace.ancestry(load), fetch_chain(&["calculate_score", "GET /predict/{symbol}"]));
    // Every span from the failure up to the api's root is marked, with the reason where the
    // code saw it.
    let mut span = load;
    loop {
        assert!(span.is_error(), "{} of {} is an error: {span:?}", span.operation, span.service);
        match trace.parent_of(span) {
            Some(parent) => span = parent,
            None => break,
        }
    }
    assert_eq!(trace.one(MARKET, "GET /v1/history/{ticker}").tag("http.response.status_code"), Some("503"));
    assert_eq!(trace.one(API, "GET /predict/{symbol}").tag("http.response.status_code"), Some("502"));
    for operation in ["http_get", "get_stock_data", "calculate_score"] {
        let exception = trace.one(API, operation).event("exception");
        let message = exception.and_then(|e| e.get("exception.message")).map(String::as_str).unwrap_or_default();
        assert!(message.contains("simulated upstream outage for AAPL"), "{operation}: {message:?}");
    }

    let reply = api.get("/recommendations");
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.json()["error"], format!("no symbol could be scored, {UNIVERSE_SIZE} failed"));
    let trace = spindle.wait_for_spans(reply.trace_id(), 2 + UNIVERSE_SIZE * (1 + FETCH_SPANS));
    assert!(trace.named(API, "calculate_score").all(TraceSpan::is_error));
    assert!(trace.one(API, "get_recommendations").is_error());

    // A training job without data fails in load_data, visibly, and the model stays.
    let reply = api.post("/train", "{}");
    assert_eq!(reply.status, 202, "{reply:?}");
    let done = finished_job(&api, "train-1");
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["stage"], "load_data");
    assert_eq!(done["error"], format!("only 0 of {UNIVERSE_SIZE} symbols loaded, need 9"));
    let trace = spindle.wait_for_trace(reply.trace_id(), "a failed train_model", |t| {
        t.named(API, "train_model").any(TraceSpan::is_error)
    });
    let load_data = trace.one(API, "load_data");
    assert!(load_data.is_error());
    assert_eq!(load_data.tag("symbols.failed"), Some("18"));
    assert_eq!(api.get("/model").json()["version"], "builtin");

    // An empty answer is not an error for the fetch: it is the "No data returned" event, and
    // a prediction without data fails.
    let empty = Service::market_data(&spindle, &[("MARKET_DATA_EMPTY_RATE", "1")]);
    let api = Service::api(&spindle, &empty, &dir.path().join("model.json"));
    let reply = api.get("/data/7203");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["data_points"], 0);
    let trace = spindle.wait_for_spans(reply.trace_id(), 1 + FETCH_SPANS);
    let fetch = trace.one(API, "get_stock_data");
    assert_eq!(fetch.tag("data_points"), Some("0"));
    assert!(!fetch.is_error());
    let event = fetch.event("No data returned").unwrap_or_else(|| panic!("no data event on {fetch:?}"));
    assert_eq!(event.get("ticker").map(String::as_str), Some("7203.T"));
    assert_eq!(trace.one(MARKET, "load_history").tag("fault"), Some("empty"));

    let reply = api.get("/predict/7203");
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.json()["error"], "no data returned for 7203");
    let trace = spindle.wait_for_spans(reply.trace_id(), 2 + FETCH_SPANS);
    assert!(trace.one(API, "calculate_score").is_error());
    assert!(trace.one(API, "get_stock_data").event("No data returned").is_some());
}
