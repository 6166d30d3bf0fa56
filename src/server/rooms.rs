//! Who is subscribed to which room on this instance, and the hand-off of one Kafka
//! record to every local subscriber.
//!
//! The fan-out consumer calls [`Rooms::deliver`] once per record. Delivery never waits:
//! each subscriber's session has a bounded outbound queue, and a subscriber whose queue
//! is full is marked for disconnection (it gets an ERROR and is closed by its own task),
//! so one slow client never stalls a room.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::server::metrics::Metrics;
use crate::stomp::{encode_for, Command, Frame, Headers, Version};

/// One chat message on its way to subscribers, shared by all of them.
#[derive(Debug)]
pub struct Delivery {
    pub destination: String,
    pub message_id: String,
    pub body: Bytes,
}

impl Delivery {
    /// The `MESSAGE` frame for one subscription.
    pub fn frame(&self, subscription: &str) -> Frame {
        let values = [
            subscription,
            &self.message_id,
            &self.destination,
            "application/json",
        ];
        let names = "subscription message-id destination content-type".len();
        let text = names + values.iter().map(|v| v.len()).sum::<usize>();
        let mut frame = Frame::new(Command::Message);
        frame.headers = Headers::with_capacity(values.len(), text);
        frame
            .header("subscription", subscription)
            .header("message-id", self.message_id.as_str())
            .header("destination", self.destination.as_str())
            .header("content-type", "application/json")
            .with_body(self.body.clone())
    }
}

/// An encoded frame as the WebSocket message that carries it, checked once to be UTF-8:
/// sessions writing text send it as a text message without checking it again, and every
/// subscriber sharing it takes one reference, not two.
#[derive(Debug, Clone)]
pub enum EncodedFrame {
    Text(Utf8Bytes),
    /// Not UTF-8: sent as a binary message to every session.
    Binary(Bytes),
}

impl EncodedFrame {
    pub fn new(bytes: Bytes) -> EncodedFrame {
        match Utf8Bytes::try_from(bytes.clone()) {
            Ok(text) => EncodedFrame::Text(text),
            Err(_) => EncodedFrame::Binary(bytes),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            EncodedFrame::Text(text) => text.as_bytes(),
            EncodedFrame::Binary(bytes) => bytes,
        }
    }
}

/// Distinct (version, subscription id) encodings of one delivery kept while it is handed
/// out. Clients that name their subscriptions alike (`sub-0` is what most libraries
/// start from, and the harness names them after the room) share one encoded frame;
/// past this many distinct ones, each session's writer encodes its own.
pub const MAX_SHARED_ENCODINGS: usize = 8;

/// What a session's writer sends to its client.
#[derive(Debug)]
pub enum Outbound {
    /// A room message for subscription `subscription` of this session, to be encoded by
    /// the writer.
    Message {
        subscription: Arc<str>,
        delivery: Arc<Delivery>,
    },
    /// A room message already encoded for this session's version and subscription id
    /// (shared with every subscriber that has the same two).
    Encoded(EncodedFrame),
    /// Any other frame (a RECEIPT from a finished send). Boxed, as are the frames of
    /// `Close`, to keep every queue slot small: a session's queue allocates its slots in
    /// blocks, idle or not.
    Frame(Box<Frame>),
    /// A final frame (an ERROR from a failed send): write it, then close the session.
    Close(Box<Frame>),
}

/// Why a session is being closed from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    SlowConsumer,
}

/// The parts of a session other tasks may touch.
#[derive(Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub outbound: mpsc::Sender<Outbound>,
    pub kill: CancellationToken,
    pub killed_for: Arc<std::sync::OnceLock<Kill>>,
}

impl SessionHandle {
    /// Asks the session to close for `why` (first reason wins). True for the call that
    /// asked first, so a session cut by several fan-out workers at once counts once.
    pub fn kill(&self, why: Kill) -> bool {
        let first = self.killed_for.set(why).is_ok();
        self.kill.cancel();
        first
    }

    /// Whether the session was asked to close: an atomic load, where asking the token
    /// would lock it (the fan-out asks once per subscriber per record).
    pub fn is_killed(&self) -> bool {
        self.killed_for.get().is_some()
    }
}

struct Subscriber {
    subscription: Arc<str>,
    /// The STOMP version the session negotiated (what its frames are encoded for).
    version: Version,
    session: SessionHandle,
}

/// Room id → local subscribers.
pub struct Rooms {
    inner: RwLock<HashMap<String, Vec<Subscriber>>>,
    metrics: Arc<Metrics>,
}

