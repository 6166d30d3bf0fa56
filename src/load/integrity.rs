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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// Sequence counters of every (room, sender) pair.
pub struct Slots {
    counters: Vec<AtomicU64>,
    /// Numbers taken for a SEND that never went on the wire (the session broke).
    voided: Mutex<BTreeSet<(usize, u64)>>,
    /// room index → (sender user index → slot).
    index: Vec<HashMap<u32, usize>>,
    /// Per slot, the numbers whose SEND was confirmed by a RECEIPT (kept only when
    /// [`Slots::track_receipts`] was called: runs with faults).
    receipted: Vec<Mutex<SeqSet>>,
    /// In a shard of a run ([`crate::shard`]): per slot, whether its sender runs in
    /// another shard (empty: every sender is here). A remote slot's counter here is
    /// only the last value heard from its owner.
    remote: Vec<bool>,
}

/// How far past the last value heard from a remote slot's owner a received sequence
/// number may lie and still be taken (it is checked exactly when the shards merge):
/// a mangled stamp can make a sequence set grow by at most this span.
pub const REMOTE_SEQ_SLACK: u64 = 1 << 20;

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
            receipted: Vec::new(),
            remote: Vec::new(),
        }
    }

    /// The sender of every slot, in slot order.
    pub fn senders(&self) -> Vec<u32> {
        let mut out = vec![0; self.counters.len()];
        for room in &self.index {
            for (sender, slot) in room {
                out[*slot] = *sender;
            }
        }
        out
    }

    /// Marks the slots whose sender `here` rejects as remote (numbered by another shard).
    pub fn set_remote(&mut self, here: impl Fn(u32) -> bool) {
        self.remote = self.senders().into_iter().map(|s| !here(s)).collect();
    }

    /// Whether `slot`'s sender runs in another shard.
    pub fn is_remote(&self, slot: usize) -> bool {
        self.remote.get(slot).copied().unwrap_or(false)
    }

    /// Whether any sender of `room` runs in another shard.
    pub fn room_has_remote(&self, room: u32) -> bool {
        !self.remote.is_empty()
            && self
                .index
                .get(room as usize)
                .is_some_and(|m| m.values().any(|slot| self.is_remote(*slot)))
    }

    /// Whether a received number `seq` of `slot` may be taken: below the counter for a
    /// slot numbered here, within [`REMOTE_SEQ_SLACK`] of the last value heard for a
    /// remote one.
    pub fn plausible(&self, slot: usize, seq: u64) -> bool {
        let issued = self.issued(slot);
        if self.is_remote(slot) {
            seq < issued.saturating_add(REMOTE_SEQ_SLACK)
        } else {
            seq < issued
        }
    }

    /// Sets a slot's counter (merging shards; a remote slot's value heard from its
    /// owner). Never lowers it.
    pub fn raise(&self, slot: usize, value: u64) {
        if let Some(c) = self.counters.get(slot) {
            c.fetch_max(value, Relaxed);
        }
    }

    /// Per sender of `room`: the numbering in `counters` (every slot's counter, in slot
    /// order, as one consistent read across shards).
    pub fn snapshot_of(&self, room: u32, counters: &[u64]) -> HashMap<u32, u64> {
        self.index
            .get(room as usize)
            .map(|m| {
                m.iter()
                    .map(|(sender, slot)| (*sender, counters.get(*slot).copied().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every voided number, as (slot, number).
    pub fn voided_all(&self) -> Vec<(usize, u64)> {
        let voided = self.voided.lock().unwrap_or_else(|e| e.into_inner());
        voided.iter().copied().collect()
    }

    /// Keep, per slot, which numbers were confirmed by a RECEIPT.
    pub fn track_receipts(&mut self) {
        self.receipted = (0..self.counters.len())
            .map(|_| Mutex::new(SeqSet::default()))
            .collect();
    }

    /// A RECEIPT confirmed number `seq` of `slot` (ignored unless tracked).
    pub fn receipted(&self, slot: usize, seq: u64) {
        if let Some(set) = self.receipted.get(slot) {
            set.lock().unwrap_or_else(|e| e.into_inner()).insert(seq);
        }
    }

    /// A copy of the confirmed numbers of `slot`, if tracked.
    pub fn receipted_set(&self, slot: usize) -> Option<SeqSet> {
        self.receipted
            .get(slot)
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Confirmed numbers over all slots.
    pub fn receipted_total(&self) -> u64 {
        self.receipted
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    /// Every slot's counter, in slot order (a snapshot of the whole run's numbering).
    pub fn counters(&self) -> Vec<u64> {
        self.counters.iter().map(|c| c.load(Relaxed)).collect()
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

/// A set of sequence numbers whose memory follows the gaps, not the count: words of 64
/// numbers are kept only while one of their bits is clear. A loss-free hour-long stream
/// costs a few words however many messages it carries.
///
/// Words from `first` to `end` that are not in `partial` are full; numbers outside
/// `[first, end)` words are absent.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct SeqSet {
    partial: BTreeMap<u64, u64>,
    first: u64,
    end: u64,
    max_seen: Option<u64>,
}

impl SeqSet {
    /// Records `seq`; returns (duplicate, out_of_order).
    pub fn insert(&mut self, seq: u64) -> (bool, bool) {
        let (word, bit) = (seq / 64, 1u64 << (seq % 64));
        if self.first == self.end {
            (self.first, self.end) = (word, word);
        }
        // Words newly covered hold no number yet.
        for w in (word..self.first).chain(self.end..=word) {
            self.partial.insert(w, 0);
        }
        self.first = self.first.min(word);
        self.end = self.end.max(word + 1);
        let duplicate = match self.partial.get_mut(&word) {
            None => true,
            Some(bits) => {
                let dup = *bits & bit != 0;
                *bits |= bit;
                if *bits == u64::MAX {
                    self.partial.remove(&word);
                }
                dup
            }
        };
        let out_of_order = !duplicate && self.max_seen.is_some_and(|m| seq < m);
        self.max_seen = Some(self.max_seen.map_or(seq, |m| m.max(seq)));
        (duplicate, out_of_order)
    }

    fn word(&self, w: u64) -> u64 {
        if w < self.first || w >= self.end {
            0
        } else {
            self.partial.get(&w).copied().unwrap_or(u64::MAX)
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.word(seq / 64) & (1 << (seq % 64)) != 0
    }

    /// Members in `[from, until)`.
    pub fn count_range(&self, from: u64, until: u64) -> u64 {
        if until <= from {
            return 0;
        }
        let (fw, lw) = (from / 64, (until - 1) / 64);
        let mut n = 0;
        for w in fw..=lw {
            let mut bits = self.word(w);
            if w == fw {
                bits &= u64::MAX << (from % 64);
            }
            if w == lw && until % 64 != 0 {
                bits &= u64::MAX >> (64 - until % 64);
            }
            n += u64::from(bits.count_ones());
        }
        n
    }

    /// Members at or above `from`.
    pub fn count_from(&self, from: u64) -> u64 {
        self.count_range(from, self.end * 64)
    }

    /// Members in all.
    pub fn len(&self) -> u64 {
        self.count_range(self.first * 64, self.end * 64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Members in `[from, until)` that `other` lacks.
    pub fn count_missing_from(&self, other: Option<&SeqSet>, from: u64, until: u64) -> u64 {
        let until = until.min(self.end * 64);
        let from = from.max(self.first * 64);
        if until <= from {
            return 0;
        }
        let (fw, lw) = (from / 64, (until - 1) / 64);
        let mut n = 0;
        for w in fw..=lw {
            let mut bits = self.word(w) & !other.map_or(0, |o| o.word(w));
            if w == fw {
                bits &= u64::MAX << (from % 64);
            }
            if w == lw && until % 64 != 0 {
                bits &= u64::MAX >> (64 - until % 64);
            }
            n += u64::from(bits.count_ones());
        }
        n
    }

    /// Words kept in memory (the gaps), for tests and sizing.
    pub fn stored_words(&self) -> usize {
        self.partial.len()
    }
}

/// One user's membership of one room over the run.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Membership {
    /// Closed intervals: per sender, expected `[from, until)`.
    pub closed: Vec<HashMap<u32, (u64, u64)>>,
    /// The open interval's start per sender, while subscribed.
    pub open: Option<HashMap<u32, u64>>,
    pub received: HashMap<u32, SeqSet>,
    pub arrivals: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Indexes into `closed` of the intervals a broken session ended (what was in flight
    /// to it then is lost with the session, not broken by the system).
    pub broken: Vec<usize>,
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

    /// The session broke: like [`Membership::leave`], and the interval is marked.
    pub fn leave_broken(&mut self, snapshot: &HashMap<u32, u64>) {
        if self.open.is_some() {
            self.leave(snapshot);
            self.broken.push(self.closed.len() - 1);
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

/// Loss figures of one settled membership (see [`Membership::settle`]) for a run with
/// faults: deliveries of RECEIPT-confirmed messages that never arrived (`receipted[slot]`,
/// empty when not tracked) while the recipient's session held (an interval a broken
/// session ended is left out: the server did not promise delivery to a dead session), and lost deliveries of messages numbered inside each window
/// (`windows[k]` = every slot's counter at the window's start and at its end).
pub fn fault_loss(
    m: &Membership,
    room: u32,
    slots: &Slots,
    receipted: &[SeqSet],
    windows: &[(Vec<u64>, Vec<u64>)],
) -> (u64, Vec<u64>) {
    let mut receipted_lost = 0;
    let mut in_window = vec![0u64; windows.len()];
    for (i, interval) in m.closed.iter().enumerate() {
        let broken = m.broken.contains(&i);
        for (sender, (from, until)) in interval {
            let Some(slot) = slots.slot(room, *sender) else {
                continue;
            };
            let got = m.received.get(sender);
            if let Some(confirmed) = receipted.get(slot).filter(|_| !broken) {
                receipted_lost += confirmed.count_missing_from(got, *from, *until);
            }
            for (k, (start, end)) in windows.iter().enumerate() {
                let (Some(a), Some(b)) = (start.get(slot), end.get(slot)) else {
                    continue;
                };
                let (lo, hi) = ((*from).max(*a), (*until).min(*b));
                if lo >= hi {
                    continue;
                }
                let never_sent = slots
                    .voided_in(slot, lo, hi)
                    .into_iter()
                    .filter(|seq| !got.is_some_and(|s| s.contains(*seq)))
                    .count() as u64;
                let delivered = got.map_or(0, |s| s.count_range(lo, hi));
                in_window[k] += (hi - lo).saturating_sub(never_sent + delivered);
            }
        }
    }
    (receipted_lost, in_window)
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
    /// Settles membership `m` of `room` at the end of the run; returns its (expected,
    /// delivered).
    pub fn add(&mut self, m: &mut Membership, room: u32, slots: &Slots) -> (u64, u64) {
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
        (expected, delivered)
    }

    pub fn lost(&self) -> u64 {
        self.expected - self.delivered.min(self.expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqset_memory_follows_the_gaps() {
        let mut s = SeqSet::default();
        for seq in 0..1_000_000u64 {
            if seq != 500_000 {
                s.insert(seq);
            }
        }
        assert_eq!(s.stored_words(), 1, "only the word with the gap is kept");
        assert_eq!(s.count_range(0, 1_000_000), 999_999);
        assert!(!s.contains(500_000) && s.contains(499_999) && s.contains(500_001));
    }

    proptest::proptest! {
        #[test]
        fn seqset_matches_a_plain_set(
            seqs in proptest::collection::vec(0u64..600, 0..400),
            from in 0u64..700,
            len in 0u64..700,
        ) {
            let mut s = SeqSet::default();
            let mut plain = std::collections::HashSet::new();
            let mut max: Option<u64> = None;
            for seq in seqs {
                let dup = !plain.insert(seq);
                let ooo = !dup && max.is_some_and(|m| seq < m);
                max = Some(max.map_or(seq, |m| m.max(seq)));
                proptest::prop_assert_eq!(s.insert(seq), (dup, ooo));
            }
            for seq in 0..700 {
                proptest::prop_assert_eq!(s.contains(seq), plain.contains(&seq));
            }
            let want = (from..from + len).filter(|x| plain.contains(x)).count() as u64;
            proptest::prop_assert_eq!(s.count_range(from, from + len), want);
        }
    }

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

#[cfg(test)]
mod fault_tests {
    use super::*;

    #[test]
    fn fault_loss_places_lost_messages_in_windows_and_counts_receipted_ones() {
        let mut slots = Slots::new(&[vec![0]]);
        slots.track_receipts();
        let slot = slots.slot(0, 0).unwrap();
        let mut m = Membership::default();
        m.join(slots.snapshot(0));
        for seq in 0..100 {
            assert_eq!(slots.next_seq(slot), seq);
            if seq % 2 == 0 {
                slots.receipted(slot, seq);
            }
            // 10..20 lost (inside the window), 50 lost (outside it).
            if !(10..20).contains(&seq) && seq != 50 {
                m.arrive(0, seq);
            }
        }
        let (expected, delivered) = Tally::default().add(&mut m, 0, &slots);
        assert_eq!((expected, delivered), (100, 89));
        let receipted: Vec<SeqSet> = (0..1).map(|s| slots.receipted_set(s).unwrap()).collect();
        assert_eq!(slots.receipted_total(), 50);
        let windows = vec![(vec![5], vec![30])];
        let (receipted_lost, in_window) = fault_loss(&m, 0, &slots, &receipted, &windows);
        // Even numbers among 10..20 and 50: 5 + 1.
        assert_eq!(receipted_lost, 6);
        assert_eq!(in_window, vec![10]);
    }

    #[test]
    fn count_missing_from_matches_a_plain_count() {
        let mut a = SeqSet::default();
        let mut b = SeqSet::default();
        for s in 0..500 {
            if s % 3 == 0 {
                a.insert(s);
            }
            if s % 5 == 0 {
                b.insert(s);
            }
        }
        let want = (100..400).filter(|s| s % 3 == 0 && s % 5 != 0).count() as u64;
        assert_eq!(a.count_missing_from(Some(&b), 100, 400), want);
        assert_eq!(a.count_missing_from(None, 0, u64::MAX), a.len());
        assert_eq!(a.len(), (0..500).filter(|s| s % 3 == 0).count() as u64);
    }
}
