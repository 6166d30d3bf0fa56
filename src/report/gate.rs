//! The regression gate's report model: every check of one gate, as one serde value.
//!
//! `crate::campaign::gate` fills a [`GateReport`] from a baseline
//! ([`super::gate_baseline::Baseline`]) and the current runs' summaries; the console
//! table and the markdown summary ([`super::gate_text`]) and the JUnit XML
//! ([`super::junit`]) only read it. Three kinds of check, each pass or fail:
//!
//! - one per [`Metric`]: compared against the baseline run by run, with a verdict
//!   ([`Verdict`]) that needs both statistical significance and a size beyond the
//!   tolerance;
//! - integrity: exact, any lost or duplicated delivery in any run fails;
//! - one per SLO of the scenario (the always-on `min_connected`, `max_unsent` and
//!   `harness_lag_ms` among them): fails when any current run failed it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::format;
use super::model::Summary;

/// A figure the gate compares, one value per run.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Corrected end-to-end latency, 50th percentile.
    P50,
    P99,
    P999,
    /// Send to RECEIPT, 99th percentile.
    ReceiptP99,
    /// Deliveries per second over the measured phase.
    Throughput,
    /// Largest Kafka consumer lag of any fan-out group.
    MaxLag,
    /// Mean database inserts per second while sending.
    DbRows,
}

/// Which way is better for a metric.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Lower,
    Higher,
}

impl Metric {
    pub const ALL: [Metric; 7] = [
        Metric::P50,
        Metric::P99,
        Metric::P999,
        Metric::ReceiptP99,
        Metric::Throughput,
        Metric::MaxLag,
        Metric::DbRows,
    ];

    /// The name in `--tolerance` and in the baseline file.
    pub fn key(self) -> &'static str {
        match self {
            Metric::P50 => "p50",
            Metric::P99 => "p99",
            Metric::P999 => "p999",
            Metric::ReceiptP99 => "receipt_p99",
            Metric::Throughput => "throughput",
            Metric::MaxLag => "max_lag",
            Metric::DbRows => "db_rows",
        }
    }

    pub fn from_key(key: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.key() == key)
    }

    /// Name for people.
    pub fn label(self) -> &'static str {
        match self {
            Metric::P50 => "latency p50",
            Metric::P99 => "latency p99",
            Metric::P999 => "latency p99.9",
            Metric::ReceiptP99 => "receipt p99",
            Metric::Throughput => "delivered/s",
            Metric::MaxLag => "max Kafka lag",
            Metric::DbRows => "DB rows/s",
        }
    }

    pub fn better(self) -> Better {
        match self {
            Metric::Throughput | Metric::DbRows => Better::Higher,
            _ => Better::Lower,
        }
    }

    /// Default tolerance, as a fraction: a change smaller than this is never a
    /// regression. Tail percentiles of short runs move more than the median; Kafka lag
    /// is read against offsets the servers commit once a second, so it varies between
    /// about one and two seconds of traffic whatever the server does.
    pub fn default_tolerance(self) -> f64 {
        match self {
            Metric::P50 => 0.10,
            Metric::P99 => 0.15,
            Metric::P999 => 0.25,
            Metric::ReceiptP99 => 0.15,
            Metric::Throughput => 0.05,
            Metric::MaxLag => 1.00,
            Metric::DbRows => 0.10,
        }
    }

    /// The run's figure: latencies in microseconds, rates per second, lag in messages.
    /// `None` when the run did not measure it (no receipts, no Kafka, no database, no
    /// deliveries).
    pub fn of(self, s: &Summary) -> Option<f64> {
        let latency = |us: u64| (s.latency.corrected.count > 0).then_some(us as f64);
        match self {
            Metric::P50 => latency(s.latency.corrected.p50_us),
            Metric::P99 => latency(s.latency.corrected.p99_us),
            Metric::P999 => latency(s.latency.corrected.p999_us),
            Metric::ReceiptP99 => s
                .latency
                .receipt
                .as_ref()
                .filter(|r| r.count > 0)
                .map(|r| r.p99_us as f64),
            Metric::Throughput => Some(s.throughput.delivered_per_s),
            Metric::MaxLag => s.kafka.as_ref().map(|k| k.max_lag as f64),
            Metric::DbRows => s.db.as_ref().map(|d| d.mean_rows_per_s),
        }
    }

    /// A figure of this metric for people, with its unit.
    pub fn show(self, v: f64) -> String {
        match self {
            Metric::P50 | Metric::P99 | Metric::P999 | Metric::ReceiptP99 => {
                format!("{} ms", format::number((v / 10.0).round() / 100.0))
            }
            Metric::Throughput => format!("{}/s", format::rate(v)),
            Metric::MaxLag => format!("{} msgs", format::number(v.round())),
            Metric::DbRows => format!("{} rows/s", format::rate(v)),
        }
    }
}

