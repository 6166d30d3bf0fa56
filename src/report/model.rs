//! The report model: everything one run measured, as one serde value.
//!
//! A [`Summary`] is filled by the load engine at the end of a run, written to
//! `summary.json`, and rendered by the HTML, console and markdown renderers. The same
//! file is later loaded back ([`Summary::load`]) as the baseline of a CI gate or as one
//! side of a comparison, so its shape is versioned by [`SCHEMA_VERSION`] and described
//! by `schema/summary.schema.json`; a unit test keeps the two in step.
//!
//! Conventions: latencies are integer microseconds (`*_us`), times on the run's
//! timeline are seconds since the run started (`t_s`), wall-clock times are RFC 3339
//! UTC strings, and anything a target may not provide is an `Option` that serializes
//! as `null` (every field is always present in the JSON).

use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub use super::model_faults::*;
use super::ReportError;
pub use crate::server::config::Persist;
pub use crate::stack::ServerImpl;

/// Version of the `summary.json` layout. Bump it on any change that an older reader
/// would misread, and update `schema/summary.schema.json` with it.
pub const SCHEMA_VERSION: u32 = 2;

/// Older layouts [`Summary::from_json`] still reads. Version 1 lacks what version 2
/// added (subscribed sessions, the harness's own load, warning counts, sample counts,
/// CPU seconds, the RSS timeline); those load as absent.
pub const READABLE_SCHEMA_VERSIONS: &[u32] = &[1, 2];

/// The whole result of one run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Summary {
    /// Always [`SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    pub tool: ToolInfo,
    /// Unique id of the run; it also travels inside every chat text the run sent.
    pub run_id: String,
    pub scenario: ScenarioInfo,
    /// RFC 3339 UTC, e.g. `2025-01-31T12:00:00.000Z` (see [`rfc3339`]).
    pub started_at: String,
    /// RFC 3339 UTC.
    pub finished_at: String,
    pub phases: Phases,
    pub target: TargetSummary,
    pub environment: Environment,
    pub latency: LatencySummary,
    pub throughput: Throughput,
    pub integrity: Integrity,
    pub sessions: Sessions,
    /// One point per sampling interval (normally one second), over the whole run.
    pub timeline: Vec<TimelinePoint>,
    /// Consumer lag of every server instance's group; `None` when not measured
    /// (external targets, or the brokers could not be reached).
    pub kafka: Option<KafkaSummary>,
    /// Database write throughput and audit; `None` when not measured.
    pub db: Option<DbSummary>,
    /// One verdict per SLO of the scenario.
    pub slo: Vec<SloVerdict>,
    /// True when every SLO passed (and true when the scenario has none).
    pub passed: bool,
    /// Whether the harness kept up with its own schedule (absent in version 1).
    #[serde(default)]
    pub harness: Option<HarnessLoad>,
    pub resources: Option<Resources>,
    pub files: Files,
    /// Things a reader should know about this run, e.g. why a section is missing.
    pub notes: Vec<String>,
    /// Warnings during the run, one entry per cause with its count.
    #[serde(default)]
    pub warnings: Vec<WarningCount>,
    /// What the scenario's faults did; `None` when it has none (and in summaries written
    /// before faults existed).
    #[serde(default)]
    pub faults: Option<FaultsSummary>,
    /// The shards of a run spread over several worker processes (`--shards`); `None`
    /// for a run in one process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<Vec<ShardReport>>,
}

/// One shard of a sharded run: who ran it, what it measured, and whether it finished.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ShardReport {
    pub shard: u32,
    /// The host it ran on, as it named itself.
    pub host: String,
    pub pid: Option<u32>,
    /// Users of the plan assigned to it.
    pub users: u64,
    pub connected: u64,
    /// Messages its users sent and deliveries they received.
    pub sent: u64,
    pub delivered: u64,
    /// Deliveries in its measured-phase latency histogram (the merged histogram's count
    /// is the sum of these).
    pub timed: u64,
    pub cpu_s: Option<f64>,
    pub peak_rss_bytes: u64,
    /// Its source address, when it had one of its own.
    pub source: Option<String>,
    /// Why it did not finish (`None`: it did); a lost shard fails the run.
    pub lost: Option<String>,
}

