//! The resolved scenario: what the load engine runs and what a report records.
//!
//! These types hold no `Option`s where the format has a default: loading fills every
//! default in, so the engine never guesses. They serialize (and load back) in the same
//! shape and units as the TOML file, durations as `"30s"` strings, so the scenario block
//! of a `summary.json` reads like the file that produced it. The TOML shape with its
//! spans lives in `raw.rs`; the checks that turn one into the other live in `validate.rs`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::server::Persist;
pub use crate::stack::ServerImpl;

use super::duration::text as duration_text;
pub use super::faults::{
    server_index, Fault, FaultAction, Reconnect, MAX_FAULTS, MAX_FAULT_DURATION,
};

/// Bytes the harness reserves at the start of every chat text for its stamp (run id,
/// sender, sequence number, send time). `load.message_size` may not go below this.
pub const MIN_MESSAGE_SIZE: u32 = 64;

/// Largest chat text a scenario may ask for, well inside common STOMP frame limits.
pub const MAX_MESSAGE_SIZE: u32 = 32 * 1024;

/// A whole scenario, every default filled in and every check passed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Names the report directory; defaults to the file stem.
    pub name: String,
    pub description: String,
    /// The measured phase.
    #[serde(with = "duration_text")]
    pub duration: Duration,
    /// Sending before the measured phase, excluded from the figures.
    #[serde(with = "duration_text")]
    pub warmup: Duration,
    /// After sending stops, how long to wait for deliveries before counting a loss.
    #[serde(with = "duration_text")]
    pub grace: Duration,
    /// Drives the user-to-room mapping and, in the engine, message sizes and arrivals.
    pub seed: u64,
    pub users: Users,
    pub rooms: Vec<RoomGroup>,
    pub load: Load,
    pub churn: Option<Churn>,
    pub slo: Slo,
    pub target: Target,
    /// `[[faults]]`, in the order written (empty: none).
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// The file the scenario was read from.
    pub source: PathBuf,
}

/// `[users]`: the virtual users and how they connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Users {
    pub count: u32,
    /// Sessions opened per second during ramp-up.
    pub connect_rate: f64,
    /// Heart-beat asked for in CONNECT, both directions; zero means none.
    #[serde(with = "duration_text")]
    pub heartbeat: Duration,
    /// Virtual users multiplexed on one tokio task.
    pub per_task: u32,
    /// `[users.reconnect]`: how a user whose session breaks comes back (`None`: it does not).
    #[serde(default)]
    pub reconnect: Option<Reconnect>,
}

/// One `[[rooms]]` group: `count` rooms of `members` members each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomGroup {
    pub name: String,
    pub count: u32,
    pub members: u32,
    /// The first `senders` members of each room send; the rest only listen.
    pub senders: u32,
}

impl RoomGroup {
    /// The id of this group's room number `index`: `<name>-<index>`.
    pub fn room_id(&self, index: u32) -> String {
        format!("{}-{index}", self.name)
    }
}

/// `[load]`: how messages are sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    #[serde(flatten)]
    pub model: LoadModel,
    pub message_size: MessageSize,
    /// Ask for a RECEIPT on each SEND (only honoured when `target.receipts` is true).
    pub receipts: bool,
}

/// The arrival model, with the keys that belong to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "lowercase")]
pub enum LoadModel {
    /// A fixed schedule regardless of how the server copes; latency counts from the
    /// intended send time.
    Open {
        rate: f64,
        per: RatePer,
        arrival: Arrival,
    },
    /// Each sender waits for its previous message to come back (or its receipt), then
    /// thinks, then sends again.
    Closed {
        #[serde(with = "duration_text")]
        think_time: Duration,
    },
}

impl LoadModel {
    pub fn as_str(&self) -> &'static str {
        match self {
            LoadModel::Open { .. } => "open",
            LoadModel::Closed { .. } => "closed",
        }
    }
}

/// What an open-model `rate` is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RatePer {
    /// The rate is the room's total, shared evenly by its senders.
    Room,
    /// Each sender sends at the rate, in each room it sends to.
    Sender,
}

/// Spacing of open-model sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced.
    Constant,
    /// Exponential gaps with the same mean (a Poisson process).
    Poisson,
}

/// Chat text length in bytes, uniform in `min..=max` (`min == max` for a fixed size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSize {
    pub min: u32,
    pub max: u32,
}

impl MessageSize {
    /// Draws one size, uniform in `min..=max`.
    pub fn sample<R: rand::Rng + ?Sized>(&self, rng: &mut R) -> u32 {
        if self.min >= self.max {
            self.min
        } else {
            rng.random_range(self.min..=self.max)
        }
    }
}

