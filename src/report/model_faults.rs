//! The part of the report model that says what the run's faults did: one
//! [`FaultReport`] per injected fault with its recovery figures, and the run-wide
//! durability and reconnection figures. Filled by `crate::fault::recovery`; absent from
//! `summary.json` (as `null`) when the scenario has no `[[faults]]`.
//!
//! Times are on the run's timeline (seconds since the run started, like `t_s`);
//! durations are seconds (`*_s`) or milliseconds (`*_ms`) as named.

use serde::{Deserialize, Serialize};

/// Everything about the run's faults.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FaultsSummary {
    /// One entry per `[[faults]]` entry, in scenario order, injected or not.
    pub injected: Vec<FaultReport>,
    /// The promise a RECEIPT makes, checked message by message.
    pub durability: Durability,
    /// Expected deliveries a user could not get because it was disconnected (between its
    /// session breaking and its re-subscription). Not loss: loss counts only what the
    /// system dropped while the user was subscribed.
    pub missed_while_disconnected: u64,
    /// Sends a user skipped because it was disconnected when they were due.
    pub unsent_while_disconnected: u64,
    /// Lost deliveries of messages numbered inside some fault's window (from 2 s before
    /// the injection until 2 s after its outage ended), and outside every window. `None`
    /// when the run could not keep the per-second sequence snapshots (see the notes).
    pub lost_in_fault_windows: Option<u64>,
    pub lost_outside_fault_windows: Option<u64>,
}

/// Receipted messages: the server confirmed them, so none may be missing.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// SENDs whose RECEIPT arrived.
    pub receipted: u64,
    /// Deliveries of receipted messages that a subscriber expected and never got
    /// (must be 0).
    pub receipted_lost: u64,
    /// Receipted messages without a row in the history table (must be 0); `None` when
    /// the database was not audited.
    pub receipted_missing_in_db: Option<u64>,
}

/// One fault and what followed it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FaultReport {
    /// 1-based position in the scenario's `[[faults]]`.
    pub index: u32,
    /// `kill-broker`, `restart-broker`, `kill-server`, `restart-server`, `pause-db`,
    /// `delay`, `drop`, `partition` or `exec`.
    pub kind: String,
    /// What it acted on, e.g. `broker 2 (leader of town-hall-0's partition 1)`.
    pub target: String,
    /// When the scenario asked for it: seconds after sending started.
    pub planned_s: f64,
    /// When it was injected, on the run's timeline; `None` if it never was (the run
    /// ended first).
    pub at_s: Option<f64>,
    /// For faults with a duration: when the fault was lifted.
    pub end_s: Option<f64>,
    /// Whether the injection succeeded.
    pub ok: bool,
    /// Why it did not (or what the command printed on failure).
    pub error: Option<String>,
    /// Who the outage figures are about: `all users`, or `users of s2`.
    pub affected: String,
    pub affected_users: u64,
    /// The longest stretch without a delivery to the affected users that overlaps the
    /// fault's window; `None` when deliveries never paused for 200 ms or more.
    pub outage: Option<Outage>,
    /// Corrected p99 over the 5 s before the injection (ms).
    pub p99_before_ms: Option<f64>,
    /// Seconds from the injection until the per-second p99 was back within twice
    /// `p99_before_ms` (after the outage); `None` if it never was before the run ended.
    pub p99_recovered_s: Option<f64>,
    /// SENDs in this fault's window that could not be written (the session broke).
    pub send_failures: u64,
    /// SENDs in this fault's window whose RECEIPT never came.
    pub receipt_timeouts: u64,
    /// Longest RECEIPT wait among SENDs in this fault's window (ms).
    pub receipt_max_ms: Option<f64>,
    /// Sessions that broke in this fault's window, and how many of them came back.
    pub disconnected: u64,
    pub reconnected: u64,
    /// Time from a session breaking until its user was subscribed again.
    pub reconnect_ms: Option<ReconnectTimes>,
    /// Lost deliveries of messages numbered in this fault's window.
    pub lost_in_window: Option<u64>,
    /// The users the fault was not about, to show whether it reached them; `None` when
    /// it was about everybody (or the run had no one else to compare).
    pub others: Option<Others>,
}

/// Latency of the deliveries a fault was not about: between users of the other servers
/// (sender and recipient on the same one) for a server's fault, or of the rooms on the
/// other partitions for a broker's. Each second's figure is the worst p99 among those
/// groups (log-linear buckets, within 6.25 %).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Others {
    /// e.g. `users of s2 among themselves`, `rooms on partitions 0, 2`.
    pub who: String,
    /// Median over the 5 s before the injection of the per-second p99 (ms).
    pub p99_before_ms: Option<f64>,
    /// Highest per-second p99 from the injection until the fault was lifted or the
    /// affected users' outage ended (at least 1 s) (ms).
    pub p99_during_ms: Option<f64>,
}

/// A stretch without deliveries.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Outage {
    /// Last delivery before the stretch.
    pub start_s: f64,
    /// First delivery after it (the end of the run's sending if none came).
    pub end_s: f64,
    pub length_s: f64,
    /// From the injection to the first delivery after the outage.
    pub first_delivery_after_s: f64,
    /// False when no delivery came before sending ended.
    pub recovered: bool,
}

/// Distribution of reconnection times (ms).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ReconnectTimes {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}
