//! Judging one step of a capacity search from its run's [`Summary`] alone.
//!
//! A step passes only when every check holds:
//!
//! - `harness`: the harness kept its own schedule (its event loop woke on time). When it
//!   did not, the step is **harness-bound**: it says nothing about the target.
//! - every SLO verdict of the run (which always includes `min_connected` and `max_unsent`).
//!   `max_unsent` allows one send per sending slot (a sender in a room) on top of the
//!   scenario's limit: a send due in the last instant before sending ends is woken on
//!   the timer's next millisecond and then counts as unsent, however punctual the
//!   harness; falling behind shows as more than one per slot, and in the send lag;
//! - `delivered`: deliveries that *arrived* during the measured phase reach 99 % of the
//!   offered deliveries over the same seconds (a target that cannot keep up delivers
//!   less per second than it is offered, even if the backlog drains in the grace period);
//! - `lost`: no delivery lost, no sent message missing from the database;
//! - `kafka_lag_growth`: the fan-out groups' lag is not growing across the measured phase,
//!   judged by a slope over every lag sample of the phase (Theil–Sen: the median of the
//!   pairwise slopes, so one odd sample can neither make nor hide a trend).
//!
//! The check that "failed first" is the one whose failure showed earliest on the run's
//! per-second timeline (latency and delivered have one); whole-step figures follow, in
//! the order above.

use crate::report::{Bound, Check, Offered, StepVerdict, Summary};
use crate::report::{Phase, SloVerdict};

/// Delivered must reach this share of offered deliveries.
pub const DELIVERED_SHARE: f64 = 0.99;
/// The servers commit fan-out offsets once a second, so a keeping-up group's lag reads
/// up to this many seconds of traffic, and sampling can make it drift by as much.
pub const LAG_COMMIT_S: f64 = 1.0;
/// Lag growth over the measured phase that counts as growing, in seconds of traffic:
/// twice what commits and sampling alone can show.
pub const LAG_GROWTH_S: f64 = 2.0 * LAG_COMMIT_S;
/// Lag growth never judged below this many messages (a handful of messages at low rates).
pub const LAG_GROWTH_FLOOR: f64 = 20.0;

/// The measured phase on the run's timeline: `(start, end)` in seconds since the start.
fn measured_window(s: &Summary) -> Option<(f64, f64)> {
    let mut points = s.timeline.iter().filter(|p| p.phase == Phase::Measure);
    let first = points.next()?;
    let last = points.next_back().unwrap_or(first);
    Some((first.t_s - first.interval_s, last.t_s))
}

/// Judges one step; `offered` is what the step's plan asked for.
pub fn judge(s: &Summary, offered: &Offered) -> StepVerdict {
    let mut checks = vec![harness(s)];
    let window = measured_window(s);
    for v in s.slo.iter().filter(|v| v.name != "harness_lag_ms") {
        if v.name == "max_unsent" {
            checks.push(unsent(v, offered));
        } else {
            checks.push(slo(s, v, window));
        }
    }
    checks.push(delivered(s, offered));
    checks.push(lost(s));
    checks.push(lag_growth(s, window));
    let harness_bound = !checks[0].passed;
    let passed = checks.iter().all(|c| c.passed);
    // Earliest onset first; without one, in the order of `checks`.
    let first_failed = checks
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.passed)
        .min_by(|(i, a), (j, b)| {
            let key = |c: &Check| c.onset_s.unwrap_or(f64::INFINITY);
            key(a).total_cmp(&key(b)).then(i.cmp(j))
        })
        .map(|(_, c)| c.name.clone());
    let first_failed = if harness_bound {
        Some("harness".to_string())
    } else {
        first_failed
    };
    StepVerdict {
        passed,
        harness_bound,
        checks,
        first_failed,
    }
}

fn check(name: &str, passed: bool, measured: f64, bound: Bound, limit: f64, unit: &str) -> Check {
    Check {
        name: name.into(),
        passed,
        judged: true,
        measured,
        bound,
        limit,
        unit: unit.into(),
        onset_s: None,
        detail: String::new(),
    }
}

fn fmt(v: f64) -> String {
    crate::report::format_number(v)
}

/// Milliseconds to one decimal, without a trailing `.0`: `412`, `68.6`.
fn fmt_ms(v: f64) -> String {
    fmt((v * 10.0).round() / 10.0)
}

