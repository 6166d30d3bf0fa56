//! Latency and throughput recording: per-shard HdrHistograms that virtual users write
//! into, merged once a second by one aggregator into the run totals and the timeline.
//!
//! Users are spread over a fixed number of shards; each shard is a short mutex around
//! the current interval's histograms and counters. The aggregator swaps every shard's
//! interval out, merges it, and resets it, so no sample is ever stored individually.
//! Samples whose intended send time falls in the measured phase also go to the
//! "measured" histograms, the only ones the summary figures come from.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use hdrhistogram::Histogram;

/// Highest latency recorded: 60 s in microseconds (larger values are clamped).
pub const MAX_LATENCY_US: u64 = 60_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("static histogram bounds are valid")
}

fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, MAX_LATENCY_US));
}

/// One shard's figures since the aggregator last looked.
pub struct Interval {
    /// Every delivery this interval (timeline percentiles).
    pub corrected_all: Histogram<u64>,
    /// Deliveries of messages intended inside the measured phase.
    pub corrected: Histogram<u64>,
    pub raw: Histogram<u64>,
    pub receipt: Histogram<u64>,
    /// Open model, measured phase: how late each send left against its intended time
    /// (the harness's own schedule lag).
    pub send_lag: Histogram<u64>,
    pub sent: u64,
    pub delivered: u64,
    pub receipts: u64,
    pub errors: u64,
    pub measured_sent: u64,
    pub measured_delivered: u64,
    /// Deliveries not timed: their sender's clock was another host's (sharded runs).
    pub untimed: u64,
}

impl Interval {
    fn new() -> Self {
        Interval {
            corrected_all: histogram(),
            corrected: histogram(),
            raw: histogram(),
            receipt: histogram(),
            send_lag: histogram(),
            sent: 0,
            delivered: 0,
            receipts: 0,
            errors: 0,
            measured_sent: 0,
            measured_delivered: 0,
            untimed: 0,
        }
    }

    /// Adds `other`'s histograms and counts to these.
    pub fn add(&mut self, other: &Interval) {
        let _ = self.corrected_all.add(&other.corrected_all);
        let _ = self.corrected.add(&other.corrected);
        let _ = self.raw.add(&other.raw);
        let _ = self.receipt.add(&other.receipt);
        let _ = self.send_lag.add(&other.send_lag);
        self.sent += other.sent;
        self.delivered += other.delivered;
        self.receipts += other.receipts;
        self.errors += other.errors;
        self.measured_sent += other.measured_sent;
        self.measured_delivered += other.measured_delivered;
        self.untimed += other.untimed;
    }

    fn reset(&mut self) {
        self.corrected_all.reset();
        self.corrected.reset();
        self.raw.reset();
        self.receipt.reset();
        self.send_lag.reset();
        self.sent = 0;
        self.delivered = 0;
        self.receipts = 0;
        self.errors = 0;
        self.measured_sent = 0;
        self.measured_delivered = 0;
        self.untimed = 0;
    }
}

/// Where virtual users record; shared by all of them.
pub struct Recorder {
    shards: Vec<Mutex<Interval>>,
    /// Open sessions right now.
    pub sessions: AtomicU64,
    pub peak_sessions: AtomicU64,
    pub connected: AtomicU64,
    /// Users that connected and subscribed to all their rooms.
    pub subscribed: AtomicU64,
    pub connect_errors: AtomicU64,
    pub disconnects: AtomicU64,
    /// Sessions opened again after a break (`[users.reconnect]`).
    pub reconnects: AtomicU64,
    pub errors: AtomicU64,
    /// Open-model sends still due when sending ended (the users had fallen behind).
    pub unsent_backlog: AtomicU64,
    /// Stamped messages whose stamp the run never issued (mangled in transit).
    pub corrupt: AtomicU64,
}