/// Tolerance per metric, as fractions (0.10 = 10 %).
#[derive(Debug, Clone, PartialEq)]
pub struct Tolerances(BTreeMap<Metric, f64>);

impl Default for Tolerances {
    fn default() -> Self {
        Tolerances(
            Metric::ALL
                .iter()
                .map(|m| (*m, m.default_tolerance()))
                .collect(),
        )
    }
}

impl Tolerances {
    pub fn get(&self, m: Metric) -> f64 {
        self.0
            .get(&m)
            .copied()
            .unwrap_or_else(|| m.default_tolerance())
    }

    pub fn set(&mut self, m: Metric, fraction: f64) {
        self.0.insert(m, fraction);
    }

    /// The defaults with `text` applied, e.g. `p50=10%,p99=15%,throughput=5%`.
    pub fn parse(text: &str) -> Result<Tolerances, String> {
        let mut t = Tolerances::default();
        let known = || {
            Metric::ALL
                .iter()
                .map(|m| m.key())
                .collect::<Vec<_>>()
                .join(", ")
        };
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(format!(
                    "`{item}`: expected METRIC=PERCENT, e.g. p99=15%; metrics: {}",
                    known()
                ));
            };
            let key = key.trim();
            let Some(metric) = Metric::from_key(key) else {
                return Err(format!("unknown metric `{key}`; metrics: {}", known()));
            };
            let value = value.trim();
            let Some(number) = value.strip_suffix('%') else {
                return Err(format!(
                    "{key}={value}: write the tolerance as a percentage, e.g. {key}=10%"
                ));
            };
            let pct: f64 = number.trim().parse().map_err(|_| {
                format!("{key}={value}: `{number}` is not a number; e.g. {key}=10%")
            })?;
            if !pct.is_finite() || pct <= 0.0 {
                return Err(format!("{key}={value}: must be more than 0%"));
            }
            if metric.better() == Better::Higher && pct >= 100.0 {
                return Err(format!(
                    "{key}={value}: must be below 100% ({} cannot drop by more than all of it)",
                    metric.label()
                ));
            }
            t.set(metric, pct / 100.0);
        }
        Ok(t)
    }
}

/// The verdict on one metric.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Significantly worse, and the whole interval beyond the tolerance. Fails.
    Regressed,
    /// Significantly better, and the whole interval beyond the tolerance.
    Improved,
    /// Neither.
    WithinNoise,
    /// Measured by neither side, or not by the baseline: nothing to compare.
    NotMeasured,
    /// In the baseline but missing from some current run (a sampler failed, receipts
    /// stopped): the gate cannot vouch for it. Fails.
    Missing,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regressed => "regressed",
            Verdict::Improved => "improved",
            Verdict::WithinNoise => "within noise",
            Verdict::NotMeasured => "not measured",
            Verdict::Missing => "missing",
        }
    }

    pub fn fails(self) -> bool {
        matches!(self, Verdict::Regressed | Verdict::Missing)
    }
}

/// The statistics of one metric.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Comparison {
    pub baseline_median: f64,
    pub current_median: f64,
    /// `current_median / baseline_median`.
    pub ratio: f64,
    /// Bootstrap interval of the ratio of medians, at the report's `confidence`.
    pub low: f64,
    pub high: f64,
    /// Two-sided Mann-Whitney U test on the per-run values.
    pub p_value: f64,
}

