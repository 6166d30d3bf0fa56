//! The run's clock: once every 100 ms it moves the run through its phases (ramp →
//! warm-up → measure → grace) and applies churn; once a second it drains the users'
//! histograms into the run totals, appends a timeline point, writes the second's
//! histogram to the interval log, samples the harness's and servers' resources, and
//! prints the status line.
//!
//! Nothing here grows with the length of the run except the timeline (one small point a
//! second) and, in runs with faults, the capped per-second sequence snapshots
//! (`crate::fault::outage`): per-second histograms go to the interval log as each
//! second closes.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::load::hlog::IntervalLog;
use crate::load::progress::Progress;
use crate::load::resources::Tracker;
use crate::load::stats::{self, Recorder, Totals};
use crate::load::{vu, RunContext, Schedule};
use crate::report::{Phase, TimelinePoint};

/// What the aggregator built over the run.
pub struct Aggregated {
    pub totals: Totals,
    pub timeline: Vec<TimelinePoint>,
    pub schedule: Option<Schedule>,
    pub ramp_end_s: f64,
}

/// Runs the clock until the end of the grace period.
pub async fn run(
    ctx: &Arc<RunContext>,
    schedule_tx: &watch::Sender<Option<Schedule>>,
    control: &(dyn Fn(u32, vu::Control) + Sync),
    progress: &Progress,
    hlog: &mut Option<IntervalLog>,
    resources: &mut Tracker,
) -> Aggregated {
    let users = ctx.plan.users.len();
    let mut totals = Totals::default();
    let mut timeline = Vec::new();
    let mut interval = Recorder::empty_interval();
    let mut rng = rand::rngs::StdRng::seed_from_u64(ctx.scenario.seed ^ 0xc0ffee);
    let mut churn_budget = 0.0f64;
    let ramp_limit = ctx
        .scenario
        .ramp_up()
        .saturating_add(Duration::from_secs(30));
    let mut schedule: Option<Schedule> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_point = Instant::now();
    let mut ramp_end_s = 0.0;
    loop {
        tick.tick().await;
        let now_us = ctx.t0.elapsed().as_micros() as u64;
        if schedule.is_none() {
            let all_ready = ctx.ready.load(Relaxed) as usize >= users;
            if all_ready || ctx.t0.elapsed() > ramp_limit {
                if !all_ready {
                    ctx.warnings.warn(
                        "ramp-up took longer than planned (30 s past it); the run started with the users that were ready",
                        &format!("{} of {users} ready", ctx.ready.load(Relaxed)),
                    );
                }
                // Without receipts there is no confirmation that subscriptions are in
                // place: give the servers a moment before the first send.
                let settle = if ctx.receipts { 200_000 } else { 1_000_000 };
                let send_start_us = now_us + settle;
                let measure_start_us = send_start_us + ctx.scenario.warmup.as_micros() as u64;
                let s = Schedule {
                    send_start_us,
                    measure_start_us,
                    send_end_us: measure_start_us + ctx.scenario.duration.as_micros() as u64,
                };
                ramp_end_s = now_us as f64 / 1e6;
                if let Some(t) = &ctx.tracking {
                    t.start(send_start_us);
                }
                schedule = Some(s);
                let _ = schedule_tx.send(Some(s));
            }
        }
        if let (Some(s), Some(churn)) = (schedule, &ctx.scenario.churn) {
            if now_us >= s.send_start_us && now_us < s.send_end_us && churn.leaves_per_second > 0.0
            {
                churn_budget += churn.leaves_per_second * 0.1;
                while churn_budget >= 1.0 {
                    churn_budget -= 1.0;
                    let user = rng.random_range(0..users as u32);
                    let rooms = &ctx.plan.users[user as usize].rooms;
                    if !rooms.is_empty() {
                        let room = rooms[rng.random_range(0..rooms.len())];
                        control(user, vu::Control::Leave(room));
                    }
                }
            }
        }
        // Every user has tried and none got a session: nothing can be measured.
        let nobody =
            ctx.ready.load(Relaxed) as usize >= users && ctx.recorder.connected.load(Relaxed) == 0;
        let finished = nobody
            || schedule
                .is_some_and(|s| now_us >= s.send_end_us + ctx.scenario.grace.as_micros() as u64);
        if last_point.elapsed() >= Duration::from_secs(1) || finished {
            let interval_s = last_point.elapsed().as_secs_f64();
            last_point = Instant::now();
            ctx.recorder.drain(&mut interval);
            totals.add(&interval);
            let t_s = now_us as f64 / 1e6;
            let phase = phase_at(schedule, now_us);
            let pct = |q| {
                (!interval.corrected_all.is_empty())
                    .then(|| interval.corrected_all.value_at_quantile(q))
            };
            let harness_rss_bytes = resources.sample();
            if let Some(t) = &ctx.tracking {
                t.snapshot(now_us, ctx.slots.counters());
                t.latency.close_second(now_us);
            }
            timeline.push(TimelinePoint {
                t_s,
                interval_s,
                phase,
                sent: interval.sent,
                delivered: interval.delivered,
                sessions: ctx.recorder.sessions.load(Relaxed),
                errors: interval.errors,
                p50_us: pct(0.5),
                p99_us: pct(0.99),
                harness_rss_bytes,
            });
            if let Some(log) = hlog.as_mut() {
                log.write(t_s - interval_s, interval_s, &interval.corrected_all);
            }
            progress.line(t_s, phase, ctx, &interval, interval_s, &totals);
        }
        if finished {
            break;
        }
    }
    Aggregated {
        totals,
        timeline,
        schedule,
        ramp_end_s,
    }
}

pub fn phase_at(schedule: Option<Schedule>, us: u64) -> Phase {
    match schedule {
        None => Phase::Ramp,
        Some(s) if us < s.measure_start_us => Phase::Warmup,
        Some(s) if us < s.send_end_us => Phase::Measure,
        Some(_) => Phase::Grace,
    }
}

/// How often the event-loop probe asks to be woken.
pub const PROBE_PERIOD: Duration = Duration::from_millis(10);

/// Measures how late the runtime wakes a timer, over the measured phase, until
/// `ctx.stop`. A harness short of CPU wakes its users late, and this probe with them;
/// users waiting on a slow server's socket do not delay it.
pub async fn probe_loop_lag(ctx: Arc<RunContext>) -> Histogram<u64> {
    let mut lag = stats::histogram();
    let schedule = ctx.schedule.clone();
    loop {
        let want = Instant::now() + PROBE_PERIOD;
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            _ = tokio::time::sleep_until(want.into()) => {}
        }
        let late = Instant::now().saturating_duration_since(want).as_micros() as u64;
        let now_us = ctx.t0.elapsed().as_micros() as u64;
        if let Some(s) = *schedule.borrow() {
            if s.measured(now_us) {
                let _ = lag.record(late.clamp(1, stats::MAX_LATENCY_US));
            }
        }
    }
    lag
}