/// `[churn]`: members leaving and rejoining during the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Churn {
    /// Member leaves per second across the whole run (LEAVE + UNSUBSCRIBE).
    pub leaves_per_second: f64,
    /// How long a member stays away before ENTER + SUBSCRIBE.
    #[serde(with = "duration_text")]
    pub rejoin_after: Duration,
}

/// `[slo]`: pass/fail thresholds. An absent latency, loss, duplicate or lag threshold is
/// not checked; `min_connected` and `max_unsent` always are (they say whether the load
/// the scenario asks for was applied at all), with defaults that demand all of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    /// Fraction of expected deliveries allowed to be lost, `0..=1`.
    pub max_loss: Option<f64>,
    pub max_duplicates: Option<u64>,
    /// Messages, the maximum over consumer groups and partitions.
    pub max_kafka_lag: Option<u64>,
    /// Fraction of planned users that must connect and subscribe, `0..=1` (default 1).
    pub min_connected: f64,
    /// Open-model sends still due when sending ended: the harness fell behind its own
    /// schedule by this many messages (default 0).
    pub max_unsent: u64,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            p50_ms: None,
            p99_ms: None,
            p999_ms: None,
            max_loss: None,
            max_duplicates: None,
            max_kafka_lag: None,
            min_connected: 1.0,
            max_unsent: 0,
        }
    }
}

impl Slo {
    /// True when no optional threshold is set (the load-applied checks always are).
    pub fn is_empty(&self) -> bool {
        *self == Slo::default()
    }
}

/// `[target]`: what the virtual users talk to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    #[serde(flatten)]
    pub kind: TargetKind,
    /// SEND destination template; `{room}` is replaced by the room id.
    pub send: String,
    /// SUBSCRIBE destination template; `{room}` is replaced by the room id.
    pub subscribe: String,
    pub body: BodyFormat,
    /// Whether the target answers RECEIPT frames at all.
    pub receipts: bool,
    pub connect: ConnectHeaders,
    pub kafka: Option<KafkaTarget>,
    pub db: Option<DbTarget>,
}

impl Target {
    pub fn is_local(&self) -> bool {
        matches!(self.kind, TargetKind::Local(_))
    }

    /// The SEND destination for a room id.
    pub fn send_destination(&self, room: &str) -> String {
        self.send.replace("{room}", room)
    }

    /// The SUBSCRIBE destination for a room id.
    pub fn subscribe_destination(&self, room: &str) -> String {
        self.subscribe.replace("{room}", room)
    }
}

/// Local stack (brought up when none is running) or an external server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetKind {
    Local(LocalStack),
    /// WebSocket URLs; sessions are spread over them round-robin.
    External {
        urls: Vec<String>,
    },
}

impl TargetKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            TargetKind::Local(_) => "local",
            TargetKind::External { .. } => "external",
        }
    }
}

/// The local stack's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalStack {
    /// 1, or 3 (replication factor 3, `min.insync.replicas=2`).
    pub brokers: u32,
    pub partitions: u32,
    /// Reference server instances; sessions are spread over them round-robin.
    pub servers: u32,
    pub persist: Persist,
    /// Which chat server the instances run: stompede's or the Spring peer.
    #[serde(default)]
    pub server_impl: ServerImpl,
    /// Spring peer only: every instance in one fan-out consumer group (the classic
    /// misconfiguration; each instance then fans out only its share of the partitions).
    #[serde(default)]
    pub shared_fanout_group: bool,
}

impl Default for LocalStack {
    fn default() -> Self {
        LocalStack {
            brokers: 1,
            partitions: 3,
            servers: 2,
            persist: Persist::Producer,
            server_impl: ServerImpl::Stompede,
            shared_fanout_group: false,
        }
    }
}

/// The body of each SEND.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyFormat {
    /// `{"roomId","sender","message","type"}`, as the reference server expects.
    #[serde(rename = "chat-json")]
    ChatJson,
    /// The chat text alone.
    #[serde(rename = "raw")]
    Raw,
}

/// Headers sent in CONNECT; an absent one is not sent (the engine picks `host`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectHeaders {
    pub login: Option<String>,
    /// Never written into reports.
    #[serde(skip_serializing, default)]
    pub passcode: Option<String>,
    pub host: Option<String>,
}

/// Where the Kafka lag sampler looks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaTarget {
    pub bootstrap: String,
    /// The chat topic whose consumer lag is sampled.
    pub topic: String,
    /// Consumer groups whose id starts with this are sampled; `None` samples every group.
    pub group_prefix: Option<String>,
}

/// Where the DB sampler and the end-of-run audit look.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbTarget {
    /// Written into reports with any password replaced by `***`.
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    pub table: String,
}

/// `postgres://user:secret@host/db` becomes `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

fn serialize_redacted_url<S: serde::Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url))
}
