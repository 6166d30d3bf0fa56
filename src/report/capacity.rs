//! The capacity report model: every step of a capacity search, the knee, and why the
//! step above it failed, as one serde value written to `capacity.json`.
//!
//! `crate::campaign::capacity` fills a [`Capacity`] step by step; [`write_capacity`]
//! writes `capacity.json`, the charts ([`super::capacity_charts`]) and `capacity.html`
//! ([`super::capacity_html`]); the console lines are [`step_header`], [`step_row`] and
//! [`Capacity::answer`]. Every step carries its run's whole [`Summary`], so the file is
//! the single source for anything rendered from it later (e.g. `stompede compare`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::format::{count, ms, number, rate};
use super::{Bound, ReportError, Summary, ToolInfo};

/// Version of the `capacity.json` layout.
pub const CAPACITY_SCHEMA_VERSION: u32 = 1;
/// File name of the model in a capacity report directory.
pub const CAPACITY_FILE: &str = "capacity.json";
/// File name of the HTML report in a capacity report directory.
pub const CAPACITY_HTML: &str = "capacity.html";
/// The `kind` of a capacity file, telling it apart from a `summary.json`.
pub const CAPACITY_KIND: &str = "capacity";

/// A whole capacity search.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Capacity {
    /// Always [`CAPACITY_SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    /// Always [`CAPACITY_KIND`].
    pub kind: String,
    pub tool: ToolInfo,
    pub scenario: String,
    /// The scenario file, as given on the command line.
    pub scenario_file: Option<String>,
    /// RFC 3339 UTC.
    pub started_at: String,
    pub finished_at: String,
    /// Wall-clock seconds the whole search took, stack start included.
    pub elapsed_s: f64,
    pub search: SearchSettings,
    /// In the order they ran.
    pub steps: Vec<CapacityStep>,
    /// The highest load at which every check held (and every confirmation).
    pub knee: Option<Knee>,
    /// The lowest failing load above the knee (or `--from` itself when it failed), with
    /// the criterion that failed first there.
    pub first_failure: Option<FirstFailure>,
    pub outcome: Outcome,
    /// The answer in one sentence, as printed.
    pub answer: String,
}

/// What the search varied and how.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SearchSettings {
    pub over: Over,
    pub from: f64,
    pub max: f64,
    /// Bisection stops when the failing and passing loads are this close (0.05 = 5 %).
    pub resolution: f64,
    /// Growth factor between steps until one fails.
    pub growth: f64,
    /// Measured seconds per step.
    pub step_s: f64,
    /// Warm-up seconds per step (excluded from every figure).
    pub warmup_s: f64,
    /// Extra runs of the final value.
    pub confirm: u32,
}

/// The load setting a capacity search varies.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Over {
    /// The open-model `load.rate` (per room or per sender, as the scenario says).
    Rate,
    /// `users.count`, with room memberships scaled alongside.
    Users,
}

impl Over {
    pub fn as_str(self) -> &'static str {
        match self {
            Over::Rate => "rate",
            Over::Users => "users",
        }
    }
}

/// How a search ended.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A knee between a passing and a failing load, within the resolution.
    Capacity,
    /// Every step passed up to `--max`: the capacity is at least that.
    AtLeastMax,
    /// Even `--from` failed.
    NoCapacity,
    /// The harness, not the target, was the limit at some step: no capacity is claimed.
    HarnessBound,
}

/// Why a step ran.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StepPhase {
    /// Growing by `growth` until a step fails.
    Grow,
    /// Halving the gap between the passing and the failing load.
    Bisect,
    /// Re-running the final value.
    Confirm,
}

impl StepPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            StepPhase::Grow => "grow",
            StepPhase::Bisect => "bisect",
            StepPhase::Confirm => "confirm",
        }
    }
}

