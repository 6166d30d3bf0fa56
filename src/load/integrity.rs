//! Exact delivery accounting: who was expected to get which message, and what arrived.
//!
//! Every (room, sender) pair has a slot whose counter is the next sequence number; a
//! sender takes its number *before* writing the SEND. A recipient's membership of a room
//! is a list of intervals, each holding, per sender, the sequence range `[from, until)`
//! it is expected to receive: `from` is read from the slot once its subscription is in
//! place, `until` when it decides to leave (it then keeps reading until it has those
//! messages, or the grace period ends, before it unsubscribes). Arrivals go into a
//! bitset per sender, so a duplicate or a message out of order is seen on arrival and
//! the final count of lost messages is exact.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Sequence counters of every (room, sender) pair.
pub struct Slots {
    counters: Vec<AtomicU64>,
    /// Numbers taken for a SEND that never went on the wire (the session broke).
    voided: Mutex<BTreeSet<(usize, u64)>>,
    /// room index → (sender user index → slot).
    index: Vec<HashMap<u32, usize>>,
}

impl Slots {
    /// `room_senders[r]` lists the senders of room `r`.
    pub fn new(room_senders: &[Vec<u32>]) -> Self {
        let mut index = Vec::with_capacity(room_senders.len());
        let mut n = 0;
        for senders in room_senders {
            let map: HashMap<u32, usize> = senders
                .iter()
                .enumerate()
                .map(|(i, s)| (*s, n + i))
                .collect();
            n += senders.len();
            index.push(map);
        }
        Slots {
            counters: (0..n).map(|_| AtomicU64::new(0)).collect(),
            voided: Mutex::new(BTreeSet::new()),
            index,
        }
    }

    pub fn slot(&self, room: u32, sender: u32) -> Option<usize> {
        self.index.get(room as usize)?.get(&sender).copied()
    }

    /// Takes the next sequence number of a slot.
    pub fn next_seq(&self, slot: usize) -> u64 {
        self.counters[slot].fetch_add(1, Relaxed)
    }

    /// How many messages the slot has numbered so far.
    pub fn issued(&self, slot: usize) -> u64 {
        self.counters[slot].load(Relaxed)
    }

