//! Per-second p99 of groups of deliveries, kept in runs with faults to say whether a
//! fault reached the users it should not have: the deliveries between users of one
//! server (sender and recipient both on it), and the deliveries of the rooms on one
//! Kafka partition.
//!
//! Recording is one relaxed atomic add per group into log-linear buckets (16 per power
//! of two, so a bucket is at most 6.25 % wide and a p99 read from them is within that of
//! the exact one). Once a second the aggregator closes the second: each group's p99 is
//! read from its buckets, which start again from zero. The per-second figures are a
//! capped list ([`MAX_POINT_BYTES`]); past it, no more are kept and the report says so.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Buckets per power of two.
const SUB: usize = 16;
const SUB_BITS: u32 = 4;
/// Enough powers of two for 2^36 µs (19 hours); larger values go to the last bucket.
const BUCKETS: usize = (36 - SUB_BITS as usize + 1) * SUB;
/// Memory allowed for the per-second p99s.
pub const MAX_POINT_BYTES: usize = 16 << 20;

fn index(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros();
    let sub = ((us >> (e - SUB_BITS)) as usize) & (SUB - 1);
    (((e - SUB_BITS + 1) as usize) * SUB + sub).min(BUCKETS - 1)
}

/// The largest value that lands in bucket `i`.
fn upper(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let e = (i / SUB) as u32 + SUB_BITS - 1;
    let sub = (i % SUB) as u64;
    ((SUB as u64 + sub + 1) << (e - SUB_BITS)) - 1
}

struct Buckets(Vec<AtomicU64>);

impl Buckets {
    fn new() -> Buckets {
        Buckets((0..BUCKETS).map(|_| AtomicU64::new(0)).collect())
    }

    /// The p99 of what was recorded since the last call (`None` if nothing), and a reset.
    fn take_p99(&self) -> Option<u64> {
        let counts: Vec<u64> = self.0.iter().map(|b| b.swap(0, Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(i));
            }
        }
        Some(upper(BUCKETS - 1))
    }
}

/// One closed second: when it closed and each group's p99 (µs; 0 when the group had
/// no delivery that second).
pub type Point = (u64, Vec<u64>);

#[derive(Default)]
struct Points {
    kept: Vec<Point>,
    bytes: usize,
    full: bool,
}

/// Latency groups: `servers` groups of same-server pairs, then one per partition.
pub struct GroupLatency {
    servers: usize,
    groups: Vec<Buckets>,
    points: Mutex<Points>,
}

impl GroupLatency {
    pub fn new(servers: usize, partitions: usize) -> GroupLatency {
        GroupLatency {
            servers,
            groups: (0..servers + partitions).map(|_| Buckets::new()).collect(),
            points: Mutex::new(Points::default()),
        }
    }

    /// The group of deliveries between users of server `s`.
    pub fn server_group(&self, s: usize) -> Option<usize> {
        (s < self.servers).then_some(s)
    }

    /// The group of deliveries of the rooms on partition `p`.
    pub fn partition_group(&self, p: u32) -> Option<usize> {
        let g = self.servers + p as usize;
        (g < self.groups.len()).then_some(g)
    }

    /// A delivery with corrected latency `us` to a user of server `home` from a sender
    /// of server `sender_home`, of a room on `partition`.
    pub fn record(&self, home: usize, sender_home: usize, partition: Option<u32>, us: u64) {
        if home == sender_home {
            if let Some(g) = self.server_group(home) {
                self.groups[g].0[index(us)].fetch_add(1, Relaxed);
            }
        }
        if let Some(g) = partition.and_then(|p| self.partition_group(p)) {
            self.groups[g].0[index(us)].fetch_add(1, Relaxed);
        }
    }

    /// Closes the second ending at `t_us` (called once a second).
    pub fn close_second(&self, t_us: u64) {
        let p99s: Vec<u64> = self
            .groups
            .iter()
            .map(|b| b.take_p99().unwrap_or(0))
            .collect();
        let mut p = self.points.lock().unwrap_or_else(|e| e.into_inner());
        if p.full {
            return;
        }
        let bytes = 16 + p99s.len() * 8;
        if p.bytes + bytes > MAX_POINT_BYTES {
            p.full = true;
            return;
        }
        p.bytes += bytes;
        p.kept.push((t_us, p99s));
    }

    /// Whether per-second figures stopped being kept (memory cap).
    pub fn full(&self) -> bool {
        self.points.lock().unwrap_or_else(|e| e.into_inner()).full
    }

    /// Per closed second ending in `(from_us, until_us]`: the worst p99 among `groups`
    /// (µs), for seconds in which any of them had deliveries.
    pub fn worst(&self, groups: &[usize], from_us: u64, until_us: u64) -> Vec<(u64, u64)> {
        let p = self.points.lock().unwrap_or_else(|e| e.into_inner());
        p.kept
            .iter()
            .filter(|(t, _)| *t > from_us && *t <= until_us)
            .filter_map(|(t, v)| {
                let worst = groups.iter().filter_map(|g| v.get(*g)).copied().max()?;
                (worst > 0).then_some((*t, worst))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_values_within_a_sixteenth() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 30, 1 << 35, u64::MAX / 2]) {
            let i = index(v);
            assert!(i >= last || v == 0, "index falls at {v}");
            last = i;
            assert!(
                upper(i) >= v.min(upper(BUCKETS - 1)),
                "{v} above its bucket"
            );
            if v >= 16 && i < BUCKETS - 1 {
                let width = upper(i) - if i == 0 { 0 } else { upper(i - 1) };
                assert!(width * 16 <= v + width, "bucket of {v} is {width} wide");
            }
        }
        assert_eq!(index(15), 15);
        assert_eq!(upper(index(16)), 16);
        assert_eq!(upper(index(1_000)), 1_023);
    }

    #[test]
    fn p99_per_group_per_second() {
        let l = GroupLatency::new(2, 3);
        // Server 0's own pairs: 99 fast and 1 slow delivery; a cross-server delivery
        // counts for the partition only.
        for _ in 0..99 {
            l.record(0, 0, Some(1), 10_000);
        }
        l.record(0, 0, Some(1), 500_000);
        l.record(1, 0, Some(2), 3_000_000);
        l.close_second(1_000_000);
        l.record(1, 1, None, 20_000);
        l.close_second(2_000_000);
        let s0 = l.server_group(0).unwrap();
        let s1 = l.server_group(1).unwrap();
        let p1 = l.partition_group(1).unwrap();
        let p2 = l.partition_group(2).unwrap();
        let first = l.worst(&[s0], 0, 1_000_000);
        assert_eq!(first.len(), 1);
        assert!((10_000..=10_700).contains(&first[0].1), "{first:?}");
        assert!(
            l.worst(&[s1], 0, 1_000_000).is_empty(),
            "cross pairs left out"
        );
        assert!(l.worst(&[p2], 0, 1_000_000)[0].1 >= 3_000_000);
        assert!(
            l.worst(&[p1], 1_000_000, 2_000_000).is_empty(),
            "reset per second"
        );
        let s1_then = l.worst(&[s0, s1], 1_000_000, 2_000_000);
        assert_eq!(s1_then.len(), 1);
        assert!((20_000..=21_300).contains(&s1_then[0].1));
        assert_eq!(l.partition_group(3), None);
    }
}
