//! The statistics of the regression gate: a Mann-Whitney U test on per-run values and a
//! bootstrap interval of the ratio of medians.
//!
//! The sample is the run, not the message: each side holds one figure per run (its p99,
//! its delivered/s, …). The two tools answer different questions and the gate needs both:
//!
//! - [`mann_whitney`]: is the difference more than chance would give? Two-sided, on the
//!   ranks, so one wild run cannot decide it. Exact (the whole permutation distribution,
//!   ties handled by mid-ranks) up to [`EXACT_LIMIT`] values in all, normal approximation
//!   with tie and continuity corrections beyond.
//! - [`bootstrap_ratio`]: how large is it? A percentile interval of
//!   `median(current) / median(baseline)` from resampling each side with replacement.
//!   The generator is seeded ([`SplitMix64`]), so the same figures always give the same
//!   interval and a test never depends on luck.

/// Up to this many values in all, [`mann_whitney`] computes the exact distribution.
pub const EXACT_LIMIT: usize = 60;

/// The median; `None` for no values. Even counts take the mean of the middle two.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// `current / baseline`, with `0 / 0 = 1` (no change) and `x / 0 = ∞` for `x > 0`.
pub fn ratio(current: f64, baseline: f64) -> f64 {
    if baseline == 0.0 {
        if current == 0.0 {
            1.0
        } else {
            f64::INFINITY
        }
    } else {
        current / baseline
    }
}

/// The outcome of a Mann-Whitney U test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample: pairs `(x, y)` with `x > y`, ties counting one half.
    pub u: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Whether `p_value` comes from the exact distribution.
    pub exact: bool,
}

/// Two-sided Mann-Whitney U test of `x` against `y`. `None` when either side is empty.
pub fn mann_whitney(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (x.len(), y.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let n = n1 + n2;
    // Doubled mid-ranks are integers: rank sums compare exactly.
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut ranks2 = vec![0u64; n];
    let mut ties: Vec<u64> = Vec::new();
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean; doubled: i + j + 2.
        for r in ranks2.iter_mut().take(j + 1).skip(i) {
            *r = (i + j + 2) as u64;
        }
        ties.push((j - i + 1) as u64);
        i = j + 1;
    }
    let observed2: u64 = all
        .iter()
        .zip(&ranks2)
        .filter(|(v, _)| v.1)
        .map(|(_, r)| *r)
        .sum();
    let n1f = n1 as f64;
    let u = observed2 as f64 / 2.0 - n1f * (n1f + 1.0) / 2.0;
    let mean2 = (n1 * (n + 1)) as i64;
    let deviation = (observed2 as i64 - mean2).unsigned_abs();
    if n <= EXACT_LIMIT {
        let p_value = exact_p(&ranks2, n1, mean2, deviation);
        return Some(MannWhitney {
            u,
            p_value,
            exact: true,
        });
    }
    Some(MannWhitney {
        u,
        p_value: normal_p(u, n1, n2, &ties),
        exact: false,
    })
}

/// The two-sided p-value of U from the normal approximation, with the tie correction of
/// the variance and a continuity correction of one half.
fn normal_p(u: f64, n1: usize, n2: usize, ties: &[u64]) -> f64 {
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let nf = n1f + n2f;
    let tie_term: f64 = ties.iter().map(|&t| (t * t * t - t) as f64).sum::<f64>();
    let variance = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    if variance <= 0.0 {
        return 1.0;
    }
    let diff = (u - n1f * n2f / 2.0).abs();
    let z = (diff - 0.5).max(0.0) / variance.sqrt();
    erfc(z / std::f64::consts::SQRT_2).min(1.0)
}

