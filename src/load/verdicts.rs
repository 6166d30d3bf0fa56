//! The verdict on a run: the scenario's SLOs, and whether the load it asked for was
//! applied at all.
//!
//! Two checks always apply, whatever `[slo]` says: `min_connected` (the fraction of
//! users that connected and subscribed) and `max_unsent` (open-model sends still due
//! when sending ended). A third, `harness_lag_ms`, fails the run when the harness's own
//! event loop woke late ([`HARNESS_LAG_LIMIT_MS`] at p99 over the measured phase): then
//! the harness, not the target, was the limit, and the report says "harness-bound".

use hdrhistogram::Histogram;

use crate::load::RunContext;
use crate::report::{Bound, HarnessLoad, LatencySummary, SloVerdict};

/// Event-loop lag (p99, measured phase) beyond which a run is harness-bound.
pub const HARNESS_LAG_LIMIT_MS: f64 = 50.0;

/// The figures the verdicts judge.
pub struct Measured<'a> {
    pub latency: &'a LatencySummary,
    pub loss: f64,
    pub duplicates: u64,
    pub max_lag: Option<u64>,
    /// Users that connected and subscribed.
    pub subscribed: u64,
    pub unsent: u64,
    pub harness: &'a HarnessLoad,
}

/// The harness's own load from its send-lag and event-loop-lag histograms.
pub fn harness_load(send_lag: &Histogram<u64>, loop_lag: &Histogram<u64>) -> HarnessLoad {
    let p99 = |h: &Histogram<u64>| (!h.is_empty()).then(|| h.value_at_quantile(0.99));
    let max = |h: &Histogram<u64>| (!h.is_empty()).then(|| h.max());
    let loop_lag_p99_us = p99(loop_lag);
    HarnessLoad {
        send_lag_p99_us: p99(send_lag),
        send_lag_max_us: max(send_lag),
        loop_lag_p99_us,
        loop_lag_max_us: max(loop_lag),
        limit_ms: HARNESS_LAG_LIMIT_MS,
        bound: loop_lag_p99_us.is_some_and(|us| us as f64 / 1000.0 > HARNESS_LAG_LIMIT_MS),
    }
}

pub fn verdicts(ctx: &RunContext, m: &Measured<'_>) -> Vec<SloVerdict> {
    let slo = &ctx.scenario.slo;
    let ms = |us: u64| us as f64 / 1000.0;
    let latency = m.latency;
    let mut v = Vec::new();
    let planned = ctx.plan.users.len() as f64;
    v.push(SloVerdict::new(
        "min_connected",
        Bound::AtLeast,
        slo.min_connected,
        if planned > 0.0 {
            m.subscribed as f64 / planned
        } else {
            1.0
        },
        "of users",
    ));
    v.push(SloVerdict::new(
        "max_unsent",
        Bound::AtMost,
        slo.max_unsent as f64,
        m.unsent as f64,
        "sends",
    ));
    v.push(SloVerdict::new(
        "harness_lag_ms",
        Bound::AtMost,
        m.harness.limit_ms,
        m.harness.loop_lag_p99_us.map_or(0.0, ms),
        "ms",
    ));
    if let Some(limit) = slo.p50_ms {
        v.push(SloVerdict::new(
            "p50_ms",
            Bound::AtMost,
            limit,
            ms(latency.corrected.p50_us),
            "ms",
        ));
    }
    if let Some(limit) = slo.p99_ms {
        v.push(SloVerdict::new(
            "p99_ms",
            Bound::AtMost,
            limit,
            ms(latency.corrected.p99_us),
            "ms",
        ));
    }
    if let Some(limit) = slo.p999_ms {
        v.push(SloVerdict::new(
            "p999_ms",
            Bound::AtMost,
            limit,
            ms(latency.corrected.p999_us),
            "ms",
        ));
    }
    if let Some(limit) = slo.max_loss {
        v.push(SloVerdict::new(
            "max_loss",
            Bound::AtMost,
            limit,
            m.loss,
            "ratio",
        ));
    }
    if let Some(limit) = slo.max_duplicates {
        v.push(SloVerdict::new(
            "max_duplicates",
            Bound::AtMost,
            limit as f64,
            m.duplicates as f64,
            "messages",
        ));
    }
    if let Some(limit) = slo.max_kafka_lag {
        // Without lag samples the SLO cannot be shown to hold: it fails, measured -1.
        let verdict = match m.max_lag {
            Some(lag) => SloVerdict::new(
                "max_kafka_lag",
                Bound::AtMost,
                limit as f64,
                lag as f64,
                "messages",
            ),
            None => {
                let mut verdict = SloVerdict::new(
                    "max_kafka_lag",
                    Bound::AtMost,
                    limit as f64,
                    -1.0,
                    "messages (not sampled)",
                );
                verdict.passed = false;
                verdict
            }
        };
        v.push(verdict);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harness_bound_only_when_the_loop_is_late() {
        let mut send = crate::load::stats::histogram();
        let mut looped = crate::load::stats::histogram();
        for _ in 0..1000 {
            send.record(400_000).unwrap(); // sends 400 ms late: a server pushing back
            looped.record(2_000).unwrap();
        }
        let h = harness_load(&send, &looped);
        assert!(!h.bound, "{h:?}");
        for _ in 0..100 {
            looped.record(80_000).unwrap();
        }
        let h = harness_load(&send, &looped);
        assert!(h.bound, "{h:?}");
        let empty = crate::load::stats::histogram();
        assert!(!harness_load(&empty, &empty).bound);
    }
}