fn harness(s: &Summary) -> Check {
    let Some(h) = &s.harness else {
        let mut c = check("harness", true, 0.0, Bound::AtMost, 0.0, "ms");
        c.judged = false;
        c.detail = "harness load not recorded (summary version 1)".into();
        return c;
    };
    let lag_ms = h.loop_lag_p99_us.map_or(0.0, |us| us as f64 / 1000.0);
    let mut c = check(
        "harness",
        !h.bound,
        lag_ms,
        Bound::AtMost,
        h.limit_ms,
        "ms event-loop lag p99",
    );
    c.detail = format!(
        "harness event loop {} ms late at p99 {} {} ms",
        fmt_ms(lag_ms),
        if h.bound { ">" } else { "<=" },
        fmt(h.limit_ms)
    );
    c
}

/// A short name for an SLO in sentences: `p99_ms` → `p99`, `p999_ms` → `p99.9`.
pub fn slo_label(name: &str) -> String {
    match name {
        "p999_ms" => "p99.9".into(),
        n => n.strip_suffix("_ms").unwrap_or(n).to_string(),
    }
}

fn slo(s: &Summary, v: &SloVerdict, window: Option<(f64, f64)>) -> Check {
    let mut c = check(&v.name, v.passed, v.measured, v.bound, v.limit, &v.unit);
    let failed_symbol = match v.bound {
        Bound::AtMost => ">",
        Bound::AtLeast => "<",
    };
    let (symbol, unit) = (
        if v.passed {
            v.bound.symbol()
        } else {
            failed_symbol
        },
        if v.unit == "ms" { " ms" } else { "" },
    );
    let value = if v.unit == "ms" { fmt_ms } else { fmt };
    c.detail = format!(
        "{} {}{unit} {symbol} {}{unit}",
        slo_label(&v.name),
        value(v.measured),
        value(v.limit)
    );
    if v.measured < 0.0 {
        c.judged = false;
        c.detail = format!("{} not measured ({})", slo_label(&v.name), v.unit);
    }
    // Latency: the first measured second whose own percentile crossed the limit. The
    // timeline keeps p50 and p99 per second; a per-second p99 beyond the p99.9 limit
    // shows that failure too.
    if !v.passed {
        if let Some((start, _)) = window {
            let per_second = |p: &crate::report::TimelinePoint| match v.name.as_str() {
                "p50_ms" => p.p50_us,
                "p99_ms" | "p999_ms" => p.p99_us,
                _ => None,
            };
            c.onset_s = s
                .measured_timeline()
                .find(|p| per_second(p).is_some_and(|us| us as f64 / 1000.0 > v.limit))
                .map(|p| (p.t_s - start).max(0.0));
        }
    }
    c
}

fn unsent(v: &SloVerdict, offered: &Offered) -> Check {
    let slots = f64::from(offered.sending_slots);
    let limit = v.limit + slots;
    let passed = v.measured <= limit;
    let mut c = check(&v.name, passed, v.measured, v.bound, limit, &v.unit);
    c.detail = format!(
        "{} sends due but not sent {} {} (the scenario's {} plus one per sending slot at the end of sending)",
        fmt(v.measured),
        if passed { "<=" } else { ">" },
        fmt(limit),
        fmt(v.limit)
    );
    c
}

fn delivered(s: &Summary, offered: &Offered) -> Check {
    let points: Vec<_> = s.measured_timeline().collect();
    let window_s: f64 = points.iter().map(|p| p.interval_s).sum();
    // Arrivals come a room's worth at a time: one message early or late at each edge of
    // the window is not a shortfall.
    let slack = 2.0 * f64::from(offered.largest_room);
    let need = |secs: f64| DELIVERED_SHARE * offered.deliveries_per_s * secs - slack;
    let (measured, passed, onset) = if window_s > 0.0 {
        let arrived: u64 = points.iter().map(|p| p.delivered).sum();
        let mut cum = (0u64, 0.0f64);
        let mut onset = None;
        for p in &points {
            cum = (cum.0 + p.delivered, cum.1 + p.interval_s);
            if onset.is_none() && (cum.0 as f64) < need(cum.1) {
                onset = Some(cum.1);
            }
        }
        let passed = arrived as f64 >= need(window_s);
        (arrived as f64 / window_s, passed, onset)
    } else {
        let secs = s.phases.measured_s;
        let passed = s.throughput.delivered_per_s * secs >= need(secs);
        (s.throughput.delivered_per_s, passed, None)
    };
    let limit = DELIVERED_SHARE * offered.deliveries_per_s;
    let mut c = check(
        "delivered",
        passed,
        measured,
        Bound::AtLeast,
        limit,
        "deliveries/s",
    );
    c.onset_s = if passed { None } else { onset };
    let share = if offered.deliveries_per_s > 0.0 {
        100.0 * measured / offered.deliveries_per_s
    } else {
        100.0
    };
    c.detail = format!(
        "delivered {}/s = {:.1} % of {}/s offered",
        crate::report::format_rate(measured),
        share,
        crate::report::format_rate(offered.deliveries_per_s)
    );
    c
}