/// The harness's own load: if it could not keep its schedule, latency figures include
/// its delay and the run says "harness-bound" instead of blaming the server.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct HarnessLoad {
    /// Open model, measured phase: how late sends left against their intended time.
    /// High values with a punctual event loop mean the server pushed back (TCP
    /// backpressure), not that the harness was short of CPU.
    pub send_lag_p99_us: Option<u64>,
    pub send_lag_max_us: Option<u64>,
    /// Measured phase: how late a 10 ms timer of the harness's runtime fired.
    pub loop_lag_p99_us: Option<u64>,
    pub loop_lag_max_us: Option<u64>,
    /// The event-loop lag (p99) beyond which the run is harness-bound, milliseconds.
    pub limit_ms: f64,
    /// True when the harness, not the target, was the limit.
    pub bound: bool,
}

impl WarningCount {
    /// The cause and when (and to whom) it first happened, for one line of text.
    pub fn cause_line(&self) -> String {
        if self.first.is_empty() {
            format!("{} (first at {:.1} s)", self.cause, self.first_t_s)
        } else {
            format!(
                "{} (first at {:.1} s, {})",
                self.cause, self.first_t_s, self.first
            )
        }
    }
}

/// A kind of warning and how often it happened.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WarningCount {
    /// The warning without what differs between occurrences.
    pub cause: String,
    pub count: u64,
    /// What differed in the first occurrence (e.g. `"user 17"`); may be empty.
    pub first: String,
    /// When the first occurred, seconds since the run started.
    pub first_t_s: f64,
}

/// The program that wrote the summary.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// `"stompede"`.
    pub name: String,
    /// The crate version, `env!("CARGO_PKG_VERSION")`.
    pub version: String,
}

impl ToolInfo {
    /// This build of stompede.
    pub fn current() -> ToolInfo {
        ToolInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Which scenario ran.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ScenarioInfo {
    pub name: String,
    /// Path of the scenario file, as given on the command line.
    pub file: Option<String>,
    pub description: Option<String>,
    /// The parsed scenario, as JSON, so a report says exactly what ran.
    pub definition: serde_json::Value,
}

/// Lengths of the run's phases, in seconds. Only `measure` counts toward the stats.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Phases {
    pub ramp_s: f64,
    pub warmup_s: f64,
    pub measured_s: f64,
    pub grace_s: f64,
}

/// What was measured.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TargetSummary {
    pub kind: TargetKind,
    /// WebSocket URLs the virtual users connected to.
    pub urls: Vec<String>,
    /// The local stack's topology; `None` for external targets.
    pub stack: Option<StackSummary>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The stack started by stompede itself (Kafka, PostgreSQL, reference servers).
    Local,
    /// Any STOMP-over-WebSocket server given by URL.
    External,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Local => "local",
            TargetKind::External => "external",
        }
    }
}

/// Topology of the local stack.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StackSummary {
    pub brokers: u32,
    pub partitions: u32,
    /// Replication factor of the chat topic.
    pub replication_factor: u32,
    /// Server instances.
    pub servers: u32,
    pub persist: Persist,
    /// Which implementation the servers ran (stompede's own, or the Spring peer).
    #[serde(default)]
    pub server_impl: ServerImpl,
    /// Whether the instances shared one fan-out consumer group (Spring peer only).
    #[serde(default)]
    pub shared_fanout_group: bool,
    pub kafka_version: String,
    pub topic: String,
}

/// The machine the harness ran on.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Environment {
    pub hostname: String,
    /// e.g. `"linux x86_64 (Debian GNU/Linux 12)"`.
    pub os: String,
    pub cpus: u32,
    pub memory_bytes: u64,
    pub stompede_version: String,
    /// `rustc --version` of the build, when known.
    pub rustc: Option<String>,
}

