//! Black–Scholes–Merton against published reference values, put–call parity as a property,
//! and implied volatility recovering the volatility a price was made with.
//!
//! The inputs are Hull's worked examples (*Options, Futures, and Other Derivatives*). Hull
//! prints two or three significant digits; the expected values here are the same formulas
//! evaluated with mpmath at 40-digit precision (then rounded to the nearest double), and
//! the headline figures are also checked to round to what Hull prints.

use proptest::prelude::*;
use spindle_pipeline::bsm::{self, Contract, IvMethod, IvSettings, OptionType};
use spindle_pipeline::market::{SimulatedMarket, SimulatorSettings};

const TOLERANCE: f64 = 1e-6;

fn contract(option_type: OptionType, spot: f64, strike: f64, rate: f64, q: f64, t: f64) -> Contract {
    Contract { option_type, spot, strike, rate, dividend_yield: q, time_years: t }
}

fn assert_close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() < TOLERANCE, "{what}: got {got}, want {want} (difference {:e})", got - want);
}

/// `value` rounded to `decimals` places equals Hull's printed `printed`.
fn assert_prints_as(what: &str, value: f64, decimals: i32, printed: f64) {
    let scale = 10f64.powi(decimals);
    assert_eq!((value * scale).round() / scale, printed, "{what}: {value} does not round to Hull's {printed}");
}

#[test]
fn hull_example_15_6_call_and_put_prices() {
    // S0 = 42, K = 40, r = 10 %, σ = 20 %, T = 6 months: c = 4.76, p = 0.81.
    let call = contract(OptionType::Call, 42.0, 40.0, 0.10, 0.0, 0.5).value(0.20);
    let put = contract(OptionType::Put, 42.0, 40.0, 0.10, 0.0, 0.5).value(0.20);
    assert_close("call", call.price, 4.759422392871533);
    assert_close("put", put.price, 0.8085993729000936);
    assert_prints_as("call", call.price, 2, 4.76);
    assert_prints_as("put", put.price, 2, 0.81);
    assert_close("call delta", call.greeks.delta, 0.779131290942669);
    assert_close("put delta", put.greeks.delta, -0.22086870905733105);
    assert_close("gamma", call.greeks.gamma, 0.04996267040591185);
    assert_close("vega", call.greeks.vega, 8.813415059602852);
    assert_close("call theta", call.greeks.theta, -4.559092194592627);
    assert_close("put theta", put.greeks.theta, -0.7541744965897705);
    assert_close("call rho", call.greeks.rho, 13.982045913360281);
    assert_close("put rho", put.greeks.rho, -5.042542576653999);
}

#[test]
fn hull_greeks_example_20_week_call() {
    // The greek-letters chapter's running example: S0 = 49, K = 50, r = 5 %, σ = 20 %,
    // T = 20 weeks. Hull: price 2.40, Δ = 0.522, Γ = 0.066, vega = 12.1, Θ = −4.31 a year,
    // ρ = 8.91.
    let v = contract(OptionType::Call, 49.0, 50.0, 0.05, 0.0, 20.0 / 52.0).value(0.20);
    assert_close("price", v.price, 2.4005273232717146);
    assert_close("delta", v.greeks.delta, 0.5216046610663964);
    assert_close("gamma", v.greeks.gamma, 0.06554403934784439);
    assert_close("vega", v.greeks.vega, 12.1054798826288);
    assert_close("theta", v.greeks.theta, -4.305329822932573);
    assert_close("rho", v.greeks.rho, 8.90696194960835);
    assert_prints_as("price", v.price, 2, 2.40);
    assert_prints_as("delta", v.greeks.delta, 3, 0.522);
    assert_prints_as("gamma", v.greeks.gamma, 3, 0.066);
    assert_prints_as("vega", v.greeks.vega, 1, 12.1);
    assert_prints_as("theta", v.greeks.theta, 2, -4.31);
    assert_prints_as("rho", v.greeks.rho, 2, 8.91);
}