fn lost(s: &Summary) -> Check {
    let missing =
        s.db.as_ref()
            .and_then(|d| d.audit.as_ref())
            .map_or(0, |a| a.missing);
    let lost = s.integrity.lost;
    let mut c = check(
        "lost",
        lost == 0 && missing == 0,
        (lost + missing) as f64,
        Bound::AtMost,
        0.0,
        "deliveries lost + messages missing from the database",
    );
    c.detail = match (lost, missing) {
        (0, 0) => "nothing lost".into(),
        (l, 0) => format!("{l} deliveries lost"),
        (0, m) => format!("{m} sent messages missing from the database"),
        (l, m) => format!("{l} deliveries lost, {m} messages missing from the database"),
    };
    c
}

/// Theil–Sen slope of `(t, y)` points, per second: the median of the slopes between
/// every pair of points at different times. `None` with fewer than three points.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let mut slopes = Vec::with_capacity(points.len() * (points.len() - 1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let n = slopes.len();
    Some(if n % 2 == 1 {
        slopes[n / 2]
    } else {
        (slopes[n / 2 - 1] + slopes[n / 2]) / 2.0
    })
}

fn lag_growth(s: &Summary, window: Option<(f64, f64)>) -> Check {
    let limit = (LAG_GROWTH_S * s.throughput.sent_per_s).max(LAG_GROWTH_FLOOR);
    let mut c = check(
        "kafka_lag_growth",
        true,
        0.0,
        Bound::AtMost,
        limit,
        "messages of lag gained over the measured phase",
    );
    let (Some(kafka), Some((start, end))) = (&s.kafka, window) else {
        c.judged = false;
        c.detail = "Kafka lag not sampled".into();
        return c;
    };
    let mut worst: Option<(String, f64)> = None;
    for g in &kafka.groups {
        let points: Vec<(f64, f64)> = g
            .samples
            .iter()
            .filter(|p| p.t_s >= start && p.t_s <= end)
            .map(|p| (p.t_s, p.total_lag as f64))
            .collect();
        if let Some(k) = slope(&points) {
            let growth = k * (end - start);
            if worst.as_ref().is_none_or(|(_, w)| growth > *w) {
                worst = Some((g.group.clone(), growth));
            }
        }
    }
    let Some((group, growth)) = worst else {
        c.judged = false;
        c.detail = "too few Kafka lag samples in the measured phase for a slope".into();
        return c;
    };
    c.measured = growth;
    c.passed = growth <= limit;
    c.detail = format!(
        "Kafka lag of {group} {} by {} messages over the step (limit {})",
        if growth >= 0.0 { "grew" } else { "fell" },
        fmt(growth.abs().round()),
        fmt(limit.round())
    );
    c
}

