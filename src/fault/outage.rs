//! What the users went through while faults were on, recorded as the run goes (only when
//! the scenario has faults): stretches without deliveries, broken sessions and their
//! reconnection, sends that failed or waited long for their receipt, and a per-second
//! record of the sequence counters so lost messages can be placed in time.
//!
//! Everything here is bounded: gaps and session events are capped lists (overflow is
//! counted), per-second figures are fixed arrays sized from the scenario's length, and
//! sequence snapshots stop being kept past [`MAX_SNAPSHOT_BYTES`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::latency::GroupLatency;

/// A pause in deliveries shorter than this is not a gap worth recording.
pub const MIN_GAP_US: u64 = 200_000;
/// The group's last delivery is only moved forward by at least this much.
const LAST_RESOLUTION_US: u64 = 1_000;
/// Gaps kept per group; more are counted in `gaps_overflow`.
pub const MAX_GAPS: usize = 100_000;
/// Session breaks kept; more are counted in `events_overflow`.
pub const MAX_EVENTS: usize = 1_000_000;
/// Memory allowed for the per-second sequence snapshots.
pub const MAX_SNAPSHOT_BYTES: usize = 64 << 20;
/// Longest run the per-second arrays cover (a week and a day).
const MAX_SECONDS: usize = 8 * 86_400;

/// Deliveries of one group of users: the last one, and every pause of
/// [`MIN_GAP_US`] or more between two of them.
struct Group {
    last_us: AtomicU64,
    gaps: Mutex<Vec<(u64, u64)>>,
}

/// One broken session: when it broke, and when its user was subscribed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Break {
    pub user: u32,
    pub down_us: u64,
    pub up_us: Option<u64>,
}

/// The run's fault-time record; see the module docs.
pub struct Tracking {
    /// One group per server URL (users by their first server, `index % servers`), one
    /// per Kafka partition (deliveries of the rooms on it), then one for everybody.
    groups: Vec<Group>,
    servers: usize,
    pub gaps_overflow: AtomicU64,
    breaks: Mutex<Vec<Break>>,
    pub events_overflow: AtomicU64,
    /// Per second of the run (by send time): longest receipt wait, receipts that never
    /// came, sends that could not be written.
    receipt_max_us: Vec<AtomicU64>,
    receipt_timeouts: Vec<AtomicU64>,
    send_failures: Vec<AtomicU64>,
    pub missed_while_disconnected: AtomicU64,
    pub unsent_while_disconnected: AtomicU64,
    snapshots: Mutex<Snapshots>,
    /// Per-second p99 of same-server pairs and of each partition's rooms.
    pub latency: GroupLatency,
}

#[derive(Default)]
struct Snapshots {
    taken: Vec<(u64, Vec<u64>)>,
    bytes: usize,
    /// Set once the memory cap was reached: no snapshot is kept after that.
    dropped: bool,
}

impl Tracking {
    /// `servers` + `partitions` groups plus one; per-second arrays for `seconds` of run.
    pub fn new(servers: usize, partitions: usize, seconds: u64) -> Tracking {
        let n = (seconds as usize).clamp(1, MAX_SECONDS);
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Tracking {
            servers,
            groups: (0..=servers + partitions)
                .map(|_| Group {
                    last_us: AtomicU64::new(0),
                    gaps: Mutex::new(Vec::new()),
                })
                .collect(),
            gaps_overflow: AtomicU64::new(0),
            breaks: Mutex::new(Vec::new()),
            events_overflow: AtomicU64::new(0),
            receipt_max_us: zeros(n),
            receipt_timeouts: zeros(n),
            send_failures: zeros(n),
            missed_while_disconnected: AtomicU64::new(0),
            unsent_while_disconnected: AtomicU64::new(0),
            snapshots: Mutex::new(Snapshots::default()),
            latency: GroupLatency::new(servers, partitions),
        }
    }

    /// Number of server groups.
    pub fn servers(&self) -> usize {
        self.servers
    }

    /// The group of everybody.
    pub fn everybody(&self) -> usize {
        self.groups.len() - 1
    }

    /// The group of partition `p` (`None` if the run does not know partitions).
    pub fn partition_group(&self, p: u32) -> Option<usize> {
        let g = self.servers + p as usize;
        (g < self.everybody()).then_some(g)
    }