/// P(|S - E| >= deviation) over every way of choosing `n1` of the (doubled) ranks, where
/// S is their sum and E its mean: the exact two-sided p-value, ties included.
fn exact_p(ranks2: &[u64], n1: usize, mean2: i64, deviation: u64) -> f64 {
    let max_sum: usize = ranks2.iter().map(|&r| r as usize).sum();
    // ways[k][s]: subsets of size k with doubled rank sum s.
    let mut ways = vec![vec![0f64; max_sum + 1]; n1 + 1];
    ways[0][0] = 1.0;
    let mut reach = 0;
    for &r in ranks2 {
        let r = r as usize;
        reach += r;
        for k in (1..=n1).rev() {
            let (lower, upper) = ways.split_at_mut(k);
            let (from, to) = (&lower[k - 1], &mut upper[0]);
            for s in (r..=reach).rev() {
                to[s] += from[s - r];
            }
        }
    }
    let total: f64 = ways[n1].iter().sum();
    let extreme: f64 = ways[n1]
        .iter()
        .enumerate()
        .filter(|(s, _)| (*s as i64 - mean2).unsigned_abs() >= deviation)
        .map(|(_, w)| w)
        .sum();
    (extreme / total).min(1.0)
}

/// The complementary error function, from a Chebyshev fit (Numerical Recipes' `erfcc`)
/// with a relative error below 1.2e-7 everywhere: ample for p-values.
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// A small, fast, seeded generator (Steele, Lea and Flood's SplitMix64). Its output for
/// a seed never changes, unlike a library's default generator across versions.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-32 for the sizes here).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A bootstrap interval of `median(current) / median(baseline)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatioInterval {
    /// The ratio of the observed medians.
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
    /// e.g. 0.95.
    pub confidence: f64,
}

