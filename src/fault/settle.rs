//! The end of a run with faults: lost messages placed in the faults' windows, the
//! durability check (receipted messages against subscribers and the history table), and
//! the figures, verdicts and notes that go into the summary.

use crate::fault::inject::{Affected, Injected};
use crate::fault::recovery::{self, Figures, Spans};
use crate::load::integrity::{fault_loss, Membership, SeqSet, Slots};
use crate::load::target::Resolved;
use crate::load::{RunContext, Schedule};
use crate::report::{Bound, SloVerdict, Summary, TimelinePoint};

/// Loss accounting of a run with faults, fed one membership at a time.
pub struct Settle {
    spans: Vec<Option<Spans>>,
    /// Per fault (those injected), then the union of all, as slot counters at each
    /// window's start and end.
    windows: Vec<(Vec<u64>, Vec<u64>)>,
    /// Which fault each of the first windows belongs to.
    owners: Vec<usize>,
    /// Whether the windows could be placed (snapshots kept).
    placed: bool,
    receipted: Vec<SeqSet>,
    receipted_lost: u64,
    lost: Vec<u64>,
}

impl Settle {
    /// `None` for a run without faults.
    pub fn new(ctx: &RunContext, injected: &[Injected], schedule: Schedule) -> Option<Settle> {
        let tracking = ctx.tracking.as_ref()?;
        let grace = ctx.scenario.grace.as_micros() as u64;
        let spans = recovery::spans(injected, tracking, schedule, grace);
        let finals = ctx.slots.counters();
        let at = |t: u64, before: bool| {
            let c = if before {
                tracking.counters_before(t)
            } else {
                tracking.counters_after(t)
            };
            c.or_else(|| {
                // Before the first snapshot nothing was numbered yet; after the last,
                // the final counters are the end.
                (!tracking.snapshots_dropped()).then(|| {
                    if before {
                        vec![0; finals.len()]
                    } else {
                        finals.clone()
                    }
                })
            })
        };
        let mut windows = Vec::new();
        let mut owners = Vec::new();
        let mut placed = !tracking.snapshots_dropped();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for (k, span) in spans.iter().enumerate() {
            let Some(span) = span else { continue };
            ranges.push(span.loss);
            match (at(span.loss.0, true), at(span.loss.1, false)) {
                (Some(a), Some(b)) => {
                    windows.push((a, b));
                    owners.push(k);
                }
                _ => placed = false,
            }
        }
        // The union of the windows, for the run-wide split (overlaps counted once).
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        for (a, b) in merged {
            match (at(a, true), at(b, false)) {
                (Some(a), Some(b)) => windows.push((a, b)),
                _ => placed = false,
            }
        }
        let receipted = (0..finals.len())
            .map(|s| ctx.slots.receipted_set(s).unwrap_or_default())
            .collect();
        Some(Settle {
            lost: vec![0; windows.len()],
            spans,
            windows,
            owners,
            placed,
            receipted,
            receipted_lost: 0,
        })
    }

    /// Adds one settled membership.
    pub fn add(&mut self, m: &Membership, room: u32, slots: &Slots) {
        let (receipted_lost, lost) = fault_loss(m, room, slots, &self.receipted, &self.windows);
        self.receipted_lost += receipted_lost;
        for (sum, l) in self.lost.iter_mut().zip(lost) {
            *sum += l;
        }
    }