    /// Deliveries start counting from `us` (the start of sending): a pause before the
    /// first delivery is measured from there.
    pub fn start(&self, us: u64) {
        for g in &self.groups {
            g.last_us.fetch_max(us, Relaxed);
        }
    }

    /// A delivery to a user of server group `home`, of a room on `partition`, at `now_us`.
    pub fn delivered(&self, home: usize, partition: Option<u32>, now_us: u64) {
        if home < self.servers {
            self.delivered_to(home, now_us);
        }
        if let Some(g) = partition.and_then(|p| self.partition_group(p)) {
            self.delivered_to(g, now_us);
        }
        self.delivered_to(self.everybody(), now_us);
    }

    fn delivered_to(&self, group: usize, now_us: u64) {
        let g = &self.groups[group];
        // Most deliveries land within a millisecond of the group's last one: a read
        // then, not a write every user's task contends for (gaps are 200 ms or more).
        if now_us <= g.last_us.load(Relaxed) + LAST_RESOLUTION_US {
            return;
        }
        let prev = g.last_us.fetch_max(now_us, Relaxed);
        if prev > 0 && now_us >= prev + MIN_GAP_US {
            let mut gaps = g.gaps.lock().unwrap_or_else(|e| e.into_inner());
            if gaps.len() < MAX_GAPS {
                gaps.push((prev, now_us));
            } else {
                self.gaps_overflow.fetch_add(1, Relaxed);
            }
        }
    }

