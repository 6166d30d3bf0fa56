//! Recovery figures: from what was injected ([`Injected`]) and what the users went
//! through ([`Tracking`]) to the report's [`FaultsSummary`].
//!
//! Per fault, on the affected users (those of one server, or everybody):
//! - its **window** runs from the injection until the next fault's injection (or the end
//!   of sending plus grace); send failures, receipt waits and broken sessions are counted
//!   in it;
//! - the **outage** is the longest pause in deliveries to the affected users that ends
//!   after the injection and starts before the next fault;
//! - **p99 recovery** is the first second after the outage whose corrected p99 is within
//!   twice the median per-second p99 of the 5 s before the injection;
//! - the **loss window** (to place lost messages in time) runs from 2 s before the
//!   injection until 2 s after the outage ended (or after the fault was lifted).

use crate::fault::inject::{Affected, Injected};
use crate::fault::outage::{Break, Tracking};
use crate::load::Schedule;
use crate::report::{FaultReport, FaultsSummary, Others, Outage, ReconnectTimes, TimelinePoint};

/// Margin of a loss window on each side.
pub const LOSS_MARGIN_US: u64 = 2_000_000;

/// One fault's time ranges (µs since t0), worked out once and used twice: for the loss
/// windows (before the tally) and for the figures.
#[derive(Debug, Clone)]
pub struct Spans {
    pub at_us: u64,
    /// Where this fault's window ends (the next injection, or the end of the run).
    pub window_end_us: u64,
    /// (start, end, recovered) of the outage, if any.
    pub outage: Option<(u64, u64, bool)>,
    /// When the fault was over: the end of its outage or its lifting, whichever is later.
    pub settled_us: u64,
    /// The range of send times whose lost messages count for this fault.
    pub loss: (u64, u64),
}

/// Works out every injected fault's spans (`None` for faults never injected).
pub fn spans(
    injected: &[Injected],
    tracking: &Tracking,
    schedule: Schedule,
    grace_us: u64,
) -> Vec<Option<Spans>> {
    let end_us = schedule.send_end_us;
    let mut starts: Vec<u64> = injected.iter().filter_map(|f| f.at_us).collect();
    starts.sort_unstable();
    injected
        .iter()
        .map(|f| {
            let at = f.at_us?;
            let next = starts.iter().copied().find(|s| *s > at);
            let window_end_us = next.unwrap_or(end_us + grace_us);
            let groups: Vec<usize> = match &f.affected {
                Affected::All => vec![tracking.everybody()],
                Affected::Server(s) if *s < tracking.servers() => vec![*s],
                Affected::Server(_) => vec![tracking.everybody()],
                Affected::Partitions(ps) => {
                    let g: Vec<usize> = ps
                        .iter()
                        .filter_map(|p| tracking.partition_group(*p))
                        .collect();
                    if g.is_empty() {
                        vec![tracking.everybody()]
                    } else {
                        g
                    }
                }
            };
            let outage = groups
                .iter()
                .flat_map(|g| tracking.gaps(*g, end_us))
                .filter(|(a, b, _)| *b > at && *a < next.unwrap_or(end_us))
                .max_by_key(|(a, b, _)| b - a);
            let settled = outage
                .map(|(_, b, _)| b)
                .unwrap_or(at)
                .max(f.end_us.unwrap_or(at));
            Some(Spans {
                at_us: at,
                window_end_us,
                outage,
                settled_us: settled,
                loss: (at.saturating_sub(LOSS_MARGIN_US), settled + LOSS_MARGIN_US),
            })
        })
        .collect()
}

/// Inputs of [`build`] besides the faults and the tracking.
pub struct Figures<'a> {
    pub timeline: &'a [TimelinePoint],
    /// Per fault (index as in `injected`): how many users its outage is about.
    pub affected_users: Vec<u64>,
    pub receipted: u64,
    pub receipted_lost: u64,
    pub receipted_missing_in_db: Option<u64>,
    /// Per fault (index as in `injected`), lost deliveries in its loss window.
    pub lost_in_window: Vec<Option<u64>>,
    /// Lost deliveries inside the union of the windows, and the run's total loss.
    pub lost_in_windows: Option<u64>,
    pub lost_total: u64,
}