/// A step's summary for tests: 5 s ramp, 5 s warm-up, 20 s measured, 5 s grace; every
/// second delivers `delivered` deliveries; lag saws between
/// 0 and one second of traffic (offsets committed once a second, aliased by sampling
/// into a slow ramp); nothing lost; a punctual harness; a p99 of 9 ms against 50 ms.
#[cfg(test)]
pub(crate) fn steady_summary(messages: f64, delivered: f64) -> Summary {
    use crate::report::{HarnessLoad, LagSample, TimelinePoint};
    let mut s = Summary::sample();
    s.phases.ramp_s = 5.0;
    s.phases.warmup_s = 5.0;
    s.phases.measured_s = 20.0;
    s.phases.grace_s = 5.0;
    s.timeline = (1..=35)
        .map(|t| {
            let phase = match t {
                1..=5 => Phase::Ramp,
                6..=10 => Phase::Warmup,
                11..=30 => Phase::Measure,
                _ => Phase::Grace,
            };
            TimelinePoint {
                t_s: t as f64,
                interval_s: 1.0,
                phase,
                sent: messages as u64,
                delivered: delivered as u64,
                sessions: 40,
                errors: 0,
                p50_us: Some(2_000),
                p99_us: Some(9_000),
                harness_rss_bytes: None,
            }
        })
        .collect();
    s.throughput.sent_per_s = messages;
    s.throughput.delivered_per_s = delivered;
    s.integrity.lost = 0;
    s.integrity.loss_ratio = 0.0;
    if let Some(kafka) = s.kafka.as_mut() {
        for g in &mut kafka.groups {
            g.samples = (1..=35)
                .map(|t| LagSample {
                    t_s: t as f64 + 0.3,
                    total_lag: ((t as f64 * 0.03).fract() * messages) as u64,
                    partitions: Vec::new(),
                })
                .collect();
        }
    }
    s.slo = vec![SloVerdict::new("p99_ms", Bound::AtMost, 50.0, 9.0, "ms")];
    s.harness = Some(HarnessLoad {
        send_lag_p99_us: Some(500),
        send_lag_max_us: Some(2_000),
        loop_lag_p99_us: Some(1_000),
        loop_lag_max_us: Some(3_000),
        limit_ms: 50.0,
        bound: false,
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFERED: f64 = 4_000.0; // deliveries/s
    const MESSAGES: f64 = 100.0; // msg/s, rooms of 40

    fn offered() -> Offered {
        Offered {
            messages_per_s: MESSAGES,
            deliveries_per_s: OFFERED,
            users: 40,
            rooms: 1,
            largest_room: 40,
            sending_slots: 4,
        }
    }

    fn steady() -> Summary {
        steady_summary(MESSAGES, OFFERED)
    }

    fn check<'a>(v: &'a StepVerdict, name: &str) -> &'a Check {
        v.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no {name} check in {v:?}"))
    }

    #[test]
    fn a_step_that_kept_up_passes_every_check() {
        let v = judge(&steady(), &offered());
        assert!(v.passed, "{v:#?}");
        assert!(!v.harness_bound);
        assert_eq!(v.first_failed, None);
        let names: Vec<&str> = v.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["harness", "p99_ms", "delivered", "lost", "kafka_lag_growth"]
        );
        assert!(v.checks.iter().all(|c| c.judged), "{v:#?}");
    }

    #[test]
    fn a_late_event_loop_makes_the_step_harness_bound_whatever_else_failed() {
        let mut s = steady();
        let h = s.harness.as_mut().unwrap();
        h.loop_lag_p99_us = Some(80_000);
        h.bound = true;
        // The late harness also made the latency fail, earlier on the timeline.
        s.slo = vec![SloVerdict::new("p99_ms", Bound::AtMost, 50.0, 90.0, "ms")];
        s.timeline[12].p99_us = Some(90_000);
        let v = judge(&s, &offered());
        assert!(!v.passed && v.harness_bound, "{v:#?}");
        assert_eq!(v.first_failed.as_deref(), Some("harness"));
        assert!(check(&v, "harness").detail.contains("80 ms"), "{v:#?}");
    }

    #[test]
    fn lag_growing_across_the_step_fails_by_its_slope_not_one_sample() {
        // High samples (a rebalance blip) near the end of a flat series: not growing.
        let mut s = steady();
        for i in [26, 27] {
            s.kafka.as_mut().unwrap().groups[0].samples[i].total_lag = 5_000;
        }
        let v = judge(&s, &offered());
        assert!(check(&v, "kafka_lag_growth").passed, "{v:#?}");
        // Growing by 30 messages a second over 20 s: 600 gained (plus the 60 of the
        // aliased sawtooth), limit 2 s × 100 msg/s.
        let mut s = steady();
        for p in &mut s.kafka.as_mut().unwrap().groups[1].samples {
            p.total_lag += (30.0 * p.t_s) as u64;
        }
        let v = judge(&s, &offered());
        let c = check(&v, "kafka_lag_growth");
        assert!(!c.passed, "{v:#?}");
        assert!((c.measured - 660.0).abs() < 10.0, "{c:?}");
        assert_eq!(c.limit, 200.0);
        assert!(c.detail.contains("stompede-server-2"), "{c:?}");
        assert_eq!(v.first_failed.as_deref(), Some("kafka_lag_growth"));
    }

    #[test]
    fn delivered_below_99_percent_of_offered_fails_with_its_onset() {
        let mut s = steady();
        for p in s.timeline.iter_mut().filter(|p| p.phase == Phase::Measure) {
            if p.t_s >= 20.0 {
                p.delivered = (OFFERED * 0.9) as u64;
            }
        }
        let v = judge(&s, &offered());
        let c = check(&v, "delivered");
        assert!(!c.passed, "{v:#?}");
        // 9 s at 100 % then 90 %: the cumulative shortfall passes 1 % plus two rooms'
        // worth of slack (80) in the 11th measured second.
        assert_eq!(c.onset_s, Some(11.0), "{c:?}");
        // 99.5 % throughout passes.
        let mut s = steady();
        for p in &mut s.timeline {
            p.delivered = (OFFERED * 0.995) as u64;
        }
        assert!(check(&judge(&s, &offered()), "delivered").passed);
    }

    #[test]
    fn the_criterion_that_showed_first_is_named_first() {
        let mut s = steady();
        // p99 crosses its limit in the 3rd measured second ...
        s.slo = vec![SloVerdict::new("p99_ms", Bound::AtMost, 50.0, 400.0, "ms")];
        for p in s.timeline.iter_mut().filter(|p| p.t_s >= 13.0) {
            p.p99_us = Some(400_000);
        }
        // ... deliveries fall short from the 10th; and something was lost.
        for p in s
            .timeline
            .iter_mut()
            .filter(|p| p.t_s >= 20.0 && p.t_s <= 30.0)
        {
            p.delivered = (OFFERED * 0.5) as u64;
        }
        s.integrity.lost = 7;
        let v = judge(&s, &offered());
        assert_eq!(v.first_failed.as_deref(), Some("p99_ms"), "{v:#?}");
        assert_eq!(check(&v, "p99_ms").onset_s, Some(3.0));
        assert_eq!(check(&v, "p99_ms").detail, "p99 400 ms > 50 ms");
        assert!(!check(&v, "lost").passed);
        // Without a latency failure, the delivered shortfall (with an onset) comes first,
        // then the whole-step figures in order.
        s.slo = vec![SloVerdict::new("p99_ms", Bound::AtMost, 500.0, 400.0, "ms")];
        let v = judge(&s, &offered());
        assert_eq!(v.first_failed.as_deref(), Some("delivered"), "{v:#?}");
        for p in &mut s.timeline {
            p.delivered = OFFERED as u64;
        }
        let v = judge(&s, &offered());
        assert_eq!(v.first_failed.as_deref(), Some("lost"), "{v:#?}");
        assert_eq!(check(&v, "lost").detail, "7 deliveries lost");
    }

    #[test]
    fn one_unsent_send_per_sending_slot_is_the_end_of_sending_not_falling_behind() {
        let mut s = steady();
        s.slo.push(SloVerdict::new(
            "max_unsent",
            Bound::AtMost,
            0.0,
            4.0,
            "sends",
        ));
        let v = judge(&s, &offered());
        assert!(check(&v, "max_unsent").passed, "{v:#?}");
        s.slo[1] = SloVerdict::new("max_unsent", Bound::AtMost, 0.0, 5.0, "sends");
        let v = judge(&s, &offered());
        let c = check(&v, "max_unsent");
        assert!(!c.passed && c.limit == 4.0, "{c:?}");
        assert_eq!(v.first_failed.as_deref(), Some("max_unsent"));
    }

    #[test]
    fn without_lag_samples_the_lag_check_is_not_judged() {
        let mut s = steady();
        s.kafka = None;
        let v = judge(&s, &offered());
        let c = check(&v, "kafka_lag_growth");
        assert!(c.passed && !c.judged, "{c:?}");
    }

    #[test]
    fn slope_is_the_median_pairwise_slope() {
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 3.0)]), None);
        let k = slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 7.0)]).unwrap();
        assert!((k - 2.0).abs() < 1e-12);
        // One wild point does not move it.
        let k = slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0), (3.0, 7.0), (4.0, 900.0)]).unwrap();
        assert!((k - 2.0).abs() < 1e-12, "{k}");
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
    }
}