    /// Every recorded pause of `group`, sorted by start,
    /// with the pause after the last delivery up to `end_us` added (flagged `false`:
    /// it never ended). Pairs are (start, end, ended).
    pub fn gaps(&self, group: usize, end_us: u64) -> Vec<(u64, u64, bool)> {
        let g = &self.groups[group];
        let mut out: Vec<(u64, u64, bool)> = g
            .gaps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|&(a, b)| (a, b, true))
            .collect();
        let last = g.last_us.load(Relaxed);
        if last > 0 && end_us >= last + MIN_GAP_US {
            out.push((last, end_us, false));
        }
        out.sort_unstable();
        out
    }

    /// A session broke at `down_us`; returns its slot for [`Tracking::session_back`].
    pub fn session_broke(&self, user: u32, down_us: u64) -> Option<usize> {
        let mut breaks = self.breaks.lock().unwrap_or_else(|e| e.into_inner());
        if breaks.len() >= MAX_EVENTS {
            self.events_overflow.fetch_add(1, Relaxed);
            return None;
        }
        breaks.push(Break {
            user,
            down_us,
            up_us: None,
        });
        Some(breaks.len() - 1)
    }

    /// The user of break `slot` is subscribed again at `up_us`.
    pub fn session_back(&self, slot: Option<usize>, up_us: u64) {
        let Some(slot) = slot else { return };
        let mut breaks = self.breaks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = breaks.get_mut(slot) {
            b.up_us = Some(up_us);
        }
    }

    pub fn breaks(&self) -> Vec<Break> {
        self.breaks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn second(&self, us: u64) -> usize {
        ((us / 1_000_000) as usize).min(self.send_failures.len() - 1)
    }

    /// A receipt for a send made at `sent_us` came after `wait_us`.
    pub fn receipt(&self, sent_us: u64, wait_us: u64) {
        self.receipt_max_us[self.second(sent_us)].fetch_max(wait_us, Relaxed);
    }

    /// The receipt of a send made at `sent_us` will never come.
    pub fn receipt_lost(&self, sent_us: u64) {
        self.receipt_timeouts[self.second(sent_us)].fetch_add(1, Relaxed);
    }

    /// A send due at `us` could not be written.
    pub fn send_failed(&self, us: u64) {
        self.send_failures[self.second(us)].fetch_add(1, Relaxed);
    }

    /// Sums over the seconds from the one holding `from_us` up to, not including, the
    /// one holding `until_us` (at least one second): (send failures, receipt timeouts,
    /// longest receipt wait in µs or 0). The second in which a window ends is where the
    /// next one starts, and belongs to that one only.
    pub fn window(&self, from_us: u64, until_us: u64) -> (u64, u64, u64) {
        let n = self.send_failures.len();
        let a = self.second(from_us);
        let b = ((until_us / 1_000_000) as usize).clamp(a + 1, n);
        let mut out = (0, 0, 0);
        for s in a..b {
            out.0 += self.send_failures[s].load(Relaxed);
            out.1 += self.receipt_timeouts[s].load(Relaxed);
            out.2 = out.2.max(self.receipt_max_us[s].load(Relaxed));
        }
        out
    }

    /// Keeps the run's sequence counters as they were at `t_us` (called once a second).
    pub fn snapshot(&self, t_us: u64, counters: Vec<u64>) {
        let mut s = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if s.dropped {
            return;
        }
        let bytes = counters.len() * 8 + 16;
        if s.bytes + bytes > MAX_SNAPSHOT_BYTES {
            s.dropped = true;
            s.taken = Vec::new();
            return;
        }
        s.bytes += bytes;
        s.taken.push((t_us, counters));
    }

    /// The counters of the last snapshot taken at or before `t_us` and of the first taken
    /// at or after it; `None` when snapshots were dropped or none is that early/late.
    pub fn counters_before(&self, t_us: u64) -> Option<Vec<u64>> {
        let s = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if s.dropped {
            return None;
        }
        s.taken
            .iter()
            .rev()
            .find(|(t, _)| *t <= t_us)
            .map(|(_, c)| c.clone())
    }

    pub fn counters_after(&self, t_us: u64) -> Option<Vec<u64>> {
        let s = self.snapshots.lock().unwrap_or_else(|e| e.into_inner());
        if s.dropped {
            return None;
        }
        s.taken
            .iter()
            .find(|(t, _)| *t >= t_us)
            .map(|(_, c)| c.clone())
    }

    /// Whether snapshots had to be given up (memory cap).
    pub fn snapshots_dropped(&self) -> bool {
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_recorded_per_group_and_for_everybody() {
        let t = Tracking::new(2, 1, 60);
        t.start(1_000_000);
        for ms in (1_000..2_000).step_by(10) {
            t.delivered(0, Some(0), ms * 1000);
            t.delivered(1, None, ms * 1000 + 1);
        }
        // Group 1 goes quiet for 3 s; group 0 carries on.
        for ms in (2_000..6_000).step_by(10) {
            t.delivered(0, None, ms * 1000);
        }
        t.delivered(1, None, 5_000_000);
        let g1 = t.gaps(1, 6_000_000);
        assert_eq!(g1.len(), 2, "{g1:?}");
        assert_eq!((g1[0].0, g1[0].1), (1_990_001, 5_000_000));
        assert!(g1[0].2);
        assert!(!g1[1].2, "the pause after the last delivery is open");
        assert!(
            t.gaps(t.everybody(), 6_000_000).is_empty(),
            "everybody kept getting messages"
        );
        let p0 = t.partition_group(0).unwrap();
        assert_eq!(t.gaps(p0, 6_000_000), vec![(1_990_000, 6_000_000, false)]);
        assert_eq!(t.partition_group(1), None);
    }

    #[test]
    fn windows_sum_per_second_figures() {
        let t = Tracking::new(1, 0, 10);
        t.send_failed(2_500_000);
        t.send_failed(3_100_000);
        t.receipt_lost(3_200_000);
        t.receipt(2_000_000, 4_000_000);
        t.receipt(7_000_000, 9_000_000);
        assert_eq!(t.window(2_000_000, 4_000_000), (2, 1, 4_000_000));
        // Back to back: the second holding the boundary counts for the later window only.
        assert_eq!(t.window(2_000_000, 3_100_000), (1, 0, 4_000_000));
        assert_eq!(t.window(3_100_000, 5_000_000), (1, 1, 0));
        assert_eq!(
            t.window(2_500_000, 2_600_000),
            (1, 0, 4_000_000),
            "one second at least"
        );
        assert_eq!(
            t.window(0, 99_000_000),
            (2, 1, 9_000_000),
            "past the end clamps"
        );
    }

    #[test]
    fn snapshots_answer_before_and_after() {
        let t = Tracking::new(1, 0, 10);
        t.snapshot(1_000_000, vec![1, 2]);
        t.snapshot(2_000_000, vec![3, 4]);
        assert_eq!(t.counters_before(1_500_000), Some(vec![1, 2]));
        assert_eq!(t.counters_after(1_500_000), Some(vec![3, 4]));
        assert_eq!(t.counters_after(2_500_000), None);
        let b = t.session_broke(7, 10);
        t.session_back(b, 20);
        assert_eq!(
            t.breaks(),
            vec![Break {
                user: 7,
                down_us: 10,
                up_us: Some(20)
            }]
        );
    }
}
