//! The scenario file exactly as written: every key optional, every value spanned.
//!
//! serde does the type checking here (`deny_unknown_fields` on every table, so a typo is
//! an error listing the allowed keys, never a silently ignored setting). Keeping each value
//! in a [`Spanned`] lets `validate.rs` point later range and consistency errors at the
//! line and column they come from. Nothing in this module decides defaults.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use toml::Spanned;

use crate::server::Persist;
use crate::stack::ServerImpl;

pub(crate) type S<T> = Option<Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScenario {
    pub name: S<String>,
    pub description: S<String>,
    pub duration: S<DurationText>,
    pub warmup: S<DurationText>,
    pub grace: S<DurationText>,
    pub seed: S<u64>,
    pub users: S<RawUsers>,
    pub rooms: S<Vec<Spanned<RawRoomGroup>>>,
    pub load: S<RawLoad>,
    pub churn: S<RawChurn>,
    pub slo: S<RawSlo>,
    pub target: S<RawTarget>,
    pub faults: S<Vec<Spanned<super::faults::RawFault>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUsers {
    pub count: S<u32>,
    pub connect_rate: S<f64>,
    pub heartbeat: S<DurationText>,
    pub per_task: S<u32>,
    pub reconnect: S<super::faults::RawReconnect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoomGroup {
    pub name: S<String>,
    pub count: S<u32>,
    pub members: S<u32>,
    pub senders: S<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ModelName {
    Open,
    Closed,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoad {
    pub model: S<ModelName>,
    pub rate: S<f64>,
    pub per: S<super::RatePer>,
    pub arrival: S<super::Arrival>,
    pub think_time: S<DurationText>,
    pub message_size: S<RawMessageSize>,
    pub receipts: S<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMessageSize {
    pub min: S<u32>,
    pub max: S<u32>,
    pub fixed: S<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawChurn {
    pub leaves_per_second: S<f64>,
    pub rejoin_after: S<DurationText>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSlo {
    pub p50_ms: S<f64>,
    pub p99_ms: S<f64>,
    pub p999_ms: S<f64>,
    pub max_loss: S<f64>,
    pub max_duplicates: S<u64>,
    pub max_kafka_lag: S<u64>,
    pub min_connected: S<f64>,
    pub max_unsent: S<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum KindName {
    Local,
    External,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub kind: S<KindName>,
    pub brokers: S<u32>,
    pub partitions: S<u32>,
    pub servers: S<u32>,
    pub persist: S<Persist>,
    pub server_impl: S<ServerImpl>,
    pub shared_fanout_group: S<bool>,
    pub urls: S<Vec<Spanned<String>>>,
    pub send: S<String>,
    pub subscribe: S<String>,
    pub body: S<super::BodyFormat>,
    pub receipts: S<bool>,
    pub connect: S<RawConnect>,
    pub kafka: S<RawKafka>,
    pub db: S<RawDb>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConnect {
    pub login: S<String>,
    pub passcode: S<String>,
    pub host: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKafka {
    pub bootstrap: S<String>,
    pub topic: S<String>,
    pub group_prefix: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDb {
    pub url: S<String>,
    pub table: S<String>,
}

/// A duration still in its text form; parsed in `validate.rs` so the error can carry
/// the key path. Its own `Deserialize` only exists for a clearer wrong-type message.
#[derive(Debug, Clone)]
pub(crate) struct DurationText(pub String);

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = DurationText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\", \"30s\", \"2m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DurationText, E> {
                Ok(DurationText(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}