/// End-to-end latency per recipient, measured phase only.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LatencySummary {
    /// From the intended send time (open model; equals `raw` on closed-model runs).
    pub corrected: LatencyStats,
    /// From the actual send time.
    pub raw: LatencyStats,
    /// Send to `RECEIPT`, when the server sends receipts.
    pub receipt: Option<LatencyStats>,
}

/// Figures of one latency histogram, in microseconds.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LatencyStats {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// The percentile distribution, ascending quantiles in `[0, 1]`, for the chart.
    pub percentiles: Vec<Percentile>,
}

/// One point of a percentile distribution.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Percentile {
    /// In `[0, 1]`; 0.999 is the 99.9th percentile.
    pub quantile: f64,
    pub value_us: u64,
}

impl LatencyStats {
    /// Figures of a histogram recorded in microseconds. The distribution holds ten
    /// points per decade of "nines" (0%, 20.6%, 36.9%, … 90%, … 99%, …), up to the
    /// resolution the sample count supports, then the maximum.
    pub fn from_histogram(h: &Histogram<u64>) -> LatencyStats {
        let count = h.len();
        if count == 0 {
            return LatencyStats::empty();
        }
        let mut percentiles = Vec::new();
        // x = 1 / (1 - q) runs over 1, 10^0.1, 10^0.2, … while 1/x still covers a sample.
        for k in 0.. {
            let x = 10f64.powf(k as f64 / 10.0);
            if x > count as f64 || k > 70 {
                break;
            }
            let q = 1.0 - 1.0 / x;
            percentiles.push(Percentile {
                quantile: q,
                value_us: h.value_at_quantile(q),
            });
        }
        percentiles.push(Percentile {
            quantile: 1.0,
            value_us: h.max(),
        });
        LatencyStats {
            count,
            min_us: h.min(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            percentiles,
        }
    }

    /// Figures of a histogram with no samples.
    pub fn empty() -> LatencyStats {
        LatencyStats {
            count: 0,
            min_us: 0,
            mean_us: 0.0,
            p50_us: 0,
            p90_us: 0,
            p99_us: 0,
            p999_us: 0,
            max_us: 0,
            percentiles: Vec::new(),
        }
    }
}

/// Message counts and rates over the measured phase.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Throughput {
    /// Messages sent by the virtual users.
    pub sent: u64,
    /// Deliveries: one per recipient of each message.
    pub delivered: u64,
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    /// `RECEIPT` frames received; `None` when the run did not ask for receipts.
    pub receipts: Option<u64>,
}

/// Delivery integrity, checked per sender and room by every recipient.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Integrity {
    /// Deliveries expected: each message times the members subscribed when it was sent.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// `lost / expected`, 0 when nothing was expected.
    pub loss_ratio: f64,
    /// With one fan-out consumer group shared by the server instances: the deliveries
    /// that arrangement can never make, against the loss measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_group: Option<SharedGroupLoss>,
}

/// Loss explained by a fan-out consumer group shared by every server instance: a
/// subscriber gets only the rooms whose partition its own instance consumes.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SharedGroupLoss {
    /// The consumer group.
    pub group: String,
    /// Instance id → partitions its fan-out consumer held at the end of the run.
    pub assignment: std::collections::BTreeMap<String, Vec<u32>>,
    /// Expected deliveries to subscribers whose instance does not hold the room's
    /// partition: what the arrangement predicts will never arrive.
    pub unreachable: u64,
    /// Of those, how many were lost (equal to `unreachable` when the prediction holds).
    pub unreachable_lost: u64,
    /// Recipients with at least one such delivery.
    pub recipients: u64,
    /// Per instance: such deliveries to the subscribers connected to it.
    #[serde(default)]
    pub unreachable_by_instance: std::collections::BTreeMap<String, u64>,
    /// Deliveries lost to subscribers whose instance does hold the room's partition.
    pub other_lost: u64,
}