/// One metric's check.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MetricCheck {
    pub metric: Metric,
    /// Fraction, e.g. 0.10 for 10 %.
    pub tolerance: f64,
    /// Per-run values, in run order.
    pub baseline: Vec<f64>,
    pub current: Vec<f64>,
    /// `None` when there is nothing to compare.
    pub comparison: Option<Comparison>,
    pub verdict: Verdict,
}

impl MetricCheck {
    /// One line for people: what was compared and how it came out.
    pub fn describe(&self, alpha: f64, confidence: f64) -> String {
        let m = self.metric;
        match (&self.comparison, self.verdict) {
            (Some(c), v) => format!(
                "{} {}: baseline {}, current {}, ratio {} ({}% interval {} to {}), p = {} (α = {}), tolerance {}",
                m.label(),
                v.as_str(),
                m.show(c.baseline_median),
                m.show(c.current_median),
                show_ratio(c.ratio),
                format::number(confidence * 100.0),
                show_ratio(c.low),
                show_ratio(c.high),
                show_p(c.p_value),
                format::number(alpha),
                show_percent(self.tolerance),
            ),
            (None, Verdict::Missing) => format!(
                "{} missing: the baseline has it in all {} runs, but only {} of the current runs measured it",
                m.label(),
                self.baseline.len(),
                self.current.len()
            ),
            (None, v) => format!("{} {}", m.label(), v.as_str()),
        }
    }
}

/// Delivery integrity over the current runs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct IntegrityCheck {
    pub lost: u64,
    pub duplicated: u64,
    /// Runs with any loss or duplicate.
    pub failed_runs: usize,
    pub runs: usize,
    pub passed: bool,
}

impl IntegrityCheck {
    pub fn describe(&self) -> String {
        if self.passed {
            format!(
                "integrity passed: no lost or duplicated delivery in {} runs",
                self.runs
            )
        } else {
            format!(
                "integrity failed: {} lost and {} duplicated deliveries in {} of {} runs (any loss or duplicate fails)",
                self.lost, self.duplicated, self.failed_runs, self.runs
            )
        }
    }
}

/// One SLO over the current runs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SloCheck {
    pub name: String,
    /// e.g. `"<="`.
    pub bound: String,
    pub limit: f64,
    pub unit: String,
    /// The worst measured value over the runs.
    pub worst: f64,
    pub failed_runs: usize,
    pub runs: usize,
    pub passed: bool,
}

impl SloCheck {
    pub fn describe(&self) -> String {
        format!(
            "SLO {} {}: worst run {} {}, limit {} {}; failed in {} of {} runs",
            self.name,
            if self.passed { "passed" } else { "failed" },
            format::number(self.worst),
            self.unit,
            self.bound,
            format::number(self.limit),
            self.failed_runs,
            self.runs
        )
    }
}

/// What the current runs were judged against.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BaselineRef {
    /// The baseline file, as given.
    pub file: Option<String>,
    pub recorded_at: String,
    pub runs: usize,
    pub tool_version: String,
}

/// The whole result of one gate.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GateReport {
    pub scenario: String,
    pub baseline: BaselineRef,
    /// Current runs.
    pub runs: usize,
    /// Significance level of the Mann-Whitney test, e.g. 0.05.
    pub alpha: f64,
    /// Level of the bootstrap interval, e.g. 0.95.
    pub confidence: f64,
    pub metrics: Vec<MetricCheck>,
    pub integrity: IntegrityCheck,
    pub slos: Vec<SloCheck>,
    /// Differences between the baseline's setup and this one (stack shape, scenario,
    /// machine size); with `--strict` the gate refuses instead.
    pub flags: Vec<String>,
    /// Things worth knowing that change nothing (e.g. another stompede version).
    pub notes: Vec<String>,
    /// The current runs' report directories.
    pub reports: Vec<String>,
    /// No regression, no missing metric, integrity exact, every SLO held.
    pub passed: bool,
}

impl GateReport {
    /// Whether every check passed; what [`GateReport::passed`] is set from.
    pub fn all_checks_pass(&self) -> bool {
        self.metrics.iter().all(|m| !m.verdict.fails())
            && self.integrity.passed
            && self.slos.iter().all(|s| s.passed)
    }

