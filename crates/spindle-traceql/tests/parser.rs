//! The parser on hostile and mistaken input: errors point at what was typed wrong, and no
//! input panics or takes long.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use spindle_traceql::ast::{MetricsExpr, Query, SpansetExpr, SpansetOp};
use spindle_traceql::parse;

fn error(q: &str) -> (usize, usize, String) {
    let e = parse(q).expect_err(q);
    (e.line, e.column, e.to_string())
}

#[test]
fn errors_say_where_and_what_was_expected() {
    let (line, column, text) = error("{ span.a = }");
    assert_eq!((line, column), (1, 12));
    assert!(text.contains("expected a value, found '}'"), "{text}");
    let (line, column, text) = error("{ resource.service.name = \"a\"\n  && foo = 1 }");
    assert_eq!((line, column), (2, 6));
    assert!(text.contains("unknown name 'foo'") && text.contains("span.foo"), "{text}");
    assert!(error("{ span.a = \"x }").2.contains("unterminated string"));
    assert!(error("{ span.a =~ \"(\" }").2.contains("invalid regular expression"));
    assert!(error("{ duration > 5parsecs }").2.contains("unknown duration unit"));
    assert!(error("{ span:nope = 1 }").2.contains("unknown intrinsic 'span:nope'"));
    assert!(error("{ } | rate() |").2.contains("topk(n) or bottomk(n)"));
    assert!(error("{ } | quantile_over_time(duration)").2.contains("at least one quantile"));
    assert!(error("{ a } >>").2.contains("unknown name 'a'"));
    assert!(error("{ } >>").2.contains("expected a spanset"));
    assert!(error("").2.contains("expected a spanset"));
}

#[test]
fn precedence_follows_tempo() {
    // Structural binds tighter than &&, which binds tighter than ||.
    let Query::Search(SpansetExpr::Binary(op, _, rhs)) = parse("{ } || { } && { } >> { }").unwrap().query else {
        panic!()
    };
    assert_eq!(op, SpansetOp::Or);
    let SpansetExpr::Binary(SpansetOp::And, _, inner) = *rhs else { panic!() };
    assert!(matches!(*inner, SpansetExpr::Binary(SpansetOp::Descendant, _, _)));
    // Structural operators are left-associative.
    let Query::Search(SpansetExpr::Binary(SpansetOp::Child, lhs, _)) = parse("{ } >> { } > { }").unwrap().query else {
        panic!()
    };
    assert!(matches!(*lhs, SpansetExpr::Binary(SpansetOp::Descendant, _, _)));
    // Metrics arithmetic: * before +.
    let Query::Metrics(MetricsExpr::Binary(op, _, _)) = parse("({} | rate()) + 2 * ({} | rate())").unwrap().query
    else {
        panic!()
    };
    assert_eq!(op.symbol(), "+");
    // Whole-number constants keep integer semantics.
    let Query::Metrics(MetricsExpr::Binary(_, _, rhs)) = parse("({} | rate()) * (1 / 2)").unwrap().query else {
        panic!()
    };
    assert!(matches!(*rhs, MetricsExpr::Scalar(x) if x == 0.0));
}

#[test]
fn deep_nesting_is_refused_quickly() {
    for q in ["(".repeat(60_000), "{ ".to_string() + &"!".repeat(60_000) + "true }", "(".repeat(100_000)] {
        let started = Instant::now();
        assert!(parse(&q).is_err());
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    // A long flat chain is fine: operators chain in a loop, not by recursion.
    let started = Instant::now();
    assert!(parse(&("{ } >> ".repeat(5_000) + "{ }")).is_ok());
    assert!(started.elapsed() < Duration::from_secs(5));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
        if let Err(e) = parse(&text) {
            prop_assert!(e.offset <= text.len() && e.line >= 1 && e.column >= 1);
        }
    }

    #[test]
    fn arbitrary_token_soup_never_panics(parts in prop::collection::vec(prop::sample::select(vec![
        "{", "}", "(", ")", "|", "&&", "||", ">>", "<<", "!~", "=~", "&>>", "!<", "~", "=", "!=", ">", "<=",
        "span.a", ".b", "resource.service.name", "duration", "status", "error", "nil", "\"x\"", "1", ".5", "5ms",
        "count()", "avg(duration)", "by", "select", "rate()", "quantile_over_time", ",", "topk(2)", "with",
        "most_recent=true", "-", "*", "/", "trace:rootService", "span:childCount", "event:name", "!",
    ]), 0..30)) {
        let text = parts.join(" ");
        if let Err(e) = parse(&text) {
            prop_assert!(e.offset <= text.len());
        }
    }
}
