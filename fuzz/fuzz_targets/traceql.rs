#![no_main]
//! Fuzz target: TraceQL queries, parsed (errors must carry a position inside the query);
//! those that parse are evaluated on a small trace.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match spindle_traceql::parse(text) {
        Ok(parsed) => {
            if let spindle_traceql::ast::Query::Search(expr) = parsed.query {
                let spans = vec![spindle_model::Span::default(), spindle_model::Span::default()];
                let view = spindle_traceql::eval::TraceView::new(&spans);
                let _ = spindle_traceql::eval::eval_trace(&expr, &view);
            }
        }
        Err(e) => assert!(e.offset <= text.len() && e.line >= 1 && e.column >= 1),
    }
});
