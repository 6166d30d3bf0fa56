//! Accounting for a fan-out consumer group shared by every server instance (the Spring
//! peer's `--shared-fanout-group`): each instance then consumes only the partitions the
//! group gave it, so a subscriber can only get the messages of rooms whose partition
//! its own instance holds. At the end of a run this reads each instance's assignment
//! from its `/metrics`, places every room on its partition as Kafka's default
//! partitioner does for a keyed record (murmur2 of the room id), and splits every
//! membership's expected deliveries into those the subscriber's instance could fan out
//! and those it never could: the loss the misconfiguration predicts, exactly, against
//! the loss measured.
use std::collections::BTreeMap;
use std::time::Duration;

use crate::report::SharedGroupLoss;
use crate::stack::{metrics_page, StackInfo};

/// Kafka's `Utils.murmur2`, the hash its default partitioner applies to record keys.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives a record keyed `key`.
pub fn partition_for_key(key: &str, partitions: u32) -> u32 {
    ((murmur2(key.as_bytes()) & 0x7fff_ffff) as u32) % partitions.max(1)
}

/// Each instance's fan-out partitions, as its `/metrics` lists them
/// (`stompede_server_assigned_partition{instance,topic,partition} 1`).
pub async fn read_assignment(info: &StackInfo) -> Result<BTreeMap<String, Vec<u32>>, String> {
    let mut out = BTreeMap::new();
    for s in &info.servers {
        let page = metrics_page::fetch(&s.metrics_url, Duration::from_secs(5))
            .await
            .map_err(|e| format!("server {}: {e}", s.instance_id))?;
        let mut parts: Vec<u32> =
            metrics_page::samples(&page, "stompede_server_assigned_partition")
                .iter()
                .filter(|set| metrics_page::label(set, "topic") == Some(info.topic.as_str()))
                .filter_map(|set| metrics_page::label(set, "partition")?.parse().ok())
                .collect();
        parts.sort_unstable();
        out.insert(s.instance_id.clone(), parts);
    }
    Ok(out)
}

/// Splits memberships into those the subscriber's instance can fan out and the rest.
pub struct Split {
    /// Room index → whether instance `i` holds its partition, per instance.
    room_on: Vec<Vec<bool>>,
    instance_ids: Vec<String>,
    figures: SharedGroupLoss,
    recipients: std::collections::BTreeSet<u32>,
}

impl Split {
    /// `rooms` are the room ids by index; users connect round-robin over the instances
    /// (user `i` to instance `i % instances`, in the stack's order).
    pub fn new(
        group: &str,
        instance_ids: &[String],
        assignment: BTreeMap<String, Vec<u32>>,
        rooms: &[String],
        partitions: u32,
    ) -> Split {
        let room_on = rooms
            .iter()
            .map(|room| {
                let p = partition_for_key(room, partitions);
                instance_ids
                    .iter()
                    .map(|id| assignment.get(id).is_some_and(|ps| ps.contains(&p)))
                    .collect()
            })
            .collect();
        Split {
            room_on,
            instance_ids: instance_ids.to_vec(),
            figures: SharedGroupLoss {
                group: group.to_string(),
                assignment,
                unreachable: 0,
                unreachable_lost: 0,
                recipients: 0,
                unreachable_by_instance: instance_ids.iter().map(|id| (id.clone(), 0)).collect(),
                other_lost: 0,
            },
            recipients: Default::default(),
        }
    }

    /// Counts one settled membership of `user` in `room`.
    pub fn add(&mut self, user: u32, room: u32, expected: u64, delivered: u64) {
        let lost = expected.saturating_sub(delivered);
        let instance = user as usize % self.instance_ids.len().max(1);
        let reachable = self
            .room_on
            .get(room as usize)
            .and_then(|on| on.get(instance))
            .copied()
            .unwrap_or(true);
        if reachable {
            self.figures.other_lost += lost;
        } else {
            self.figures.unreachable += expected;
            self.figures.unreachable_lost += lost;
            if let Some(id) = self.instance_ids.get(instance) {
                *self
                    .figures
                    .unreachable_by_instance
                    .entry(id.clone())
                    .or_default() += expected;
            }
            if expected > 0 {
                self.recipients.insert(user);
            }
        }
    }

    pub fn finish(mut self) -> SharedGroupLoss {
        self.figures.recipients = self.recipients.len() as u64;
        self.figures
    }
}

/// The console and report note for these figures.
pub fn note(f: &SharedGroupLoss) -> String {
    let held: Vec<String> = f
        .assignment
        .iter()
        .map(|(id, ps)| {
            let ps: Vec<String> = ps.iter().map(u32::to_string).collect();
            format!(
                "{id} {}",
                if ps.is_empty() {
                    "none".to_string()
                } else {
                    ps.join(",")
                }
            )
        })
        .collect();
    let by: Vec<String> = f
        .unreachable_by_instance
        .iter()
        .map(|(id, n)| format!("on {id} {n}"))
        .collect();
    format!(
        "fan-out group {} is shared by the {} server instances (partitions held: {}): a subscriber only gets the rooms whose partition its own instance holds. \
         Predicted never delivered: {} deliveries to {} recipients ({}); lost among them: {}; lost elsewhere: {}",
        f.group,
        f.assignment.len(),
        held.join("; "),
        f.unreachable,
        f.recipients,
        by.join(", "),
        f.unreachable_lost,
        f.other_lost
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_is_kafkas() {
        // Kafka's own test vectors for Utils.murmur2.
        for (text, want) in [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(text.as_bytes()), want, "{text}");
        }
    }

    #[test]
    fn memberships_split_by_the_partition_their_instance_holds() {
        let rooms: Vec<String> = (0..8).map(|i| format!("group-{i}")).collect();
        let ids = vec!["s1".to_string(), "s2".to_string()];
        let mut assignment = BTreeMap::new();
        assignment.insert("s1".to_string(), vec![0, 2]);
        assignment.insert("s2".to_string(), vec![1]);
        let mut split = Split::new("g", &ids, assignment, &rooms, 3);
        let mut want_unreachable = 0;
        for (r, room) in rooms.iter().enumerate() {
            let p = partition_for_key(room, 3);
            // user 0 is on s1, user 1 on s2
            for user in 0..2u32 {
                let on_s1 = user == 0;
                let held = if on_s1 { p != 1 } else { p == 1 };
                let delivered = if held { 10 } else { 0 };
                if !held {
                    want_unreachable += 10;
                }
                split.add(user, r as u32, 10, delivered);
            }
        }
        let f = split.finish();
        assert_eq!(f.unreachable, want_unreachable);
        assert_eq!(f.unreachable_lost, want_unreachable);
        assert_eq!(f.other_lost, 0);
        assert_eq!(
            f.unreachable_by_instance.values().sum::<u64>(),
            want_unreachable
        );
        assert!(note(&f).contains("s1 0,2; s2 1"));
    }
}