    /// The checks that failed, one line each.
    pub fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .metrics
            .iter()
            .filter(|m| m.verdict.fails())
            .map(|m| m.describe(self.alpha, self.confidence))
            .collect();
        if !self.integrity.passed {
            out.push(self.integrity.describe());
        }
        out.extend(
            self.slos
                .iter()
                .filter(|s| !s.passed)
                .map(SloCheck::describe),
        );
        out
    }
}

/// A ratio for people: `1.034` -> `"1.03×"`, infinity as `"∞"`.
pub fn show_ratio(r: f64) -> String {
    if r.is_infinite() {
        "∞".into()
    } else {
        format!("{r:.2}×")
    }
}

/// A p-value for people: three significant digits, small ones in scientific notation.
pub fn show_p(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.3}")
    } else {
        format!("{p:.2e}")
    }
}

/// A fraction as a percentage: `0.15` -> `"15%"`.
pub fn show_percent(f: f64) -> String {
    format!("{}%", format::number(f * 100.0))
}

/// A gate report with a regression, a loss and a failed SLO, for the renderers' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    fn check(metric: Metric, base: f64, cur: f64, p: f64, verdict: Verdict) -> MetricCheck {
        let ratio = cur / base;
        MetricCheck {
            metric,
            tolerance: metric.default_tolerance(),
            baseline: vec![base * 0.98, base, base * 1.01, base * 0.99, base * 1.02],
            current: vec![cur * 0.97, cur, cur * 1.03, cur * 0.99, cur * 1.01],
            comparison: Some(Comparison {
                baseline_median: base,
                current_median: cur,
                ratio,
                low: ratio * 0.95,
                high: ratio * 1.05,
                p_value: p,
            }),
            verdict,
        }
    }

    pub(crate) fn report() -> GateReport {
        let mut metrics = vec![
            check(
                Metric::P50,
                2_000.0,
                42_000.0,
                2.0 / 252.0,
                Verdict::Regressed,
            ),
            check(
                Metric::P99,
                9_000.0,
                50_000.0,
                2.0 / 252.0,
                Verdict::Regressed,
            ),
            check(Metric::P999, 15_000.0, 16_000.0, 0.42, Verdict::WithinNoise),
            check(Metric::Throughput, 160.0, 200.0, 0.008, Verdict::Improved),
            check(Metric::MaxLag, 30.0, 32.0, 0.6, Verdict::WithinNoise),
        ];
        metrics.push(MetricCheck {
            metric: Metric::ReceiptP99,
            tolerance: 0.15,
            baseline: Vec::new(),
            current: Vec::new(),
            comparison: None,
            verdict: Verdict::NotMeasured,
        });
        metrics.push(MetricCheck {
            metric: Metric::DbRows,
            tolerance: 0.10,
            baseline: vec![30.0; 5],
            current: vec![30.0; 3],
            comparison: None,
            verdict: Verdict::Missing,
        });
        let slo = |name: &str, worst: f64, limit: f64| SloCheck {
            name: name.into(),
            bound: "<=".into(),
            limit,
            unit: "ms".into(),
            worst,
            failed_runs: usize::from(worst > limit) * 2,
            runs: 5,
            passed: worst <= limit,
        };
        let mut r = GateReport {
            scenario: "smoke".into(),
            baseline: BaselineRef {
                file: Some("ci/baseline.json".into()),
                recorded_at: "2025-01-31T12:00:00.000Z".into(),
                runs: 5,
                tool_version: "0.1.0".into(),
            },
            runs: 5,
            alpha: 0.05,
            confidence: 0.95,
            metrics,
            integrity: IntegrityCheck {
                lost: 1,
                duplicated: 0,
                failed_runs: 1,
                runs: 5,
                passed: false,
            },
            slos: vec![
                slo("harness_lag_ms", 3.0, 50.0),
                slo("p99<&>\"ms\"", 60.0, 40.0),
            ],
            flags: vec!["the baseline was recorded on 4 CPUs, this machine has 2".into()],
            notes: Vec::new(),
            reports: vec!["reports/smoke-1".into()],
            passed: false,
        };
        r.passed = r.all_checks_pass();
        r
    }
}