/// Percentile bootstrap: `resamples` times, draw each side with replacement, take the
/// ratio of the medians; the interval holds the middle `confidence` of those ratios.
/// Deterministic for a given `seed`. `None` when either side is empty.
pub fn bootstrap_ratio(
    baseline: &[f64],
    current: &[f64],
    confidence: f64,
    resamples: usize,
    seed: u64,
) -> Option<RatioInterval> {
    let observed = ratio(median(current)?, median(baseline)?);
    let mut rng = SplitMix64::new(seed);
    let mut ratios = Vec::with_capacity(resamples.max(1));
    let mut b = vec![0.0; baseline.len()];
    let mut c = vec![0.0; current.len()];
    for _ in 0..resamples.max(1) {
        for v in b.iter_mut() {
            *v = baseline[rng.below(baseline.len())];
        }
        for v in c.iter_mut() {
            *v = current[rng.below(current.len())];
        }
        ratios.push(ratio(median(&c)?, median(&b)?));
    }
    ratios.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    let at = |q: f64| {
        let i = (q * (ratios.len() - 1) as f64).round() as usize;
        ratios[i.min(ratios.len() - 1)]
    };
    Some(RatioInterval {
        ratio: observed,
        low: at(tail),
        high: at(1.0 - tail),
        confidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn ratio_of_zero_baseline() {
        assert_eq!(ratio(0.0, 0.0), 1.0);
        assert_eq!(ratio(2.0, 0.0), f64::INFINITY);
        assert_eq!(ratio(3.0, 2.0), 1.5);
    }

    /// Complete separation of 5 and 5: the most extreme of C(10,5) = 252 arrangements
    /// in each direction, p = 2/252.
    #[test]
    fn mann_whitney_complete_separation_five_and_five() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [6.0, 7.0, 8.0, 9.0, 10.0];
        let r = mann_whitney(&x, &y).unwrap();
        assert!(r.exact);
        assert_eq!(r.u, 0.0);
        assert!(close(r.p_value, 2.0 / 252.0, 1e-12), "{r:?}");
        let r = mann_whitney(&y, &x).unwrap();
        assert_eq!(r.u, 25.0);
        assert!(close(r.p_value, 2.0 / 252.0, 1e-12), "{r:?}");
    }

    /// Hollander & Wolfe's example (R's `?wilcox.test`): W = 35, one-sided p = 0.1272,
    /// so two-sided 0.2544.
    #[test]
    fn mann_whitney_matches_the_textbook_example() {
        let x = [0.80, 0.83, 1.89, 1.04, 1.45, 1.38, 1.91, 1.64, 0.73, 1.46];
        let y = [1.15, 0.88, 0.90, 0.74, 1.21];
        let r = mann_whitney(&x, &y).unwrap();
        assert_eq!(r.u, 35.0);
        assert!(close(r.p_value, 0.2544, 0.0001), "{r:?}");
    }

    /// One value out of place among 5 and 5 (U = 1): 2 × 2/252. U = 2: 2 × 4/252.
    /// U = 3 is the first not significant at 0.05: 2 × 7/252 = 0.0556.
    #[test]
    fn mann_whitney_small_shifts_five_and_five() {
        let x = [1.0, 2.0, 3.0, 4.0, 6.0];
        let y = [5.0, 7.0, 8.0, 9.0, 10.0];
        let r = mann_whitney(&x, &y).unwrap();
        assert_eq!(r.u, 1.0);
        assert!(close(r.p_value, 4.0 / 252.0, 1e-12), "{r:?}");
        let x = [1.0, 2.0, 3.0, 4.0, 7.0];
        let y = [5.0, 6.0, 8.0, 9.0, 10.0];
        assert!(close(
            mann_whitney(&x, &y).unwrap().p_value,
            8.0 / 252.0,
            1e-12
        ));
        let x = [1.0, 2.0, 3.0, 5.0, 7.0];
        let y = [4.0, 6.0, 8.0, 9.0, 10.0];
        let r = mann_whitney(&x, &y).unwrap();
        assert_eq!(r.u, 3.0);
        assert!(close(r.p_value, 14.0 / 252.0, 1e-12), "{r:?}");
        assert!(r.p_value > 0.05);
    }

    /// Identical samples, or every value tied: no evidence at all.
    #[test]
    fn mann_whitney_ties() {
        let x = [5.0; 5];
        let r = mann_whitney(&x, &x).unwrap();
        assert_eq!(r.p_value, 1.0);
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(mann_whitney(&x, &x).unwrap().p_value, 1.0);
        // Ties across the sides: [1,1,2] vs [2,3,3]. Doubled mid-ranks 3,3,7 | 7,11,11;
        // of the 20 ways to choose 3 of the 6, those as far from the mean (21) as
        // 13 is: sums 13 and 29, each reached 2 ways (3+3+7 twice) -> p = 4/20.
        let r = mann_whitney(&[1.0, 1.0, 2.0], &[2.0, 3.0, 3.0]).unwrap();
        assert_eq!(r.u, 0.5);
        assert!(close(r.p_value, 0.2, 1e-12), "{r:?}");
    }

    /// Beyond the exact limit the normal approximation takes over. Complete separation
    /// of 30 and 31: z = (465 - 0.5) / sqrt(30·31·62/12) = 6.7010, two-sided
    /// p = 2.0701e-11.
    #[test]
    fn mann_whitney_normal_approximation() {
        let x: Vec<f64> = (0..30).map(f64::from).collect();
        let y: Vec<f64> = (30..61).map(f64::from).collect();
        let r = mann_whitney(&x, &y).unwrap();
        assert!(!r.exact);
        assert_eq!(r.u, 0.0);
        assert!(close(r.p_value / 2.0701e-11, 1.0, 1e-3), "{r:?}");
    }

    /// Where both apply, the exact and the approximate p-values agree closely.
    #[test]
    fn mann_whitney_exact_and_normal_agree_at_moderate_sizes() {
        let a: Vec<f64> = (0..25).map(|i| (2 * i) as f64).collect();
        let b: Vec<f64> = (0..25).map(|i| (2 * i + 7) as f64).collect();
        let exact = mann_whitney(&a, &b).unwrap();
        assert!(exact.exact);
        let approx = normal_p(exact.u, 25, 25, &[1; 50]);
        assert!(
            close(exact.p_value, approx, 0.005),
            "exact {} normal {approx}",
            exact.p_value
        );
        assert!(exact.p_value < 0.5 && exact.p_value > 0.01, "{exact:?}");
    }

    #[test]
    fn erfc_known_values() {
        assert!(close(erfc(0.0), 1.0, 1e-7));
        assert!(close(erfc(1.0), 0.157_299_207, 1e-7));
        assert!(close(erfc(-1.0), 1.842_700_793, 1e-7));
        // The two-sided normal p at z = 1.959964 is 0.05.
        assert!(close(
            erfc(1.959_964 / std::f64::consts::SQRT_2),
            0.05,
            1e-6
        ));
    }

    #[test]
    fn splitmix_is_fixed_for_a_seed() {
        // The reference sequence for seed 1234567 (Vigna's splitmix64.c).
        let mut g = SplitMix64::new(1_234_567);
        assert_eq!(g.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(g.next_u64(), 3_203_168_211_198_807_973);
        let mut a = SplitMix64::new(9);
        let mut b = SplitMix64::new(9);
        assert!((0..100).all(|_| a.below(7) == b.below(7)));
    }

    /// Draws from a log-normal with median `median` (Box-Muller on the seeded generator).
    fn lognormal(rng: &mut SplitMix64, n: usize, median: f64, sigma: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let (u1, u2) = (1.0 - rng.unit(), rng.unit());
                let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                median * (sigma * z).exp()
            })
            .collect()
    }

    #[test]
    fn bootstrap_brackets_the_true_ratio() {
        let mut rng = SplitMix64::new(42);
        let base = lognormal(&mut rng, 20, 10.0, 0.2);
        let cur = lognormal(&mut rng, 20, 13.0, 0.2);
        let i = bootstrap_ratio(&base, &cur, 0.95, 10_000, 7).unwrap();
        assert!(i.low <= 1.3 && 1.3 <= i.high, "{i:?}");
        assert!(
            i.low > 1.0,
            "a 30 % shift at 20 % spread is resolved: {i:?}"
        );
        assert!(i.low <= i.ratio && i.ratio <= i.high, "{i:?}");
        // Same inputs and seed, same interval.
        assert_eq!(bootstrap_ratio(&base, &cur, 0.95, 10_000, 7), Some(i));
    }

    /// Over many synthetic data sets the 95 % interval holds the true ratio most of the
    /// time (the percentile bootstrap of a median is somewhat liberal at small n, so the
    /// bar is 85 %), and misses it on both sides rather than always on one.
    #[test]
    fn bootstrap_coverage_on_synthetic_data() {
        let mut rng = SplitMix64::new(2024);
        let (mut hits, mut below, mut above) = (0, 0, 0);
        let trials = 300;
        for t in 0..trials {
            let base = lognormal(&mut rng, 15, 4.0, 0.3);
            let cur = lognormal(&mut rng, 15, 6.0, 0.3);
            let i = bootstrap_ratio(&base, &cur, 0.95, 2_000, t).unwrap();
            if i.high < 1.5 {
                below += 1;
            } else if i.low > 1.5 {
                above += 1;
            } else {
                hits += 1;
            }
        }
        assert!(hits >= trials * 85 / 100, "{hits}/{trials}");
        assert!(
            below > 0 && above > 0,
            "misses {below} below, {above} above"
        );
    }

    #[test]
    fn bootstrap_of_identical_sides_is_one() {
        let x = [2.0, 2.1, 1.9, 2.05, 1.95];
        let i = bootstrap_ratio(&x, &x, 0.95, 1_000, 1).unwrap();
        assert_eq!(i.ratio, 1.0);
        assert!(i.low < 1.0 && i.high > 1.0, "{i:?}");
        assert_eq!(bootstrap_ratio(&[], &x, 0.95, 10, 1), None);
    }
}
