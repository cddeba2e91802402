//! Black–Scholes–Merton valuation of European options on an asset paying a continuous
//! dividend yield: price, the five greeks, and implied volatility.
//!
//! Pure arithmetic: no IO, no allocation, no panics. Inputs are taken as given; the
//! processor's `clean_data` step validates records before they reach this module, and
//! [`Contract::check`] states what "valid" means here.
//!
//! Units follow Hull (*Options, Futures, and Other Derivatives*): rates, yields and
//! volatilities are annual and continuously compounded (0.05 = 5 %), time is in years, and
//! the greeks are per unit change — vega per 1.00 of volatility, rho per 1.00 of rate, theta
//! per year (divide by 365 for a calendar day).

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// Call or put.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptionType {
    Call,
    Put,
}

impl OptionType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Call => "call",
            Self::Put => "put",
        }
    }
}

/// A European option: everything but the volatility.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contract {
    pub option_type: OptionType,
    /// Price of the underlying today (S).
    pub spot: f64,
    /// Strike (K).
    pub strike: f64,
    /// Risk-free rate (r).
    pub rate: f64,
    /// Continuous dividend yield of the underlying (q).
    pub dividend_yield: f64,
    /// Time to expiry in years (T).
    pub time_years: f64,
}

/// Sensitivities of the option price.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Greeks {
    /// ∂V/∂S.
    pub delta: f64,
    /// ∂²V/∂S².
    pub gamma: f64,
    /// ∂V/∂σ, per 1.00 of volatility.
    pub vega: f64,
    /// ∂V/∂t, per year (the option's decay as calendar time passes).
    pub theta: f64,
    /// ∂V/∂r, per 1.00 of rate.
    pub rho: f64,
}

/// Price and greeks at one volatility.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Valuation {
    pub price: f64,
    pub greeks: Greeks,
}

/// How an implied volatility was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IvMethod {
    Newton,
    Bisection,
}

impl IvMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Newton => "newton",
            Self::Bisection => "bisection",
        }
    }
}

/// The result of [`implied_volatility`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImpliedVol {
    pub volatility: f64,
    pub method: IvMethod,
    /// Newton steps plus bisection steps taken.
    pub iterations: u32,
}

/// Why no implied volatility exists for a price.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum IvError {
    #[error("price {price} is below the option's value at the lowest volatility searched ({floor})")]
    BelowRange { price: f64, floor: f64 },
    #[error("price {price} is above the option's value at the highest volatility searched ({ceiling})")]
    AboveRange { price: f64, ceiling: f64 },
    #[error("price {price} is not a finite number")]
    NotFinite { price: f64 },
}

/// Settings of the implied-volatility search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IvSettings {
    /// Volatilities searched: `[min_vol, max_vol]`.
    pub min_vol: f64,
    pub max_vol: f64,
    /// Converged when the price error is below this (absolute, in price units)...
    pub price_tolerance: f64,
    /// ...or the volatility step is below this.
    pub vol_tolerance: f64,
    /// Newton steps before falling back to bisection (0 = bisection only).
    pub max_newton_iterations: u32,
    pub max_bisection_iterations: u32,
}

impl Default for IvSettings {
    fn default() -> Self {
        Self {
            min_vol: 1e-6,
            max_vol: 10.0,
            price_tolerance: 1e-12,
            vol_tolerance: 1e-14,
            max_newton_iterations: 50,
            max_bisection_iterations: 200,
        }
    }
}

/// Standard normal cumulative distribution, accurate to a few ulps in both tails.
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x * FRAC_1_SQRT_2)
}

/// Standard normal density.
pub fn norm_pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * PI).sqrt()
}