impl Recorder {
    pub fn new(shards: usize) -> Self {
        Recorder {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(Interval::new()))
                .collect(),
            sessions: AtomicU64::new(0),
            peak_sessions: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            subscribed: AtomicU64::new(0),
            connect_errors: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            unsent_backlog: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
        }
    }

    fn shard(&self, user: u32) -> std::sync::MutexGuard<'_, Interval> {
        let shard = &self.shards[user as usize % self.shards.len()];
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A user's first session is up.
    pub fn session_opened(&self) {
        self.session_up();
        self.connected.fetch_add(1, Relaxed);
    }

    /// A user is back after a break: a session again, but not another user connected
    /// (those are counted in `reconnects`).
    pub fn session_reopened(&self) {
        self.session_up();
        self.reconnects.fetch_add(1, Relaxed);
    }

    fn session_up(&self) {
        let now = self.sessions.fetch_add(1, Relaxed) + 1;
        self.peak_sessions.fetch_max(now, Relaxed);
    }

    pub fn session_closed(&self) {
        self.sessions.fetch_sub(1, Relaxed);
    }

    /// A send; `lag_us` is how late it left against its intended time (open model).
    pub fn sent(&self, user: u32, measured: bool, lag_us: Option<u64>) {
        let mut s = self.shard(user);
        s.sent += 1;
        s.measured_sent += measured as u64;
        if let (true, Some(lag)) = (measured, lag_us) {
            record(&mut s.send_lag, lag);
        }
    }

    pub fn delivered(&self, user: u32, corrected_us: u64, raw_us: u64, measured: bool) {
        let mut s = self.shard(user);
        s.delivered += 1;
        record(&mut s.corrected_all, corrected_us);
        if measured {
            s.measured_delivered += 1;
            record(&mut s.corrected, corrected_us);
            record(&mut s.raw, raw_us);
        }
    }

    /// A delivery whose latency cannot be read (its sender's clock is another host's):
    /// counted, not timed.
    pub fn delivered_untimed(&self, user: u32) {
        let mut s = self.shard(user);
        s.delivered += 1;
        s.untimed += 1;
    }

    /// Adds an interval measured elsewhere (a shard of the run) to this recorder's
    /// current one.
    pub fn add_interval(&self, other: &Interval) {
        self.shards[0]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(other);
    }

    pub fn receipt(&self, user: u32, us: u64, measured: bool) {
        let mut s = self.shard(user);
        s.receipts += 1;
        if measured {
            record(&mut s.receipt, us);
        }
    }

    pub fn error(&self, user: u32) {
        self.errors.fetch_add(1, Relaxed);
        self.shard(user).errors += 1;
    }

    /// Merges every shard's interval into `into` and resets the shards.
    pub fn drain(&self, into: &mut Interval) {
        into.reset();
        for shard in &self.shards {
            let mut s = shard.lock().unwrap_or_else(|e| e.into_inner());
            into.add(&s);
            s.reset();
        }
    }

    pub fn empty_interval() -> Interval {
        Interval::new()
    }
}

/// Run totals, built up by the aggregator from the drained intervals.
pub type Totals = Interval;

impl Default for Interval {
    fn default() -> Self {
        Interval::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reconnection_is_a_session_not_another_user() {
        let r = Recorder::new(2);
        r.session_opened();
        r.session_opened();
        r.session_closed();
        r.session_reopened();
        assert_eq!(r.connected.load(Relaxed), 2, "two users connected");
        assert_eq!(r.reconnects.load(Relaxed), 1);
        assert_eq!(r.sessions.load(Relaxed), 2);
        assert_eq!(r.peak_sessions.load(Relaxed), 2);
    }

    #[test]
    fn shards_merge_exactly() {
        let r = Recorder::new(4);
        for user in 0..100u32 {
            r.sent(user, user % 2 == 0, Some(10));
            r.delivered(user, 1000 + user as u64, 900, user % 2 == 0);
        }
        let mut i = Recorder::empty_interval();
        r.drain(&mut i);
        assert_eq!(i.sent, 100);
        assert_eq!(i.measured_sent, 50);
        assert_eq!(i.corrected_all.len(), 100);
        assert_eq!(i.corrected.len(), 50);
        assert_eq!(i.corrected_all.max(), 1099);
        assert_eq!(i.send_lag.len(), 50);
        let mut again = Recorder::empty_interval();
        r.drain(&mut again);
        assert_eq!(again.sent, 0, "drain resets the shards");
        let mut t = Totals::default();
        t.add(&i);
        t.add(&again);
        assert_eq!(t.corrected.len(), 50);
    }
}
