//! What coordinator and workers say to each other: one JSON message per frame, each frame
//! a 4-byte big-endian length and then the message. Histograms travel in HdrHistogram's
//! V2 compressed format (base64), so a merge adds exactly what each shard measured.
//!
//! Limits: a frame is at most [`MAX_FRAME`] bytes (a larger one is refused by the reader,
//! which closes the connection); the final report of a shard is the only large message
//! (its users' membership records).

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::load::integrity::Membership;
use crate::load::stats::Interval;
use crate::load::warnings::CauseCount;
use crate::load::Schedule;
use crate::scenario::Scenario;

/// Largest frame either side accepts (512 MiB).
pub const MAX_FRAME: u32 = 512 * 1024 * 1024;

/// Largest first frame (a worker's `Hello`) the coordinator reads from a connection it
/// knows nothing about yet (64 KiB).
pub const MAX_HELLO: u32 = 64 * 1024;

/// The protocol's version; a worker of another version is refused by name.
pub const PROTOCOL: u32 = 1;

/// Coordinator → worker.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToWorker {
    /// The shard's part of the run.
    Start(Box<Start>),
    /// The coordinator will not take this worker (the reason says what to do).
    Refused(String),
    Schedule(Schedule),
    /// Churn: user `user` leaves room `room` (and rejoins later, as in a single process).
    Leave {
        user: u32,
        room: u32,
    },
    /// Send your own counters now, for round `round`.
    ReadCounters {
        round: u64,
    },
    /// A consistent read of every counter, begun after your last request; an empty vector
    /// means every counter was still zero (nobody had been told to send yet).
    Round {
        counters: Vec<u64>,
    },
    /// Every counter as last heard (once a second), for the plausibility check of
    /// received numbers.
    Heard {
        counters: Vec<u64>,
    },
    /// The run is over: stop the users and send the final report.
    Stop,
}

/// What a shard is to run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Start {
    pub run_id: String,
    /// The run's clock: microseconds since the Unix epoch at the run's start instant.
    pub epoch_unix_us: u64,
    pub scenario: Scenario,
    pub urls: Vec<String>,
    pub shard: u32,
    pub shards: u32,
    /// The users of this shard: `[first, end)` of the plan's users.
    pub users: (u32, u32),
    /// Each shard's first user, in shard order (the last entry is the user count).
    pub bounds: Vec<u32>,
    /// Each shard's host, in shard order (latency is timed only between same-host pairs).
    pub hosts: Vec<String>,
    /// Source address for the shard's connections (local shards on a loopback target).
    pub source: Option<std::net::IpAddr>,
    pub receipts: bool,
}

/// Worker → coordinator.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToCoordinator {
    Hello {
        protocol: u32,
        shard: u32,
        host: String,
        pid: u32,
        version: String,
    },
    /// The shard's counts so far (sent when they change, at most ten times a second).
    Progress(Counts),
    /// One second of the shard's measurements, with its own counters as they stood.
    Interval {
        interval: WireInterval,
        counters: Vec<u64>,
    },
    /// A user needs the other shards' counters, read after now.
    NeedRound,
    /// This shard's own counters (its slots, in slot order), for round `round`.
    Counters {
        round: u64,
        values: Vec<u64>,
    },
    Final(Box<Final>),
    /// The worker cannot run its part (the reason says why and what to do).
    Failed(String),
    /// The first occurrence of a warning's cause in this shard (repeats are counted and
    /// come with the final report).
    Warning {
        cause: String,
        detail: String,
    },
}

/// The per-user counts a shard keeps as atomics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub ready: u64,
    pub sessions: u64,
    pub peak_sessions: u64,
    pub connected: u64,
    pub subscribed: u64,
    pub connect_errors: u64,
    pub disconnects: u64,
    pub reconnects: u64,
    pub errors: u64,
    pub unsent_backlog: u64,
    pub corrupt: u64,
}

/// A shard's end of the run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Final {
    pub counts: Counts,
    /// What the shard measured since its last interval.
    pub interval: WireInterval,
    /// Its own slots' final counters, in slot order.
    pub counters: Vec<u64>,
    /// Numbers its senders took but never put on the wire: (slot, number).
    pub voided: Vec<(usize, u64)>,
    /// (user, room, membership) of every user of the shard.
    pub memberships: Vec<(u32, u32, Membership)>,
    /// Its event loop's lag over the measured phase.
    pub loop_lag: String,
    pub cpu_s: Option<f64>,
    pub peak_rss_bytes: u64,
    pub warnings: Vec<CauseCount>,
    /// A virtual-user task that failed (the run's figures would be incomplete).
    pub failed_task: Option<String>,
}