#[test]
fn hull_index_option_with_dividend_yield() {
    // European call on an index: S0 = 930, K = 900, r = 8 %, q = 3 %, σ = 20 %,
    // T = 2 months. Hull: c = 51.83.
    let call = contract(OptionType::Call, 930.0, 900.0, 0.08, 0.03, 2.0 / 12.0).value(0.20);
    let put = contract(OptionType::Put, 930.0, 900.0, 0.08, 0.03, 2.0 / 12.0).value(0.20);
    assert_close("call", call.price, 51.83295679649085);
    assert_prints_as("call", call.price, 2, 51.83);
    assert_close("put", put.price, 14.550996773772445);
    assert_close("call delta", call.greeks.delta, 0.7034180086011917);
    assert_close("put delta", put.greeks.delta, -0.2915944705914905);
    assert_close("gamma", put.greeks.gamma, 0.0045074038616943375);
    assert_close("vega", put.greeks.vega, 129.94845333264777);
    assert_close("call theta", call.greeks.theta, -106.53137285582481);
    assert_close("put theta", put.greeks.theta, -63.24584937518256);
    assert_close("call rho", call.greeks.rho, 100.39096520043626);
    assert_close("put rho", put.greeks.rho, -47.622309070643105);
}

#[test]
fn hull_implied_volatility_example() {
    // A call worth 1.875 with S0 = 21, K = 20, r = 10 %, T = 3 months has an implied
    // volatility of 23.5 % (Hull, "Implied volatilities").
    let c = contract(OptionType::Call, 21.0, 20.0, 0.10, 0.0, 0.25);
    let iv = bsm::implied_volatility(&c, 1.875).expect("a volatility exists");
    assert_close("implied volatility", iv.volatility, 0.2345129139976438);
    assert_prints_as("implied volatility", iv.volatility, 3, 0.235);
    assert_eq!(iv.method, IvMethod::Newton);
}

#[test]
fn bisection_alone_finds_the_same_volatility() {
    let c = contract(OptionType::Call, 21.0, 20.0, 0.10, 0.0, 0.25);
    let settings = IvSettings { max_newton_iterations: 0, ..IvSettings::default() };
    let iv = bsm::implied_volatility_with(&c, 1.875, &settings).expect("a volatility exists");
    assert_eq!(iv.method, IvMethod::Bisection);
    assert_close("implied volatility", iv.volatility, 0.2345129139976438);
}

#[test]
fn newton_falls_back_to_bisection_when_a_step_leaves_the_bracket() {
    // Deep in the money at an extreme volatility (600 %): from its starting point Newton
    // overshoots past the bracket the evaluations so far have established. The answer still
    // comes out, by bisection.
    let c = contract(OptionType::Call, 100.0, 10.0, 0.05, 0.0, 0.1);
    let price = c.price(6.0);
    let iv = bsm::implied_volatility(&c, price).expect("a volatility exists");
    assert_eq!(iv.method, IvMethod::Bisection, "{iv:?}");
    assert!((iv.volatility - 6.0).abs() < 1e-6, "{iv:?}");
}