    /// Per sender of `room`: messages numbered so far.
    pub fn snapshot(&self, room: u32) -> HashMap<u32, u64> {
        self.index
            .get(room as usize)
            .map(|m| {
                m.iter()
                    .map(|(sender, slot)| (*sender, self.issued(*slot)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Marks a number as never sent: no recipient expects it.
    pub fn void(&self, slot: usize, seq: u64) {
        self.voided
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((slot, seq));
    }

    /// Voided numbers of `slot` in `[from, until)`.
    pub fn voided_in(&self, slot: usize, from: u64, until: u64) -> Vec<u64> {
        let voided = self.voided.lock().unwrap_or_else(|e| e.into_inner());
        voided
            .range((slot, from)..(slot, until))
            .map(|(_, seq)| *seq)
            .collect()
    }

    /// Total messages numbered across all slots.
    pub fn total(&self) -> u64 {
        self.counters.iter().map(|c| c.load(Relaxed)).sum()
    }
}

/// A growable set of sequence numbers.
#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    words: Vec<u64>,
    max_seen: Option<u64>,
}

impl SeqSet {
    /// Records `seq`; returns (duplicate, out_of_order).
    pub fn insert(&mut self, seq: u64) -> (bool, bool) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let duplicate = self.words[word] & (1 << bit) != 0;
        self.words[word] |= 1 << bit;
        let out_of_order = !duplicate && self.max_seen.is_some_and(|m| seq < m);
        self.max_seen = Some(self.max_seen.map_or(seq, |m| m.max(seq)));
        (duplicate, out_of_order)
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.words
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// Members in `[from, until)`.
    pub fn count_range(&self, from: u64, until: u64) -> u64 {
        (from..until).filter(|s| self.contains(*s)).count() as u64
    }
}

/// One user's membership of one room over the run.
#[derive(Debug, Default, Clone)]
pub struct Membership {
    /// Closed intervals: per sender, expected `[from, until)`.
    pub closed: Vec<HashMap<u32, (u64, u64)>>,
    /// The open interval's start per sender, while subscribed.
    pub open: Option<HashMap<u32, u64>>,
    pub received: HashMap<u32, SeqSet>,
    pub arrivals: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
}

impl Membership {
    /// Subscription in place: expect every message numbered from now on.
    pub fn join(&mut self, snapshot: HashMap<u32, u64>) {
        self.open = Some(snapshot);
    }

    /// Leaving: expect what was numbered before now, nothing after.
    pub fn leave(&mut self, snapshot: &HashMap<u32, u64>) {
        if let Some(from) = self.open.take() {
            let interval = from
                .iter()
                .map(|(s, f)| (*s, (*f, snapshot.get(s).copied().unwrap_or(*f))))
                .collect();
            self.closed.push(interval);
        }
    }

    /// True once every message expected up to `snapshot` from every sender has arrived.
    pub fn caught_up(&self, snapshot: &HashMap<u32, u64>) -> bool {
        let Some(from) = &self.open else { return true };
        from.iter().all(|(sender, f)| {
            let until = snapshot.get(sender).copied().unwrap_or(*f);
            self.received.get(sender).map_or(until <= *f, |set| {
                set.count_range(*f, until) == until.saturating_sub(*f)
            })
        })
    }

    /// Records an arrival; returns (duplicate, out_of_order).
    pub fn arrive(&mut self, sender: u32, seq: u64) -> (bool, bool) {
        self.arrivals += 1;
        let (dup, ooo) = self.received.entry(sender).or_default().insert(seq);
        self.duplicates += dup as u64;
        self.out_of_order += ooo as u64;
        (dup, ooo)
    }

    /// Closes the open interval at `snapshot` (end of run) and counts
    /// (expected, delivered of those expected). `voided(sender, from, until)` lists the
    /// numbers in that range that were never sent.
    pub fn settle(
        &mut self,
        snapshot: &HashMap<u32, u64>,
        voided: &dyn Fn(u32, u64, u64) -> Vec<u64>,
    ) -> (u64, u64) {
        self.leave(snapshot);
        let mut expected = 0;
        let mut delivered = 0;
        for interval in &self.closed {
            for (sender, (from, until)) in interval {
                let set = self.received.get(sender);
                let never_sent = voided(*sender, *from, *until)
                    .into_iter()
                    .filter(|seq| !set.is_some_and(|s| s.contains(*seq)))
                    .count();
                expected += until.saturating_sub(*from) - never_sent as u64;
                if let Some(set) = set {
                    delivered += set.count_range(*from, *until);
                }
            }
        }
        (expected, delivered)
    }
}

/// Totals over every membership of a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub expected: u64,
    pub delivered: u64,
    pub arrivals: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl Tally {
    /// Settles membership `m` of `room` at the end of the run.
    pub fn add(&mut self, m: &mut Membership, room: u32, slots: &Slots) {
        let voided = |sender: u32, from: u64, until: u64| {
            slots
                .slot(room, sender)
                .map(|slot| slots.voided_in(slot, from, until))
                .unwrap_or_default()
        };
        let (expected, delivered) = m.settle(&slots.snapshot(room), &voided);
        self.expected += expected;
        self.delivered += delivered;
        self.arrivals += m.arrivals;
        self.duplicated += m.duplicates;
        self.out_of_order += m.out_of_order;
    }

    pub fn lost(&self) -> u64 {
        self.expected - self.delivered.min(self.expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqset_sees_duplicates_and_reordering() {
        let mut s = SeqSet::default();
        assert_eq!(s.insert(0), (false, false));
        assert_eq!(s.insert(2), (false, false));
        assert_eq!(s.insert(1), (false, true));
        assert_eq!(s.insert(2), (true, false));
        assert_eq!(s.count_range(0, 3), 3);
        assert_eq!(s.count_range(1, 2), 1);
        assert!(!s.contains(200));
    }

    #[test]
    fn membership_counts_only_its_intervals() {
        let slots = Slots::new(&[vec![7, 8]]);
        let s7 = slots.slot(0, 7).unwrap();
        let s8 = slots.slot(0, 8).unwrap();
        // Two messages from 7 before the member joins: not expected.
        slots.next_seq(s7);
        slots.next_seq(s7);
        let mut m = Membership::default();
        m.join(slots.snapshot(0));
        for _ in 0..3 {
            slots.next_seq(s7);
            slots.next_seq(s8);
        }
        m.arrive(7, 2);
        m.arrive(7, 3);
        m.arrive(8, 0);
        m.arrive(8, 0); // duplicate
        m.arrive(7, 0); // before the join: arrives, but was not expected
        assert!(!m.caught_up(&slots.snapshot(0)));
        m.leave(&slots.snapshot(0));
        slots.next_seq(s8); // after leaving: not expected
        let mut tally = Tally::default();
        tally.add(&mut m, 0, &slots);
        assert_eq!(tally.expected, 6);
        assert_eq!(tally.delivered, 3);
        assert_eq!(tally.lost(), 3);
        assert_eq!(tally.duplicated, 1);
        assert_eq!(tally.arrivals, 5);
    }

    #[test]
    fn caught_up_once_everything_numbered_arrived() {
        let slots = Slots::new(&[vec![1]]);
        let slot = slots.slot(0, 1).unwrap();
        let mut m = Membership::default();
        m.join(slots.snapshot(0));
        slots.next_seq(slot);
        slots.next_seq(slot);
        let at_leave = slots.snapshot(0);
        m.arrive(1, 0);
        assert!(!m.caught_up(&at_leave));
        m.arrive(1, 1);
        assert!(m.caught_up(&at_leave));
    }

    #[test]
    fn voided_numbers_are_not_expected() {
        let slots = Slots::new(&[vec![1]]);
        let slot = slots.slot(0, 1).unwrap();
        let mut m = Membership::default();
        m.join(slots.snapshot(0));
        for _ in 0..4 {
            slots.next_seq(slot);
        }
        slots.void(slot, 3); // the session broke while sending number 3
        m.arrive(1, 0);
        m.arrive(1, 1);
        m.arrive(1, 2);
        let mut tally = Tally::default();
        tally.add(&mut m, 0, &slots);
        assert_eq!((tally.expected, tally.delivered, tally.lost()), (3, 3, 0));
    }
}
