//! Who is in which room: the concrete rooms and users a scenario expands to.
//!
//! The mapping is a pure function of the scenario, so every run (and every shard of a
//! future distributed run) of the same file with the same `seed` sees the same rooms.
//! Users are put in a seeded random order once; then each room, group by group in file
//! order, takes its `members` from that order round-robin, continuing where the previous
//! room stopped and wrapping around. So load is spread evenly, a room's members are
//! distinct users (`members <= users.count`), and when the groups hold more memberships
//! than there are users, users belong to several rooms. A room's senders are its first
//! `senders` members.

use std::time::Duration;

use super::model::{LoadModel, RatePer, Scenario};

/// The expanded scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Rooms in group order, then by index within the group; a room's index is its
    /// position here.
    pub rooms: Vec<RoomPlan>,
    /// Users by index: `users[i].index == i`.
    pub users: Vec<UserPlan>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoomPlan {
    /// `<group name>-<index in group>`, e.g. `pairs-0`.
    pub id: String,
    /// The `[[rooms]]` group name.
    pub group: String,
    /// User indices, distinct, in the order they were dealt.
    pub members: Vec<u32>,
    /// The first `senders` of `members`.
    pub senders: Vec<u32>,
    /// Open model: messages per second of each sender in this room; 0 for closed.
    pub rate_per_sender: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UserPlan {
    pub index: u32,
    /// `u<index>`.
    pub id: String,
    /// Indices of the rooms it subscribes to, ascending.
    pub rooms: Vec<u32>,
    /// Indices of the rooms it sends to, ascending; a subset of `rooms`.
    pub sends_to: Vec<u32>,
}

impl Plan {
    /// Builds the plan for a valid scenario (see the module docs for the mapping).
    pub fn new(s: &Scenario) -> Plan {
        let n = s.users.count as usize;
        let order = shuffled(n, s.seed);
        let mut users: Vec<UserPlan> = (0..s.users.count)
            .map(|i| UserPlan {
                index: i,
                id: user_id(i),
                rooms: Vec::new(),
                sends_to: Vec::new(),
            })
            .collect();
        let mut rooms = Vec::new();
        let mut cursor = 0usize;
        for g in &s.rooms {
            let senders = g.senders.min(g.members) as usize;
            let rate_per_sender = match &s.load.model {
                LoadModel::Open {
                    rate,
                    per: RatePer::Room,
                    ..
                } => rate / senders.max(1) as f64,
                LoadModel::Open {
                    rate,
                    per: RatePer::Sender,
                    ..
                } => *rate,
                LoadModel::Closed { .. } => 0.0,
            };
            for index in 0..g.count {
                let room = rooms.len() as u32;
                let members: Vec<u32> = (0..g.members as usize)
                    .map(|k| order[(cursor + k) % n])
                    .collect();
                cursor = (cursor + g.members as usize) % n;
                for (k, &u) in members.iter().enumerate() {
                    let user = &mut users[u as usize];
                    user.rooms.push(room);
                    if k < senders {
                        user.sends_to.push(room);
                    }
                }
                rooms.push(RoomPlan {
                    id: g.room_id(index),
                    group: g.name.clone(),
                    senders: members[..senders].to_vec(),
                    members,
                    rate_per_sender,
                });
            }
        }
        Plan { rooms, users }
    }

    /// Open model: messages all senders send in `duration` (sum of rate times duration).
    pub fn expected_open_messages(&self, duration: Duration) -> f64 {
        let secs = duration.as_secs_f64();
        self.rooms
            .iter()
            .map(|r| r.senders.len() as f64 * r.rate_per_sender * secs)
            .sum()
    }

    /// Open model: deliveries expected in `duration`, every message reaching every member
    /// of its room (its sender included, who is subscribed too).
    pub fn expected_open_deliveries(&self, duration: Duration) -> f64 {
        let secs = duration.as_secs_f64();
        self.rooms
            .iter()
            .map(|r| r.senders.len() as f64 * r.rate_per_sender * secs * r.members.len() as f64)
            .sum()
    }

    /// Total room memberships (subscriptions).
    pub fn memberships(&self) -> usize {
        self.rooms.iter().map(|r| r.members.len()).sum()
    }
}

/// `u<index>`.
pub fn user_id(index: u32) -> String {
    format!("u{index}")
}

/// `0..n` in an order fixed by `seed` (Fisher-Yates over SplitMix64, which is stable
/// across library versions, unlike `rand`'s `StdRng`).
fn shuffled(n: usize, seed: u64) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..n).rev() {
        let j = ((next() as u128 * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_permutation_and_depends_on_seed() {
        let a = shuffled(1000, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u32>>());
        assert_eq!(a, shuffled(1000, 1));
        assert_ne!(a, shuffled(1000, 2));
        assert!(shuffled(0, 7).is_empty());
        assert_eq!(shuffled(1, 7), vec![0]);
    }
}
