//! Server configuration: where Kafka and PostgreSQL are, the persistence strategy, and
//! every limit the server enforces (documented in the README's "Limits" table).

use std::net::SocketAddr;
use std::time::Duration;

/// Where chat history is written, the central design switch of the reference server.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Persist {
    /// The server writes the row after Kafka acknowledged the send.
    #[default]
    Producer,
    /// A dedicated consumer group reads the topic and writes the rows.
    Consumer,
}

impl Persist {
    pub fn as_str(self) -> &'static str {
        match self {
            Persist::Producer => "producer",
            Persist::Consumer => "consumer",
        }
    }
}

/// Explicit bounds. Each has a policy when it is hit, noted beside it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest STOMP frame accepted (command + headers + body). Larger: ERROR, close.
    pub max_frame_size: usize,
    /// Outbound frames queued per session. Full: the session is sent an ERROR and closed
    /// (a slow client never stalls a room).
    pub session_queue: usize,
    /// SENDs per session waiting for Kafka (and the DB). Full: the server stops reading
    /// that session until one completes (backpressure on that client only).
    pub session_inflight: usize,
    /// Open WebSocket sessions. Full: new connections are closed at once and counted.
    pub max_connections: usize,
    /// Subscriptions per session. Over: ERROR, close.
    pub max_subscriptions: usize,
    /// Heart-beat the server offers and wants, `(send every, expect every)`.
    pub heartbeat: (Duration, Duration),
    /// Time a new connection has to send CONNECT. Over: ERROR, close.
    pub connect_timeout: Duration,
    /// Longest a write to one client may block (the client reads nothing). Over: the
    /// session is treated as a slow consumer: ERROR, close.
    pub write_stall: Duration,
    /// Rows waiting for the database writers. Full: publishers wait (backpressure).
    pub db_queue: usize,
    /// Most rows written in one batch.
    pub db_batch: usize,
    /// Database writer connections.
    pub db_writers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: crate::stomp::DEFAULT_MAX_FRAME_SIZE,
            session_queue: 1024,
            session_inflight: 256,
            max_connections: 50_000,
            max_subscriptions: 4096,
            heartbeat: (Duration::from_secs(10), Duration::from_secs(10)),
            connect_timeout: Duration::from_secs(10),
            write_stall: Duration::from_secs(30),
            db_queue: 20_000,
            db_batch: 500,
            db_writers: 2,
        }
    }
}

/// Everything `server::run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub kafka_bootstrap: String,
    pub db_url: String,
    pub instance_id: String,
    pub persist: Persist,
    pub topic: String,
    /// Consumer group of the `consumer` persistence strategy (shared by all instances).
    pub persist_group: String,
    pub metrics_listen: Option<SocketAddr>,
    /// How long the Kafka steps of the start (cluster id, topic metadata, end offsets,
    /// first commit) may keep meeting "not ready yet" answers before the start fails.
    pub kafka_start_timeout: Duration,
    pub limits: Limits,
}

impl Config {
    pub fn new(kafka_bootstrap: &str, db_url: &str, instance_id: &str) -> Self {
        Config {
            kafka_bootstrap: kafka_bootstrap.to_string(),
            db_url: db_url.to_string(),
            instance_id: instance_id.to_string(),
            persist: Persist::Producer,
            topic: "chat.messages".to_string(),
            persist_group: DEFAULT_PERSIST_GROUP.to_string(),
            metrics_listen: None,
            kafka_start_timeout: crate::server::kafka_start::DEFAULT_START_TIMEOUT,
            limits: Limits::default(),
        }
    }

    /// The fan-out consumer group: unique to this instance, so every instance sees every
    /// message.
    pub fn fanout_group(&self) -> String {
        format!("{FANOUT_GROUP_PREFIX}{}", self.instance_id)
    }
}

/// The consumer group of `--persist consumer`, shared by every instance.
pub const DEFAULT_PERSIST_GROUP: &str = "stompede-persist";

/// Prefix of every instance's fan-out consumer group; the lag sampler looks for it.
pub const FANOUT_GROUP_PREFIX: &str = "stompede-fanout-";
