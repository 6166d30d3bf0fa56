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

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::server::metrics::Metrics;
use crate::stomp::Frame;

/// One chat message on its way to subscribers, shared by all of them.
#[derive(Debug)]
pub struct Delivery {
    pub destination: String,
    pub message_id: String,
    pub body: Bytes,
}

/// What a session's writer sends to its client.
#[derive(Debug)]
pub enum Outbound {
    /// A room message for subscription `subscription` of this session.
    Message {
        subscription: Arc<str>,
        delivery: Arc<Delivery>,
    },
    /// Any other frame (a RECEIPT from a finished send).
    Frame(Frame),
    /// A final frame (an ERROR from a failed send): write it, then close the session.
    Close(Frame),
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
    /// Asks the session to close for `why` (first reason wins).
    pub fn kill(&self, why: Kill) {
        let _ = self.killed_for.set(why);
        self.kill.cancel();
    }
}

struct Subscriber {
    subscription: Arc<str>,
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

    pub fn subscribe(&self, room: &str, subscription: Arc<str>, session: &SessionHandle) {
        let mut rooms = self.inner.write().unwrap_or_else(|e| e.into_inner());
        rooms.entry(room.to_string()).or_default().push(Subscriber {
            subscription,
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

    /// Queues `delivery` to every local subscriber of `room` without waiting.
    pub fn deliver(&self, room: &str, delivery: Arc<Delivery>) {
        let rooms = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let Some(subs) = rooms.get(room) else { return };
        for sub in subs {
            if sub.session.kill.is_cancelled() {
                continue;
            }
            let item = Outbound::Message {
                subscription: sub.subscription.clone(),
                delivery: delivery.clone(),
            };
            match sub.session.outbound.try_send(item) {
                Ok(()) => {
                    self.metrics.fanout_deliveries.fetch_add(1, Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.metrics.fanout_drops.fetch_add(1, Relaxed);
                    self.metrics.slow_consumer_disconnects.fetch_add(1, Relaxed);
                    sub.session.kill(Kill::SlowConsumer);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }
}