/// [`Interval`] on the wire.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WireInterval {
    pub corrected_all: String,
    pub corrected: String,
    pub raw: String,
    pub receipt: String,
    pub send_lag: String,
    pub sent: u64,
    pub delivered: u64,
    pub receipts: u64,
    pub errors: u64,
    pub measured_sent: u64,
    pub measured_delivered: u64,
    pub untimed: u64,
}

impl WireInterval {
    pub fn from(i: &Interval) -> WireInterval {
        WireInterval {
            corrected_all: encode_histogram(&i.corrected_all),
            corrected: encode_histogram(&i.corrected),
            raw: encode_histogram(&i.raw),
            receipt: encode_histogram(&i.receipt),
            send_lag: encode_histogram(&i.send_lag),
            sent: i.sent,
            delivered: i.delivered,
            receipts: i.receipts,
            errors: i.errors,
            measured_sent: i.measured_sent,
            measured_delivered: i.measured_delivered,
            untimed: i.untimed,
        }
    }

    pub fn to_interval(&self) -> Result<Interval, String> {
        let mut i = crate::load::stats::Recorder::empty_interval();
        i.corrected_all = decode_histogram(&self.corrected_all)?;
        i.corrected = decode_histogram(&self.corrected)?;
        i.raw = decode_histogram(&self.raw)?;
        i.receipt = decode_histogram(&self.receipt)?;
        i.send_lag = decode_histogram(&self.send_lag)?;
        i.sent = self.sent;
        i.delivered = self.delivered;
        i.receipts = self.receipts;
        i.errors = self.errors;
        i.measured_sent = self.measured_sent;
        i.measured_delivered = self.measured_delivered;
        i.untimed = self.untimed;
        Ok(i)
    }
}

/// A histogram as base64 of its V2 compressed serialization.
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Serializing into a Vec cannot fail for histograms of this crate's bounds.
    let _ = V2DeflateSerializer::new().serialize(h, &mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The histogram of [`encode_histogram`], with the run's usual bounds.
pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("histogram does not decode: {e:?}"))?;
    let mut out = crate::load::stats::histogram();
    out.add(&h)
        .map_err(|e| format!("histogram out of bounds: {e:?}"))?;
    Ok(out)
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {0} bytes is over the limit of {1}")]
    TooLarge(u32, u32),
    #[error("message does not decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Writes one message.
pub async fn write<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
) -> Result<(), WireError> {
    let body = serde_json::to_vec(msg)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|n| *n <= MAX_FRAME)
        .ok_or(WireError::TooLarge(u32::MAX, MAX_FRAME))?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(&body).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one message; [`WireError::Closed`] at a clean end of stream.
pub async fn read<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<T, WireError> {
    read_limited(r, MAX_FRAME).await
}

/// [`read`] with a smaller limit: a frame over `max` bytes is refused before any of it
/// is read.
pub async fn read_limited<R: AsyncRead + Unpin, T: for<'de> Deserialize<'de>>(
    r: &mut R,
    max: u32,
) -> Result<T, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(WireError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len);
    if len > max.min(MAX_FRAME) {
        return Err(WireError::TooLarge(len, max.min(MAX_FRAME)));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_cross_the_wire_exactly() {
        let mut h = crate::load::stats::histogram();
        for v in [1u64, 10, 999, 12_345, 59_000_000] {
            h.record(v).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h)).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.len(), 5);
        assert!(decode_histogram("not base64!").is_err());
    }

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        write(&mut a, &ToWorker::Leave { user: 3, room: 7 })
            .await
            .unwrap();
        match read::<_, ToWorker>(&mut b).await.unwrap() {
            ToWorker::Leave { user, room } => assert_eq!((user, room), (3, 7)),
            other => panic!("{other:?}"),
        }
        a.write_all(&(MAX_FRAME + 1).to_be_bytes()).await.unwrap();
        assert!(matches!(
            read::<_, ToWorker>(&mut b).await,
            Err(WireError::TooLarge(_, MAX_FRAME))
        ));
        // A first frame over the hello limit is refused from its length alone.
        a.write_all(&(MAX_HELLO + 1).to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_limited::<_, ToCoordinator>(&mut b, MAX_HELLO).await,
            Err(WireError::TooLarge(_, MAX_HELLO))
        ));
        drop(a);
        assert!(matches!(
            read::<_, ToWorker>(&mut b).await,
            Err(WireError::Closed)
        ));
    }
}