impl Contract {
    /// Whether the contract can be valued: positive finite spot, strike and time, finite rate
    /// and yield. Returns the name of the first offending field.
    pub fn check(&self) -> Result<(), &'static str> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.spot) {
            return Err("spot");
        }
        if !positive(self.strike) {
            return Err("strike");
        }
        if !positive(self.time_years) {
            return Err("time_years");
        }
        if !self.rate.is_finite() {
            return Err("rate");
        }
        if !self.dividend_yield.is_finite() {
            return Err("dividend_yield");
        }
        Ok(())
    }

    /// Spot discounted by the dividend yield: S·e^(−qT).
    fn carry_spot(&self) -> f64 {
        self.spot * (-self.dividend_yield * self.time_years).exp()
    }

    /// Strike discounted at the risk-free rate: K·e^(−rT).
    fn discounted_strike(&self) -> f64 {
        self.strike * (-self.rate * self.time_years).exp()
    }

    /// The no-arbitrage bounds of the option price: (lower, upper). The price tends to the
    /// lower bound as volatility goes to zero and to the upper as it goes to infinity.
    pub fn price_bounds(&self) -> (f64, f64) {
        let (s, k) = (self.carry_spot(), self.discounted_strike());
        match self.option_type {
            OptionType::Call => ((s - k).max(0.0), s),
            OptionType::Put => ((k - s).max(0.0), k),
        }
    }

    /// Price only (cheaper than [`Contract::value`]).
    pub fn price(&self, volatility: f64) -> f64 {
        let sigma_sqrt_t = volatility * self.time_years.sqrt();
        let (s, k) = (self.carry_spot(), self.discounted_strike());
        if sigma_sqrt_t <= 0.0 {
            return self.price_bounds().0;
        }
        let d1 = ((self.spot / self.strike).ln()
            + (self.rate - self.dividend_yield + 0.5 * volatility * volatility) * self.time_years)
            / sigma_sqrt_t;
        let d2 = d1 - sigma_sqrt_t;
        match self.option_type {
            OptionType::Call => s * norm_cdf(d1) - k * norm_cdf(d2),
            OptionType::Put => k * norm_cdf(-d2) - s * norm_cdf(-d1),
        }
    }

    /// ∂price/∂σ.
    pub fn vega(&self, volatility: f64) -> f64 {
        let sqrt_t = self.time_years.sqrt();
        let sigma_sqrt_t = volatility * sqrt_t;
        if sigma_sqrt_t <= 0.0 {
            return 0.0;
        }
        let d1 = ((self.spot / self.strike).ln()
            + (self.rate - self.dividend_yield + 0.5 * volatility * volatility) * self.time_years)
            / sigma_sqrt_t;
        self.carry_spot() * norm_pdf(d1) * sqrt_t
    }

    /// Price and greeks at `volatility`.
    ///
    /// At zero volatility (or an instant before expiry) the option is worth its discounted
    /// intrinsic value; delta is then the step of that payoff and the other greeks follow
    /// from it (gamma and vega zero).
    pub fn value(&self, volatility: f64) -> Valuation {
        let (t, r, q) = (self.time_years, self.rate, self.dividend_yield);
        let sqrt_t = t.sqrt();
        let sigma_sqrt_t = volatility * sqrt_t;
        let (s, k) = (self.carry_spot(), self.discounted_strike());
        let sign = match self.option_type {
            OptionType::Call => 1.0,
            OptionType::Put => -1.0,
        };
        if sigma_sqrt_t <= 0.0 {
            let in_the_money = sign * (s - k) > 0.0;
            let step = if in_the_money { 1.0 } else { 0.0 };
            return Valuation {
                price: self.price_bounds().0,
                greeks: Greeks {
                    delta: sign * step * s / self.spot,
                    gamma: 0.0,
                    vega: 0.0,
                    theta: step * sign * (q * s - r * k),
                    rho: step * sign * k * t,
                },
            };
        }
        let d1 = ((self.spot / self.strike).ln() + (r - q + 0.5 * volatility * volatility) * t) / sigma_sqrt_t;
        let d2 = d1 - sigma_sqrt_t;
        let density = norm_pdf(d1);
        let decay = -s * density * volatility / (2.0 * sqrt_t);
        let (n1, n2) = (norm_cdf(sign * d1), norm_cdf(sign * d2));
        Valuation {
            price: sign * (s * n1 - k * n2),
            greeks: Greeks {
                delta: sign * n1 * s / self.spot,
                gamma: s * density / (self.spot * self.spot * sigma_sqrt_t),
                vega: s * density * sqrt_t,
                theta: decay + sign * (q * s * n1 - r * k * n2),
                rho: sign * k * t * n2,
            },
        }
    }
}

/// The volatility at which `contract` is worth `price`, with the default [`IvSettings`].
pub fn implied_volatility(contract: &Contract, price: f64) -> Result<ImpliedVol, IvError> {
    implied_volatility_with(contract, price, &IvSettings::default())
}