pub fn build(
    injected: &[Injected],
    spans: &[Option<Spans>],
    tracking: &Tracking,
    f: Figures,
) -> FaultsSummary {
    let breaks = tracking.breaks();
    let reports = injected
        .iter()
        .zip(spans)
        .enumerate()
        .map(|(k, (inj, span))| report(inj, span.as_ref(), tracking, &breaks, &f, k))
        .collect();
    FaultsSummary {
        injected: reports,
        durability: crate::report::Durability {
            receipted: f.receipted,
            receipted_lost: f.receipted_lost,
            receipted_missing_in_db: f.receipted_missing_in_db,
        },
        missed_while_disconnected: tracking
            .missed_while_disconnected
            .load(std::sync::atomic::Ordering::Relaxed),
        unsent_while_disconnected: tracking
            .unsent_while_disconnected
            .load(std::sync::atomic::Ordering::Relaxed),
        lost_in_fault_windows: f.lost_in_windows,
        lost_outside_fault_windows: f.lost_in_windows.map(|w| f.lost_total.saturating_sub(w)),
    }
}

fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

fn report(
    inj: &Injected,
    span: Option<&Spans>,
    tracking: &Tracking,
    breaks: &[Break],
    f: &Figures,
    k: usize,
) -> FaultReport {
    let affected = match &inj.affected {
        Affected::Server(s) => format!("users of s{}", s + 1),
        Affected::All => "all users".to_string(),
        Affected::Partitions(ps) if ps.is_empty() => "no room (the broker led no partition)".into(),
        Affected::Partitions(ps) => rooms_on(ps),
    };
    let affected_users = f.affected_users.get(k).copied().unwrap_or(0);
    let mut r = FaultReport {
        index: inj.index as u32 + 1,
        kind: inj.kind.to_string(),
        target: inj.target.clone(),
        planned_s: inj.planned.as_secs_f64(),
        at_s: inj.at_us.map(secs),
        end_s: inj.end_us.map(secs),
        ok: inj.error.is_none() && inj.at_us.is_some(),
        error: inj.error.clone(),
        affected,
        affected_users,
        outage: None,
        p99_before_ms: None,
        p99_recovered_s: None,
        send_failures: 0,
        receipt_timeouts: 0,
        receipt_max_ms: None,
        disconnected: 0,
        reconnected: 0,
        reconnect_ms: None,
        lost_in_window: f.lost_in_window.get(k).copied().flatten(),
        others: None,
    };
    let Some(span) = span else { return r };
    let at = span.at_us;
    r.outage = span.outage.map(|(a, b, recovered)| Outage {
        start_s: secs(a),
        end_s: secs(b),
        length_s: secs(b - a),
        first_delivery_after_s: secs(b.saturating_sub(at)),
        recovered,
    });
    let before: Vec<u64> = f
        .timeline
        .iter()
        .filter(|p| p.t_s <= secs(at) && p.t_s > secs(at) - 5.0)
        .filter_map(|p| p.p99_us)
        .collect();
    if let Some(p99) = median(before) {
        r.p99_before_ms = Some(p99 as f64 / 1000.0);
        let from = span.outage.map_or(at, |(_, b, _)| b).max(at);
        r.p99_recovered_s = f
            .timeline
            .iter()
            .filter(|p| p.t_s >= secs(from))
            .find(|p| p.p99_us.is_some_and(|v| v <= 2 * p99))
            .map(|p| p.t_s - secs(at));
    }
    r.others = others(
        &inj.affected,
        tracking,
        at,
        span.settled_us.max(at + 1_000_000),
    );
    let (failures, timeouts, receipt_max) = tracking.window(at, span.window_end_us);
    r.send_failures = failures;
    r.receipt_timeouts = timeouts;
    r.receipt_max_ms = (receipt_max > 0).then(|| receipt_max as f64 / 1000.0);
    let mine: Vec<&Break> = breaks
        .iter()
        .filter(|b| b.down_us >= at && b.down_us < span.window_end_us)
        .collect();
    r.disconnected = mine.len() as u64;
    let mut times: Vec<u64> = mine
        .iter()
        .filter_map(|b| b.up_us.map(|u| u.saturating_sub(b.down_us)))
        .collect();
    r.reconnected = times.len() as u64;
    if !times.is_empty() {
        times.sort_unstable();
        let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        r.reconnect_ms = Some(ReconnectTimes {
            count: times.len() as u64,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            max_ms: *times.last().expect("not empty") as f64 / 1000.0,
        });
    }
    r
}