#[test]
fn every_simulated_quote_has_an_implied_volatility() {
    let mut market = SimulatedMarket::new(SimulatorSettings::default());
    for i in 0..2_000 {
        let s = market.next_snapshot(["AAPL", "MSFT", "7203.T", "NVDA"][i % 4]).expect("snapshot");
        spindle_pipeline::processor::analyse(&s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
    }
}

fn option_type() -> impl Strategy<Value = OptionType> {
    prop_oneof![Just(OptionType::Call), Just(OptionType::Put)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    /// c − p = S·e^(−qT) − K·e^(−rT), and the greeks obey the derivatives of that identity.
    #[test]
    fn put_call_parity(
        spot in 1.0..1_000.0f64,
        moneyness in 0.5..2.0f64,
        rate in -0.02..0.15f64,
        q in 0.0..0.08f64,
        vol in 0.01..2.0f64,
        t in 0.01..5.0f64,
    ) {
        let strike = spot * moneyness;
        let call = contract(OptionType::Call, spot, strike, rate, q, t).value(vol);
        let put = contract(OptionType::Put, spot, strike, rate, q, t).value(vol);
        let (carry, discounted) = (spot * (-q * t).exp(), strike * (-rate * t).exp());
        let scale = spot.max(strike);
        prop_assert!((call.price - put.price - (carry - discounted)).abs() < 1e-10 * scale);
        prop_assert!((call.greeks.delta - put.greeks.delta - carry / spot).abs() < 1e-12);
        prop_assert!((call.greeks.gamma - put.greeks.gamma).abs() < 1e-12);
        prop_assert!((call.greeks.vega - put.greeks.vega).abs() < 1e-10 * scale);
        prop_assert!((call.greeks.rho - put.greeks.rho - discounted * t).abs() < 1e-9 * scale);
        prop_assert!((call.greeks.theta - put.greeks.theta - (q * carry - rate * discounted)).abs() < 1e-9 * scale);
    }

    /// Pricing at σ, then solving for the volatility of that price, gives σ back.
    #[test]
    fn implied_volatility_recovers_the_input_volatility(
        kind in option_type(),
        spot in 5.0..500.0f64,
        moneyness in 0.7..1.3f64,
        rate in 0.0..0.1f64,
        q in 0.0..0.05f64,
        vol in 0.05..1.5f64,
        t in 0.05..3.0f64,
    ) {
        let c = contract(kind, spot, spot * moneyness, rate, q, t);
        // Where vega is tiny the price does not pin the volatility down to 1e-6 in double
        // precision; those cases say nothing about the solver.
        prop_assume!(c.vega(vol) > 1e-3);
        let iv = bsm::implied_volatility(&c, c.price(vol)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!((iv.volatility - vol).abs() < 1e-6, "{iv:?} for σ = {vol}");
    }

    /// The analytic greeks agree with finite differences of the price.
    #[test]
    fn greeks_match_finite_differences(
        kind in option_type(),
        spot in 10.0..200.0f64,
        moneyness in 0.8..1.25f64,
        vol in 0.1..0.8f64,
        t in 0.1..2.0f64,
    ) {
        let c = contract(kind, spot, spot * moneyness, 0.03, 0.01, t);
        let v = c.value(vol);
        let h = 1e-4;
        let bump = |f: &dyn Fn(&mut Contract)| { let mut b = c; f(&mut b); b };
        let delta = (bump(&|b| b.spot += h).price(vol) - bump(&|b| b.spot -= h).price(vol)) / (2.0 * h);
        // A second difference needs a step on the scale of S·σ·√T: narrower and rounding swamps
        // it, wider and truncation does.
        let hs = spot * vol * t.sqrt() * 1e-3;
        let gamma = (bump(&|b| b.spot += hs).price(vol) - 2.0 * v.price + bump(&|b| b.spot -= hs).price(vol)) / (hs * hs);
        let vega = (c.price(vol + h) - c.price(vol - h)) / (2.0 * h);
        let rho = (bump(&|b| b.rate += h).price(vol) - bump(&|b| b.rate -= h).price(vol)) / (2.0 * h);
        let theta = -(bump(&|b| b.time_years += h).price(vol) - bump(&|b| b.time_years -= h).price(vol)) / (2.0 * h);
        prop_assert!((v.greeks.delta - delta).abs() < 1e-5, "delta {} vs {delta}", v.greeks.delta);
        prop_assert!((v.greeks.gamma - gamma).abs() < 1e-6 + 1e-4 * gamma.abs(), "gamma {} vs {gamma}", v.greeks.gamma);
        prop_assert!((v.greeks.vega - vega).abs() < 1e-4 * vega.abs().max(1.0));
        prop_assert!((v.greeks.rho - rho).abs() < 1e-4 * rho.abs().max(1.0));
        prop_assert!((v.greeks.theta - theta).abs() < 1e-4 * theta.abs().max(1.0));
    }
}