/// Virtual-user sessions.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Sessions {
    pub planned: u64,
    pub connected: u64,
    /// Users that connected and subscribed to all their rooms (absent in version 1).
    #[serde(default)]
    pub subscribed: Option<u64>,
    /// Most sessions connected at once.
    pub peak: u64,
    /// Failed WebSocket or STOMP `CONNECT` attempts.
    pub connect_errors: u64,
    /// STOMP `ERROR` frames received.
    pub errors: u64,
    /// Sessions the server closed before the run ended.
    pub disconnects: u64,
}

/// Phase of the run a timeline point belongs to.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Ramp,
    Warmup,
    Measure,
    Grace,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Ramp => "ramp",
            Phase::Warmup => "warmup",
            Phase::Measure => "measure",
            Phase::Grace => "grace",
        }
    }

    /// Name for people, e.g. in chart shading.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Ramp => "ramp-up",
            Phase::Warmup => "warm-up",
            Phase::Measure => "measured",
            Phase::Grace => "grace",
        }
    }
}

/// One sampling interval of the run. Counts are for the interval only, not cumulative.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TimelinePoint {
    /// End of the interval, seconds since the run started.
    pub t_s: f64,
    /// Length of the interval in seconds (normally 1.0); rates are counts / this.
    pub interval_s: f64,
    pub phase: Phase,
    pub sent: u64,
    pub delivered: u64,
    /// Sessions connected at the end of the interval.
    pub sessions: u64,
    /// STOMP `ERROR` frames and connect errors in the interval.
    pub errors: u64,
    /// Corrected latency of deliveries in the interval; `None` when there were none.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// The harness's resident memory at the end of the interval (absent in version 1).
    #[serde(default)]
    pub harness_rss_bytes: Option<u64>,
}

/// Kafka consumer lag, read from the brokers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KafkaSummary {
    /// One entry per consumer group (each server instance has its own).
    pub groups: Vec<GroupLag>,
    /// Largest total lag of any group at any sample.
    pub max_lag: u64,
    /// Samples taken and failed over the whole run (absent in version 1).
    #[serde(default)]
    pub sampling: Option<Sampling>,
}

/// How a sampler fared over the whole run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Successful samples; every one is in the summary unless `thinned` says otherwise.
    pub taken: u64,
    pub failed: u64,
    /// Successful samples left out to keep the summary bounded (very long runs).
    pub thinned: u64,
    /// Seconds between samples.
    pub interval_s: f64,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GroupLag {
    pub group: String,
    pub max_lag: u64,
    /// Total lag at the last sample.
    pub final_lag: u64,
    pub samples: Vec<LagSample>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LagSample {
    pub t_s: f64,
    /// Sum over partitions.
    pub total_lag: u64,
    pub partitions: Vec<PartitionLag>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PartitionLag {
    pub partition: i32,
    pub lag: u64,
}

/// Database write throughput (from PostgreSQL's statistics) and end-of-run audit.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DbSummary {
    pub rows_per_s: Vec<RowsSample>,
    pub peak_rows_per_s: f64,
    pub mean_rows_per_s: f64,
    pub audit: Option<DbAudit>,
    /// Samples taken and failed over the whole run (absent in version 1).
    #[serde(default)]
    pub sampling: Option<Sampling>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RowsSample {
    pub t_s: f64,
    pub rows_per_s: f64,
}

/// What reached the database for this run's messages.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct DbAudit {
    /// Rows whose text carries this run's id.
    pub rows_for_run: u64,
    /// Messages the run sent (whole run, not only the measured phase).
    pub sent: u64,
    /// Messages the server acknowledged with `RECEIPT`; `None` without receipts.
    pub receipted: Option<u64>,
    /// Sent messages with no row.
    pub missing: u64,
    /// Messages with more than one row (counted once per extra row).
    pub duplicates: u64,
}

/// Whether the SLO's limit is an upper or a lower bound.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Passes when measured <= limit (latency, loss, lag).
    AtMost,
    /// Passes when measured >= limit (throughput, delivery ratio).
    AtLeast,
}

impl Bound {
    pub fn symbol(self) -> &'static str {
        match self {
            Bound::AtMost => "<=",
            Bound::AtLeast => ">=",
        }
    }
}