/// The latency of the groups a fault was not about (see [`Others`]): the 5 s before
/// `at`, and the seconds overlapping `[at, settled]`.
fn others(affected: &Affected, tracking: &Tracking, at: u64, settled: u64) -> Option<Others> {
    let lat = &tracking.latency;
    let (groups, who): (Vec<usize>, String) = match affected {
        Affected::All => return None,
        Affected::Server(s) => {
            let rest: Vec<usize> = (0..tracking.servers()).filter(|g| g != s).collect();
            let names: Vec<String> = rest.iter().map(|g| format!("s{}", g + 1)).collect();
            let who = match names.len() {
                0 => return None,
                1 => format!("users of {} among themselves", names[0]),
                _ => format!(
                    "users of {}, each server's among themselves",
                    names.join(", ")
                ),
            };
            (
                rest.iter().filter_map(|g| lat.server_group(*g)).collect(),
                who,
            )
        }
        Affected::Partitions(ps) => {
            let rest: Vec<u32> = (0u32..)
                .map_while(|p| lat.partition_group(p).map(|_| p))
                .filter(|p| !ps.contains(p))
                .collect();
            if rest.is_empty() {
                return None;
            }
            let who = rooms_on(&rest);
            (
                rest.iter()
                    .filter_map(|p| lat.partition_group(*p))
                    .collect(),
                who,
            )
        }
    };
    let before = lat
        .worst(&groups, at.saturating_sub(5_000_000), at)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let during = lat
        .worst(&groups, at, settled + 1_000_000)
        .into_iter()
        .map(|(_, v)| v)
        .max();
    Some(Others {
        who,
        p99_before_ms: median(before).map(|v| v as f64 / 1000.0),
        p99_during_ms: during.map(|v| v as f64 / 1000.0),
    })
}