impl Rooms {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Rooms {
            inner: RwLock::new(HashMap::new()),
            metrics,
        }
    }

    pub fn subscribe(
        &self,
        room: &str,
        subscription: Arc<str>,
        version: Version,
        session: &SessionHandle,
    ) {
        let mut rooms = self.inner.write().unwrap_or_else(|e| e.into_inner());
        rooms.entry(room.to_string()).or_default().push(Subscriber {
            subscription,
            version,
            session: session.clone(),
        });
    }

    pub fn unsubscribe(&self, room: &str, subscription: &str, session_id: u64) {
        let mut rooms = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(subs) = rooms.get_mut(room) {
            subs.retain(|s| !(s.session.id == session_id && &*s.subscription == subscription));
            if subs.is_empty() {
                rooms.remove(room);
            }
        }
    }

    /// Number of local subscriptions to `room`.
    pub fn subscribers(&self, room: &str) -> usize {
        let rooms = self.inner.read().unwrap_or_else(|e| e.into_inner());
        rooms.get(room).map_or(0, Vec::len)
    }

    /// Queues `delivery` to every local subscriber of `room` without waiting. The frame
    /// is encoded once per distinct (version, subscription id) among the subscribers
    /// (up to [`MAX_SHARED_ENCODINGS`]), not once per subscriber.
    pub fn deliver(&self, room: &str, delivery: Arc<Delivery>) {
        let rooms = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let Some(subs) = rooms.get(room) else { return };
        let mut encoded: Vec<(Version, &str, Option<EncodedFrame>)> = Vec::new();
        let (mut queued, mut dropped, mut cut) = (0u64, 0u64, 0u64);
        for sub in subs {
            if sub.session.is_killed() {
                continue;
            }
            let shared = match encoded
                .iter()
                .find(|(v, id, _)| *v == sub.version && *id == &*sub.subscription)
            {
                Some((_, _, bytes)) => bytes.clone(),
                None if encoded.len() < MAX_SHARED_ENCODINGS => {
                    // A subscription id this version cannot carry is left to the writer,
                    // which answers it with an ERROR.
                    let mut out = BytesMut::with_capacity(160 + delivery.body.len());
                    let bytes =
                        encode_for(&delivery.frame(&sub.subscription), sub.version, &mut out)
                            .ok()
                            .map(|()| EncodedFrame::new(out.freeze()));
                    encoded.push((sub.version, &sub.subscription, bytes.clone()));
                    bytes
                }
                None => None,
            };
            let item = match shared {
                Some(frame) => Outbound::Encoded(frame),
                None => Outbound::Message {
                    subscription: sub.subscription.clone(),
                    delivery: delivery.clone(),
                },
            };
            match sub.session.outbound.try_send(item) {
                Ok(()) => queued += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    dropped += 1;
                    if sub.session.kill(Kill::SlowConsumer) {
                        cut += 1;
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        // Counted once per record, not once per subscriber: these counters are shared
        // with every session's task.
        if queued > 0 {
            self.metrics.fanout_deliveries.fetch_add(queued, Relaxed);
        }
        if dropped > 0 {
            self.metrics.fanout_drops.fetch_add(dropped, Relaxed);
        }
        if cut > 0 {
            self.metrics
                .slow_consumer_disconnects
                .fetch_add(cut, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stomp::{Decoder, Item};

    fn session(id: u64, queue: usize) -> (SessionHandle, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(queue);
        let handle = SessionHandle {
            id,
            outbound: tx,
            kill: CancellationToken::new(),
            killed_for: Arc::new(std::sync::OnceLock::new()),
        };
        (handle, rx)
    }

    fn delivery() -> Arc<Delivery> {
        Arc::new(Delivery {
            destination: "/topic/room/r1".into(),
            message_id: "0-42".into(),
            body: Bytes::from_static(br#"{"roomId":"r1","message":"hi"}"#),
        })
    }

    fn decode(bytes: &[u8], version: Version) -> Frame {
        let mut d = Decoder::new(1 << 20);
        d.set_version(version);
        let mut buf = BytesMut::from(bytes);
        match d.decode(&mut buf) {
            Ok(Some(Item::Frame(f))) => f,
            other => panic!("not one frame: {other:?}"),
        }
    }

    #[test]
    fn encoded_frames_are_text_only_when_utf8() {
        let text = Bytes::from_static("MESSAGE\nsubscription:é\n\n{}\0".as_bytes());
        match EncodedFrame::new(text.clone()) {
            EncodedFrame::Text(t) => assert_eq!(t.as_bytes(), &text[..]),
            other => panic!("UTF-8 frame kept as {other:?}"),
        }
        let bytes = Bytes::from_static(b"MESSAGE\n\n\xff\xfe\0");
        match EncodedFrame::new(bytes.clone()) {
            EncodedFrame::Binary(b) => assert_eq!(b, bytes),
            other => panic!("non-UTF-8 frame kept as {other:?}"),
        }
    }

    #[test]
    fn alike_subscriptions_share_one_encoded_frame() {
        let metrics = Arc::new(Metrics::new("t"));
        let rooms = Rooms::new(metrics.clone());
        let mut queues = Vec::new();
        for i in 0..5u64 {
            let (h, rx) = session(i, 4);
            let id = if i < 4 { "sub-r1" } else { "other" };
            rooms.subscribe("r1", Arc::from(id), Version::V1_2, &h);
            queues.push((h, rx));
        }
        rooms.deliver("r1", delivery());
        let mut frames = Vec::new();
        for (_, rx) in &mut queues {
            match rx.try_recv() {
                Ok(Outbound::Encoded(EncodedFrame::Text(b))) => frames.push(b),
                other => panic!("expected an encoded frame, got {other:?}"),
            }
        }
        // The first four share one buffer; the fifth has its own id.
        assert!(frames[1..4]
            .iter()
            .all(|b| b.as_ptr() == frames[0].as_ptr()));
        assert_ne!(frames[4].as_ptr(), frames[0].as_ptr());
        let f = decode(frames[0].as_bytes(), Version::V1_2);
        assert_eq!(f.command, Command::Message);
        assert_eq!(f.get("subscription"), Some("sub-r1"));
        assert_eq!(f.get("message-id"), Some("0-42"));
        assert_eq!(f.get("destination"), Some("/topic/room/r1"));
        assert_eq!(&f.body[..], &delivery().body[..]);
        assert_eq!(
            decode(frames[4].as_bytes(), Version::V1_2).get("subscription"),
            Some("other")
        );
        assert_eq!(metrics.fanout_deliveries.load(Relaxed), 5);
    }

    #[test]
    fn many_distinct_ids_and_unencodable_ones_are_left_to_the_writer() {
        let metrics = Arc::new(Metrics::new("t"));
        let rooms = Rooms::new(metrics.clone());
        let mut queues = Vec::new();
        // A 1.0 session cannot carry a newline in a header value: the writer answers it.
        let (h, rx) = session(100, 4);
        rooms.subscribe("r1", Arc::from("a\nb"), Version::V1_0, &h);
        queues.push((h, rx));
        for i in 0..MAX_SHARED_ENCODINGS as u64 + 2 {
            let (h, rx) = session(i, 4);
            rooms.subscribe("r1", Arc::from(format!("s{i}").as_str()), Version::V1_2, &h);
            queues.push((h, rx));
        }
        rooms.deliver("r1", delivery());
        let kinds: Vec<&str> = queues
            .iter_mut()
            .map(|(_, rx)| match rx.try_recv() {
                Ok(Outbound::Encoded(_)) => "encoded",
                Ok(Outbound::Message { .. }) => "message",
                other => panic!("{other:?}"),
            })
            .collect();
        // The unencodable one takes a cache entry too (so it is tried once per record).
        let encoded = kinds.iter().filter(|k| **k == "encoded").count();
        assert_eq!(kinds[0], "message");
        assert_eq!(encoded, MAX_SHARED_ENCODINGS - 1);
        assert_eq!(kinds.len() - encoded, 4);
    }

    #[test]
    fn a_full_queue_is_a_slow_consumer_and_counted_once_per_record() {
        let metrics = Arc::new(Metrics::new("t"));
        let rooms = Rooms::new(metrics.clone());
        let (slow, _rx_slow) = session(1, 1);
        let (fast, mut rx_fast) = session(2, 8);
        rooms.subscribe("r1", Arc::from("x"), Version::V1_2, &slow);
        rooms.subscribe("r1", Arc::from("x"), Version::V1_2, &fast);
        rooms.deliver("r1", delivery());
        rooms.deliver("r1", delivery());
        assert!(slow.kill.is_cancelled(), "the slow one is cut");
        assert!(!fast.kill.is_cancelled());
        assert_eq!(metrics.fanout_drops.load(Relaxed), 1);
        assert_eq!(metrics.slow_consumer_disconnects.load(Relaxed), 1);
        assert_eq!(metrics.fanout_deliveries.load(Relaxed), 3);
        assert!(matches!(rx_fast.try_recv(), Ok(Outbound::Encoded(_))));
        assert!(matches!(rx_fast.try_recv(), Ok(Outbound::Encoded(_))));
    }
}