/// The volatility at which `contract` is worth `price`: Newton's method from the
/// Manaster–Koehler starting point, falling back to bisection when a step leaves the
/// bracket, vega vanishes or Newton does not converge. The price is increasing in
/// volatility, so the bracket `[min_vol, max_vol]` always holds the root when the price lies
/// between the values at its ends; otherwise there is no root and the error says which side.
pub fn implied_volatility_with(contract: &Contract, price: f64, settings: &IvSettings) -> Result<ImpliedVol, IvError> {
    if !price.is_finite() {
        return Err(IvError::NotFinite { price });
    }
    let (mut low, mut high) = (settings.min_vol, settings.max_vol);
    let floor = contract.price(low);
    if price < floor - settings.price_tolerance {
        return Err(IvError::BelowRange { price, floor });
    }
    let ceiling = contract.price(high);
    if price > ceiling + settings.price_tolerance {
        return Err(IvError::AboveRange { price, ceiling });
    }

    // Manaster–Koehler: the volatility at which d1 or d2 is zero, where vega is largest
    // along the way to the root, so Newton converges monotonically from here in most cases.
    let forward_moneyness =
        (contract.spot / contract.strike).ln() + (contract.rate - contract.dividend_yield) * contract.time_years;
    let mut sigma = (2.0 * forward_moneyness.abs() / contract.time_years).sqrt().clamp(0.05, 3.0);
    if !(low..=high).contains(&sigma) {
        sigma = 0.5 * (low + high);
    }
    let mut iterations = 0;
    for _ in 0..settings.max_newton_iterations {
        iterations += 1;
        let diff = contract.price(sigma) - price;
        if diff.abs() < settings.price_tolerance {
            return Ok(ImpliedVol { volatility: sigma, method: IvMethod::Newton, iterations });
        }
        // Each evaluation also narrows the bracket bisection would start from.
        if diff > 0.0 {
            high = high.min(sigma);
        } else {
            low = low.max(sigma);
        }
        let vega = contract.vega(sigma);
        if vega < 1e-12 {
            break;
        }
        let next = sigma - diff / vega;
        if !(next > low && next < high) {
            break;
        }
        if (next - sigma).abs() < settings.vol_tolerance {
            return Ok(ImpliedVol { volatility: next, method: IvMethod::Newton, iterations });
        }
        sigma = next;
    }

    for _ in 0..settings.max_bisection_iterations {
        iterations += 1;
        let mid = 0.5 * (low + high);
        let diff = contract.price(mid) - price;
        if diff.abs() < settings.price_tolerance || high - low < settings.vol_tolerance {
            return Ok(ImpliedVol { volatility: mid, method: IvMethod::Bisection, iterations });
        }
        if diff > 0.0 {
            high = mid;
        } else {
            low = mid;
        }
    }
    Ok(ImpliedVol { volatility: 0.5 * (low + high), method: IvMethod::Bisection, iterations })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(spot: f64, strike: f64, rate: f64, q: f64, t: f64) -> Contract {
        Contract { option_type: OptionType::Call, spot, strike, rate, dividend_yield: q, time_years: t }
    }

    #[test]
    fn normal_cdf_matches_known_values_in_both_tails() {
        assert!((norm_cdf(0.0) - 0.5).abs() < 1e-16);
        assert!((norm_cdf(1.959_963_984_540_054) - 0.975).abs() < 1e-15);
        // Φ(−10) = 7.619853024160527e-24: a naive 1 − Φ(10) would give 0.
        assert!((norm_cdf(-10.0) / 7.619_853_024_160_527e-24 - 1.0).abs() < 1e-12);
    }

    #[test]
    fn zero_volatility_is_discounted_intrinsic_value() {
        let c = call(110.0, 100.0, 0.05, 0.0, 1.0);
        let v = c.value(0.0);
        assert!((v.price - (110.0 - 100.0 * (-0.05f64).exp())).abs() < 1e-12);
        assert_eq!(v.greeks.delta, 1.0);
        assert_eq!(v.greeks.gamma, 0.0);
        let otm = call(90.0, 100.0, 0.05, 0.0, 1.0).value(0.0);
        assert_eq!((otm.price, otm.greeks.delta), (0.0, 0.0));
    }

    #[test]
    fn implied_volatility_rejects_prices_outside_the_bounds() {
        let c = call(100.0, 100.0, 0.05, 0.0, 1.0);
        let (lower, upper) = c.price_bounds();
        assert!(matches!(implied_volatility(&c, lower - 0.01), Err(IvError::BelowRange { .. })));
        assert!(matches!(implied_volatility(&c, upper + 0.01), Err(IvError::AboveRange { .. })));
        assert!(matches!(implied_volatility(&c, f64::NAN), Err(IvError::NotFinite { .. })));
    }
}