/// The verdict on one SLO.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SloVerdict {
    /// e.g. `"p99_ms"`, `"loss_ratio"`.
    pub name: String,
    pub bound: Bound,
    pub limit: f64,
    pub measured: f64,
    /// e.g. `"ms"`, `"ratio"`, `"msg/s"`.
    pub unit: String,
    pub passed: bool,
}

impl SloVerdict {
    /// A verdict with `passed` computed from the bound.
    pub fn new(name: &str, bound: Bound, limit: f64, measured: f64, unit: &str) -> SloVerdict {
        let passed = match bound {
            Bound::AtMost => measured <= limit,
            Bound::AtLeast => measured >= limit,
        };
        SloVerdict {
            name: name.into(),
            bound,
            limit,
            measured,
            unit: unit.into(),
            passed,
        }
    }
}

/// Memory and CPU of the harness and of the local reference servers.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Resources {
    /// Peak resident memory (see `basis`).
    pub harness_peak_rss_bytes: u64,
    /// CPU seconds (user + system) the harness used during the run.
    #[serde(default)]
    pub harness_cpu_s: Option<f64>,
    /// What the figures cover; version 1 summaries (no basis) hold lifetime peaks.
    #[serde(default)]
    pub basis: Option<String>,
    pub servers: Vec<ServerResources>,
    /// The local stack's Kafka brokers (`broker 1`, …), measured like the servers.
    #[serde(default)]
    pub brokers: Vec<ServerResources>,
    /// Deliveries over the time the CPU figures cover (the whole run, ramp-up and
    /// grace included): what the per-million figures divide by.
    #[serde(default)]
    pub deliveries: Option<u64>,
    /// `harness_cpu_s` per million `deliveries`.
    #[serde(default)]
    pub harness_cpu_s_per_million: Option<f64>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ServerResources {
    pub instance_id: String,
    pub peak_rss_bytes: u64,
    /// CPU seconds (user + system) the server used during the run.
    #[serde(default)]
    pub cpu_s: Option<f64>,
    /// `cpu_s` per million of the run's deliveries.
    #[serde(default)]
    pub cpu_s_per_million: Option<f64>,
}

/// Other files of the run, relative to the report directory.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Files {
    /// HdrHistogram interval log of the corrected latency, when written.
    pub histogram_log: Option<String>,
    /// Chart file names; filled in by [`super::write_report`].
    pub charts: Vec<String>,
}

/// A wall-clock time as the RFC 3339 UTC string the summary stores.
pub fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl Summary {
    /// Reads a `summary.json` written by this or a compatible build, e.g. a CI baseline.
    pub fn load(path: &Path) -> Result<Summary, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Summary::from_json(&text).map_err(|e| e.at(path))
    }

    /// Parses summary JSON, checking the schema version before the rest.
    pub fn from_json(text: &str) -> Result<Summary, ReportError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|source| ReportError::Parse { path: None, source })?;
        match value.get("schema_version").and_then(|v| v.as_u64()) {
            Some(v) if READABLE_SCHEMA_VERSIONS.iter().any(|r| u64::from(*r) == v) => {}
            found => {
                return Err(ReportError::SchemaVersion {
                    path: None,
                    found: found
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "none".into()),
                })
            }
        }
        serde_json::from_value(value).map_err(|source| ReportError::Parse { path: None, source })
    }

    /// Pretty JSON, as written to `summary.json`. The text is parsed back before it is
    /// returned, so a summary that could not be loaded as a baseline (a NaN or infinite
    /// figure, which JSON writes as `null`) is an error here rather than later in CI.
    pub fn to_json(&self) -> Result<String, ReportError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|source| ReportError::Parse { path: None, source })?;
        Summary::from_json(&text).map_err(|e| match e {
            ReportError::Parse { source, .. } => ReportError::NotLoadable { source },
            other => other,
        })?;
        Ok(text)
    }

    /// Samples of the measured phase only.
    pub fn measured_timeline(&self) -> impl Iterator<Item = &TimelinePoint> {
        self.timeline.iter().filter(|p| p.phase == Phase::Measure)
    }
}