/// `rooms on partition 1`, `rooms on partitions 0, 2`.
fn rooms_on(partitions: &[u32]) -> String {
    let list: Vec<String> = partitions.iter().map(u32::to_string).collect();
    format!(
        "rooms on partition{} {}",
        if partitions.len() == 1 { "" } else { "s" },
        list.join(", ")
    )
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Phase;
    use std::time::Duration;

    fn point(t_s: f64, p99_ms: u64) -> TimelinePoint {
        TimelinePoint {
            t_s,
            interval_s: 1.0,
            phase: Phase::Measure,
            sent: 10,
            delivered: 10,
            sessions: 4,
            errors: 0,
            p50_us: Some(p99_ms * 500),
            p99_us: Some(p99_ms * 1000),
            harness_rss_bytes: None,
        }
    }

    #[test]
    fn a_server_kill_gives_the_outage_of_its_users_and_their_reconnections() {
        let t = Tracking::new(2, 0, 60);
        t.start(1_000_000);
        // Both groups get a delivery every 100 ms; s2's users stop at 10.0 s and are
        // back at 11.5 s; everybody else carries on.
        for ms in (1_000..20_000).step_by(100) {
            t.delivered(0, None, ms * 1000);
            if !(10_001..11_500).contains(&ms) {
                t.delivered(1, None, ms * 1000);
            }
        }
        // s1's users among themselves: 8 ms a second before the fault, 12 ms during it,
        // then one slow second well after it (not part of the figure).
        for sec in 1..20u64 {
            let us = match sec {
                11 | 12 => 12_000,
                16 => 400_000,
                _ => 8_000,
            };
            t.latency.record(0, 0, None, us);
            t.latency.record(1, 1, None, 900_000);
            t.latency.close_second(sec * 1_000_000);
        }
        let b = t.session_broke(1, 10_050_000);
        t.session_back(b, 11_400_000);
        t.send_failed(10_060_000);
        let injected = vec![Injected {
            index: 0,
            kind: "kill-server",
            target: "server s2".into(),
            affected: Affected::Server(1),
            planned: Duration::from_secs(9),
            at_us: Some(10_030_000),
            end_us: None,
            error: None,
        }];
        let schedule = Schedule {
            send_start_us: 1_000_000,
            measure_start_us: 1_000_000,
            send_end_us: 20_000_000,
        };
        let spans = spans(&injected, &t, schedule, 2_000_000);
        let s = spans[0].as_ref().unwrap();
        assert_eq!(s.outage, Some((10_000_000, 11_500_000, true)));
        assert_eq!(s.loss, (8_030_000, 13_500_000));
        let timeline: Vec<TimelinePoint> = (1..20)
            .map(|i| point(i as f64, if (11..13).contains(&i) { 900 } else { 20 }))
            .collect();
        let summary = build(
            &injected,
            &spans,
            &t,
            Figures {
                timeline: &timeline,
                affected_users: vec![2],
                receipted: 10,
                receipted_lost: 0,
                receipted_missing_in_db: Some(0),
                lost_in_window: vec![Some(3)],
                lost_in_windows: Some(3),
                lost_total: 3,
            },
        );
        let r = &summary.injected[0];
        assert_eq!(r.affected, "users of s2");
        assert_eq!(r.affected_users, 2);
        let o = r.outage.as_ref().unwrap();
        assert!((o.length_s - 1.5).abs() < 1e-9 && (o.first_delivery_after_s - 1.47).abs() < 1e-9);
        assert_eq!(r.p99_before_ms, Some(20.0));
        // 13 s is the first second after the outage with p99 back under 40 ms.
        assert!((r.p99_recovered_s.unwrap() - (13.0 - 10.03)).abs() < 1e-9);
        assert_eq!((r.disconnected, r.reconnected, r.send_failures), (1, 1, 1));
        assert_eq!(r.reconnect_ms.as_ref().unwrap().max_ms, 1350.0);
        assert_eq!(summary.lost_outside_fault_windows, Some(0));
        let others = r.others.as_ref().expect("figures for s1's users");
        assert_eq!(others.who, "users of s1 among themselves");
        let (before, during) = (others.p99_before_ms.unwrap(), others.p99_during_ms.unwrap());
        assert!((8.0..8.6).contains(&before), "{before}");
        assert!((12.0..12.8).contains(&during), "{during}");
    }

    #[test]
    fn a_fault_never_injected_reports_no_figures() {
        let t = Tracking::new(1, 0, 10);
        let injected = vec![Injected {
            index: 0,
            kind: "pause-db",
            target: "PostgreSQL".into(),
            affected: Affected::All,
            planned: Duration::from_secs(5),
            at_us: None,
            end_us: None,
            error: Some("the run ended before its time".into()),
        }];
        let spans = spans(&injected, &t, Schedule::default(), 0);
        assert!(spans[0].is_none());
        let s = build(
            &injected,
            &spans,
            &t,
            Figures {
                timeline: &[],
                affected_users: vec![3],
                receipted: 0,
                receipted_lost: 0,
                receipted_missing_in_db: None,
                lost_in_window: vec![None],
                lost_in_windows: None,
                lost_total: 0,
            },
        );
        assert!(!s.injected[0].ok && s.injected[0].outage.is_none());
        assert_eq!(s.lost_outside_fault_windows, None);
    }
}
