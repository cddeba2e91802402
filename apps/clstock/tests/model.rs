//! The model against the market data it is trained on: a fit on generated histories beats
//! the naive baseline (always the training set's rate of rises) on held-out later days,
//! for several market-data seeds, in both log loss and accuracy.
//! The features themselves are checked against hand-computed values in `src/features.rs`.

use clstock::history::Period;
use clstock::market_data::DEFAULT_AS_OF;
use clstock::model::DEFAULT_HORIZON_DAYS;
use clstock::training::{build_dataset, fit, validate};
use clstock::universe::UNIVERSE;

fn histories(seed: u64, period: Period) -> Vec<(String, Vec<f64>)> {
    UNIVERSE
        .iter()
        .map(|l| {
            let bars = clstock::synth::history(l, seed, DEFAULT_AS_OF, period.trading_days());
            (l.symbol.to_owned(), bars.iter().map(|b| b.close).collect())
        })
        .collect()
}

#[test]
fn training_beats_the_naive_baseline_on_held_out_days() {
    for seed in [3, 11, 2024, 9] {
        let data =
            build_dataset(&histories(seed, Period::FiveYears), DEFAULT_HORIZON_DAYS, 0.2).expect("enough samples");
        let fitted = fit(&data, DEFAULT_HORIZON_DAYS).expect("fits");
        assert!(fitted.converged, "seed {seed}: {fitted:?}");
        let m = validate(&fitted, &data);
        assert_eq!(m.samples, data.valid_x.len());
        assert!(m.samples > 3000, "{m:?}");
        assert!(m.log_loss < m.baseline_log_loss - 0.01, "seed {seed}: {m:?}");
        assert!(m.accuracy > m.baseline_accuracy + 0.03, "seed {seed}: {m:?}");
    }
}

#[test]
fn a_model_fitted_on_noise_does_not_beat_the_baseline() {
    // The same pipeline on closes with no structure at all (a hash-driven walk): the check
    // above is only meaningful if it can fail.
    let mut rng = clstock::synth::SplitMix64::new(99);
    let noise: Vec<(String, Vec<f64>)> = (0..18)
        .map(|i| {
            let mut price = 100.0;
            let closes = (0..1305)
                .map(|_| {
                    price *= (0.015 * rng.next_normal()).exp();
                    price
                })
                .collect();
            (format!("N{i}"), closes)
        })
        .collect();
    let data = build_dataset(&noise, DEFAULT_HORIZON_DAYS, 0.2).expect("enough samples");
    let m = validate(&fit(&data, DEFAULT_HORIZON_DAYS).expect("fits"), &data);
    assert!(m.accuracy < m.baseline_accuracy + 0.03, "{m:?}");
}