/// The load a step offered, worked out from the scenario's plan.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Offered {
    pub messages_per_s: f64,
    /// Messages times the members of their room (every member receives each one).
    pub deliveries_per_s: f64,
    pub users: u32,
    pub rooms: u32,
    pub largest_room: u32,
    /// Senders summed over rooms: each sends on its own schedule.
    pub sending_slots: u32,
}

/// One constant-load run of the search.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CapacityStep {
    /// 1-based, in the order steps ran.
    pub index: u32,
    pub phase: StepPhase,
    /// The setting varied: the rate, or the number of users.
    pub value: f64,
    pub offered: Offered,
    pub verdict: StepVerdict,
    /// The step's own report directory, relative to the capacity directory.
    pub dir: String,
    pub summary: Summary,
}

/// Whether a step held, check by check.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StepVerdict {
    pub passed: bool,
    /// The harness could not keep its own schedule: the step says nothing about the target.
    pub harness_bound: bool,
    pub checks: Vec<Check>,
    /// The failed check whose failure showed first (see [`Check::onset_s`]).
    pub first_failed: Option<String>,
}

impl StepVerdict {
    /// The check that failed first, if any.
    pub fn first(&self) -> Option<&Check> {
        let name = self.first_failed.as_deref()?;
        self.checks.iter().find(|c| c.name == name)
    }
}

/// One criterion of a step.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Check {
    /// `harness`, `delivered`, `lost`, `kafka_lag_growth`, or an SLO's name (`p99_ms`, …).
    pub name: String,
    pub passed: bool,
    /// False when the figure was not available (e.g. no Kafka lag samples on an external
    /// target); such a check passes without having been shown to hold.
    pub judged: bool,
    pub measured: f64,
    pub bound: Bound,
    pub limit: f64,
    pub unit: String,
    /// Seconds into the measured phase at which the failure first showed, where the
    /// per-second timeline tells (latency, delivered); `None` for whole-step figures.
    pub onset_s: Option<f64>,
    /// The check in words, e.g. `p99 412 ms > 200 ms`.
    pub detail: String,
}

/// The highest passing load.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Knee {
    /// Index of the step that first ran this load.
    pub step: u32,
    pub value: f64,
    pub offered: Offered,
    /// Figures of that step.
    pub delivered_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_kafka_lag: Option<u64>,
    pub db_rows_per_s: Option<f64>,
    /// Confirmation runs of this load that passed, of `search.confirm`.
    pub confirmed: u32,
}

/// The lowest failing load above the knee.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FirstFailure {
    pub step: u32,
    pub value: f64,
    pub offered: Offered,
    /// The check that failed first there, and every check that failed.
    pub criterion: String,
    pub detail: String,
    pub failed: Vec<String>,
}

impl Capacity {
    /// Reads a `capacity.json`, checking kind and version before the rest.
    pub fn load(path: &Path) -> Result<Capacity, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Capacity::from_json(&text).map_err(|e| e.at(path))
    }

    pub fn from_json(text: &str) -> Result<Capacity, ReportError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|source| ReportError::Parse { path: None, source })?;
        match value.get("schema_version").and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(CAPACITY_SCHEMA_VERSION) => {}
            found => {
                return Err(ReportError::SchemaVersion {
                    path: None,
                    found: format!(
                        "{} (a capacity.json; this build reads capacity version {CAPACITY_SCHEMA_VERSION} only)",
                        found.map_or("none".to_string(), |v| v.to_string())
                    ),
                })
            }
        }
        serde_json::from_value(value).map_err(|source| ReportError::Parse { path: None, source })
    }

    /// Pretty JSON, as written to `capacity.json`.
    pub fn to_json(&self) -> Result<String, ReportError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|source| ReportError::Parse { path: None, source })?;
        Capacity::from_json(&text).map_err(|e| match e {
            ReportError::Parse { source, .. } => ReportError::NotLoadable { source },
            other => other,
        })?;
        Ok(text)
    }

    /// The step that first ran the knee's load.
    pub fn knee_step(&self) -> Option<&CapacityStep> {
        let knee = self.knee.as_ref()?;
        self.steps.iter().find(|s| s.index == knee.step)
    }

    /// The step of the first failure.
    pub fn failure_step(&self) -> Option<&CapacityStep> {
        let f = self.first_failure.as_ref()?;
        self.steps.iter().find(|s| s.index == f.step)
    }
}