    /// Checks the receipted messages against the history table, builds the figures
    /// and adds them, their verdicts and notes to `summary`.
    pub async fn finish(
        self,
        ctx: &RunContext,
        target: &Resolved,
        injected: &[Injected],
        timeline: &[TimelinePoint],
        lost_total: u64,
        summary: &mut Summary,
    ) {
        let Some(tracking) = ctx.tracking.as_ref() else {
            return;
        };
        let receipted_total = ctx.slots.receipted_total();
        let receipted_missing_in_db = match (&target.db, ctx.receipts) {
            (Some((url, table)), true) => {
                match missing_in_db(ctx, url, table, &self.receipted).await {
                    Ok(n) => Some(n),
                    Err(e) => {
                        summary.notes.push(format!(
                            "the receipted messages could not be checked against {table}: {e}"
                        ));
                        None
                    }
                }
            }
            _ => None,
        };
        let servers = ctx.urls.len().max(1);
        let affected_users = injected
            .iter()
            .map(|f| match &f.affected {
                Affected::All => ctx.plan.users.len() as u64,
                Affected::Server(s) => (0..ctx.plan.users.len())
                    .filter(|u| u % servers == *s)
                    .count() as u64,
                Affected::Partitions(ps) => ctx
                    .plan
                    .users
                    .iter()
                    .filter(|u| {
                        u.rooms.iter().any(|r| {
                            ctx.room_partitions
                                .get(*r as usize)
                                .copied()
                                .flatten()
                                .is_some_and(|p| ps.contains(&p))
                        })
                    })
                    .count() as u64,
            })
            .collect();
        let n = self.owners.len();
        let mut lost_in_window = vec![None; injected.len()];
        if self.placed {
            for (w, k) in self.owners.iter().enumerate() {
                lost_in_window[*k] = Some(self.lost[w]);
            }
        }
        let lost_in_windows = self.placed.then(|| self.lost[n..].iter().sum());
        if !self.placed {
            summary.notes.push(
                "lost messages could not be placed inside or outside the faults' windows: the per-second sequence snapshots outgrew their memory cap"
                    .into(),
            );
        }
        let faults = recovery::build(
            injected,
            &self.spans,
            tracking,
            Figures {
                timeline,
                affected_users,
                receipted: receipted_total,
                receipted_lost: self.receipted_lost,
                receipted_missing_in_db,
                lost_in_window,
                lost_in_windows,
                lost_total,
            },
        );
        let ok = faults.injected.iter().filter(|f| f.ok).count();
        summary.slo.push(SloVerdict::new(
            "faults_injected",
            Bound::AtLeast,
            injected.len() as f64,
            ok as f64,
            "faults",
        ));
        for f in faults.injected.iter().filter(|f| !f.ok) {
            summary.notes.push(format!(
                "fault {} ({} {}) was not applied: {}; the run did not do what the scenario asked, so it fails",
                f.index,
                f.kind,
                f.target,
                f.error.as_deref().unwrap_or("unknown reason")
            ));
        }
        if ctx.receipts {
            let broken = faults.durability.receipted_lost
                + faults.durability.receipted_missing_in_db.unwrap_or(0);
            summary.slo.push(SloVerdict::new(
                "receipted_lost",
                Bound::AtMost,
                0.0,
                broken as f64,
                "messages",
            ));
        }
        let overflow = tracking
            .gaps_overflow
            .load(std::sync::atomic::Ordering::Relaxed)
            + tracking
                .events_overflow
                .load(std::sync::atomic::Ordering::Relaxed);
        if overflow > 0 {
            summary.notes.push(format!(
                "{overflow} delivery gaps or session breaks were past the recording caps and are not in the fault figures"
            ));
        }
        summary.passed = summary.slo.iter().all(|v| v.passed);
        summary.faults = Some(faults);
    }
}

/// Receipted messages without a row of this run in the history table.
async fn missing_in_db(
    ctx: &RunContext,
    url: &str,
    table: &str,
    receipted: &[SeqSet],
) -> Result<u64, String> {
    let mut stored: Vec<SeqSet> = vec![SeqSet::default(); receipted.len()];
    crate::load::samplers::stored_stamps(url, table, &ctx.marker, |stamp| {
        if let Some(slot) = ctx.slots.slot(stamp.room, stamp.sender) {
            if let Some(set) = stored.get_mut(slot) {
                set.insert(stamp.seq);
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(receipted
        .iter()
        .zip(&stored)
        .map(|(r, s)| r.count_missing_from(Some(s), 0, u64::MAX))
        .sum())
}
