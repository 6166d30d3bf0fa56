//! Server configuration.
use std::net::SocketAddr;

/// Where chat history is written, the central design switch of the reference server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
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

/// Everything `server::run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub kafka_bootstrap: String,
    pub db_url: String,
    pub instance_id: String,
    pub persist: Persist,
    pub topic: String,
    pub metrics_listen: Option<SocketAddr>,
}