/// The setting as people say it: `24 msg/s` (per room or per sender), or `2,000 users`.
pub fn setting(over: Over, value: f64, per: &str) -> String {
    match over {
        Over::Rate => format!("{} msg/s{per}", number(value)),
        Over::Users => format!("{} users", count(value.round() as u64)),
    }
}

/// Where the messages go, e.g. `into 2,000 members` or `into 22 rooms of up to 10`.
pub fn fan_out(o: &Offered) -> String {
    if o.rooms == 1 {
        format!("into {} members", count(u64::from(o.largest_room)))
    } else {
        format!(
            "into {} rooms of up to {} members",
            count(u64::from(o.rooms)),
            count(u64::from(o.largest_room))
        )
    }
}

/// Header of the step table printed as the search goes.
pub fn step_header(over: Over) -> String {
    format!(
        "{:>4}  {:<7}  {:>12}  {:>12}  {:>12}  {:>9}  {:>9}  {:>9}  verdict\n",
        "step",
        "phase",
        over.as_str(),
        "offered/s",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms"
    )
}

/// One line of the step table.
pub fn step_row(over: Over, step: &CapacityStep) -> String {
    let s = &step.summary;
    let lat = &s.latency.corrected;
    let value = match over {
        Over::Rate => number(step.value),
        Over::Users => count(step.value.round() as u64),
    };
    let delivered = step
        .verdict
        .checks
        .iter()
        .find(|c| c.name == "delivered")
        .map_or(s.throughput.delivered_per_s, |c| c.measured);
    format!(
        "{:>4}  {:<7}  {:>12}  {:>12}  {:>12}  {:>9}  {:>9}  {:>9}  {}\n",
        step.index,
        step.phase.as_str(),
        value,
        rate(step.offered.deliveries_per_s),
        rate(delivered),
        ms(lat.p50_us),
        ms(lat.p99_us),
        ms(lat.p999_us),
        verdict_word(&step.verdict)
    )
}

/// `PASS`, `FAIL: p99 412 ms > 200 ms`, or `HARNESS-BOUND: …`.
pub fn verdict_word(v: &StepVerdict) -> String {
    if v.harness_bound {
        let detail = v
            .checks
            .iter()
            .find(|c| c.name == "harness")
            .map_or(String::new(), |c| format!(": {}", c.detail));
        return format!("HARNESS-BOUND{detail}");
    }
    match v.first() {
        None => "PASS".into(),
        Some(c) => {
            let more = v.checks.iter().filter(|c| !c.passed).count() - 1;
            let more = if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            };
            format!("FAIL: {}{more}", c.detail)
        }
    }
}

/// What [`write_capacity`] wrote.
#[derive(Debug, Clone)]
pub struct CapacityFiles {
    pub json: PathBuf,
    pub html: PathBuf,
    pub charts: Vec<PathBuf>,
}

/// Writes `capacity.json`, the charts and `capacity.html` into `dir`. The JSON is
/// written first, so the figures are on disk even if a chart fails.
pub fn write_capacity(c: &Capacity, dir: &Path) -> Result<CapacityFiles, ReportError> {
    let write = super::write_file;
    super::create_dir(dir)?;
    let json = dir.join(CAPACITY_FILE);
    write(&json, c.to_json()?.as_bytes())?;
    let charts = super::capacity_charts::render_all(c, dir)?;
    let html = dir.join(CAPACITY_HTML);
    write(&html, super::capacity_html::render(c, &charts).as_bytes())?;
    Ok(CapacityFiles {
        json,
        html,
        charts: charts.drawn.iter().map(|c| dir.join(&c.file)).collect(),
    })
}
