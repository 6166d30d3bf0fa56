//! The load run: a scenario's virtual users against a target, measured end to end.
//!
//! Data flow: [`run`] resolves the target ([`target`]), plans users and rooms, and
//! spawns one task per virtual user ([`vu`]). Users record into the shared
//! [`stats::Recorder`]; once a second the aggregator loop here drains it into the run
//! totals and the timeline, drives churn, prints the status line and moves the run
//! through its phases (ramp → warm-up → measure → grace). The Kafka lag and database
//! samplers ([`samplers`]) run beside it. At the end every user hands back its
//! membership records, [`integrity`] turns them into exact loss/duplicate counts, and
//! [`summary`] builds the report model that `crate::report` renders.

pub mod integrity;
pub mod samplers;
pub mod stamp;
pub mod stats;
pub mod summary;
pub mod target;
pub mod vu;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::client::ConnectOptions;
use crate::report::{Phase, Summary, TimelinePoint};
use crate::scenario::{Plan, Scenario};
use integrity::{Slots, Tally};
use stats::{Recorder, Totals};

/// When sending starts, when the measured phase starts, when sending stops (µs since t0).
#[derive(Debug, Clone, Copy, Default)]
pub struct Schedule {
    pub send_start_us: u64,
    pub measure_start_us: u64,
    pub send_end_us: u64,
}

impl Schedule {
    /// Whether a message intended at `us` belongs to the measured phase.
    pub fn measured(&self, us: u64) -> bool {
        us >= self.measure_start_us && us < self.send_end_us
    }
}

/// Everything the virtual users share.
pub struct RunContext {
    pub run_id: String,
    /// `stamp::marker(run_id)`, what every stamped text starts with.
    pub marker: String,
    pub t0: Instant,
    pub scenario: Scenario,
    pub plan: Plan,
    pub urls: Vec<String>,
    pub slots: Slots,
    pub recorder: Recorder,
    pub connect: ConnectOptions,
    /// Whether SENDs and SUBSCRIBEs ask for receipts.
    pub receipts: bool,
    pub schedule: watch::Receiver<Option<Schedule>>,
    /// Users done with connecting and subscribing (successfully or not).
    pub ready: AtomicU64,
    /// Fires at the end of the grace period.
    pub stop: CancellationToken,
    pub churn_rejoin: Duration,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Reports land in `<out>/<scenario>-<UTC timestamp>/`.
    pub out: PathBuf,
    /// State directory of the local stack.
    pub state_dir: PathBuf,
    /// The binary local servers are started from.
    pub server_exe: PathBuf,
    /// Print the live status line.
    pub progress: bool,
}

/// What a finished run produced.
pub struct RunOutcome {
    pub summary: Summary,
    pub dir: PathBuf,
}

/// Why a run could not be carried out (as opposed to an SLO failing).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Target(#[from] target::TargetError),
    #[error("cannot write the report to {dir}: {source}")]
    Report {
        dir: PathBuf,
        source: crate::report::ReportError,
    },
    #[error("every one of the {0} virtual users failed to connect; is the target up? (see the warnings above)")]
    NoSessions(u64),
}

/// Runs `scenario` and writes its report.
pub async fn run(scenario: Scenario, options: &RunOptions) -> Result<RunOutcome, LoadError> {
    let started_at = chrono::Utc::now();
    let mut target = target::resolve(&scenario, options).await?;
    let outcome = drive(scenario, options, &target, started_at).await;
    target.release().await;
    outcome
}

async fn drive(
    scenario: Scenario,
    options: &RunOptions,
    target: &target::Resolved,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Result<RunOutcome, LoadError> {
    let run_id = format!("{:08x}", rand::random::<u32>());
    let plan = scenario.plan();
    let room_senders: Vec<Vec<u32>> = plan.rooms.iter().map(|r| r.senders.clone()).collect();
    let heartbeat = scenario.users.heartbeat.as_millis() as u64;
    let mut headers = Vec::new();
    let c = &scenario.target.connect;
    headers.push((
        "host".to_string(),
        c.host.clone().unwrap_or_else(|| "localhost".into()),
    ));
    if let Some(login) = &c.login {
        headers.push(("login".into(), login.clone()));
    }
    if let Some(passcode) = &c.passcode {
        headers.push(("passcode".into(), passcode.clone()));
    }
    let connect = ConnectOptions {
        heartbeat: (heartbeat, heartbeat),
        headers,
        ..ConnectOptions::default()
    };
    let (schedule_tx, schedule_rx) = watch::channel(None);
    let users = plan.users.len();
    let ctx = Arc::new(RunContext {
        marker: stamp::marker(&run_id),
        run_id: run_id.clone(),
        t0: Instant::now(),
        receipts: scenario.receipts_expected(),
        churn_rejoin: scenario
            .churn
            .as_ref()
            .map_or(Duration::ZERO, |c| c.rejoin_after),
        slots: Slots::new(&room_senders),
        recorder: Recorder::new(64),
        urls: target.urls.clone(),
        connect,
        schedule: schedule_rx,
        ready: AtomicU64::new(0),
        stop: CancellationToken::new(),
        plan,
        scenario,
    });
    let samplers = target.start_samplers(ctx.t0, ctx.stop.child_token()).await;

    // `users.per_task` users share one task: their state machines are polled together
    // (join_all), which costs less than a task each when there are tens of thousands.
    let mut controls = Vec::with_capacity(users);
    let mut handles = Vec::new();
    let per_task = ctx.scenario.users.per_task.max(1) as usize;
    let mut group = Vec::with_capacity(per_task);
    for index in 0..users as u32 {
        let (tx, rx) = mpsc::channel(4);
        controls.push(tx);
        group.push(vu::run(ctx.clone(), index, rx));
        if group.len() == per_task || index as usize == users - 1 {
            let users_of_task = std::mem::take(&mut group);
            handles.push(tokio::spawn(futures_util::future::join_all(users_of_task)));
        }
    }

    // The aggregator: one tick a second, phases, churn, status line.
    let progress = Progress::new(options.progress);
    let mut totals = Totals::default();
    let mut timeline = Vec::new();
    let mut intervals: Vec<(f64, Histogram<u64>)> = Vec::new();
    let mut interval = Recorder::empty_interval();
    let mut rng = rand::rngs::StdRng::seed_from_u64(ctx.scenario.seed ^ 0xc0ffee);
    let mut churn_budget = 0.0f64;
    let ramp_limit = ctx.scenario.ramp_up() + Duration::from_secs(30);
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
                    tracing::warn!(
                        "ramp-up took longer than planned; starting with {} of {users} users ready",
                        ctx.ready.load(Relaxed)
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
                        let _ = controls[user as usize].try_send(vu::Control::Leave(room));
                    }
                }
            }
        }
        let finished = schedule
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
            });
            intervals.push((t_s - interval_s, interval.corrected_all.clone()));
            progress.line(t_s, phase, &ctx, &interval, interval_s, &totals);
        }
        if finished {
            break;
        }
    }
    ctx.stop.cancel();
    progress.done();

    let mut tally = Tally::default();
    for handle in handles {
        for mut report in handle.await.unwrap_or_default() {
            for (room, membership) in report.memberships.iter_mut() {
                tally.add(membership, *room, &ctx.slots);
            }
        }
    }
    let connected = ctx.recorder.connected.load(Relaxed);
    if connected == 0 {
        return Err(LoadError::NoSessions(users as u64));
    }
    let sampled = samplers.finish(&run_id, totals.sent).await;
    let schedule = schedule.unwrap_or_default();
    let summary = summary::build(summary::Inputs {
        ctx: &ctx,
        target,
        started_at,
        schedule,
        ramp_end_s,
        totals: &totals,
        tally,
        timeline,
        sampled,
    });
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let dir = options.out.join(format!("{}-{stamp}", ctx.scenario.name));
    let mut summary = summary;
    summary.files.histogram_log = summary::write_histogram_log(&dir, &intervals).ok();
    crate::report::write_report(&summary, &dir).map_err(|source| LoadError::Report {
        dir: dir.clone(),
        source,
    })?;
    let summary = Summary::load(&dir.join(crate::report::SUMMARY_FILE)).unwrap_or(summary);
    Ok(RunOutcome { summary, dir })
}

fn phase_at(schedule: Option<Schedule>, us: u64) -> Phase {
    match schedule {
        None => Phase::Ramp,
        Some(s) if us < s.measure_start_us => Phase::Warmup,
        Some(s) if us < s.send_end_us => Phase::Measure,
        Some(_) => Phase::Grace,
    }
}

/// The live status line: rewritten in place on a terminal, one line every 5 s otherwise.
struct Progress {
    enabled: bool,
    tty: bool,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn line(
        &self,
        t_s: f64,
        phase: Phase,
        ctx: &RunContext,
        i: &stats::Interval,
        interval_s: f64,
        totals: &Totals,
    ) {
        if !self.enabled || (!self.tty && (t_s as u64) % 5 != 0) {
            return;
        }
        let per_s = |n: u64| n as f64 / interval_s.max(1e-3);
        let p99 = if totals.corrected.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.1} ms",
                totals.corrected.value_at_quantile(0.99) as f64 / 1000.0
            )
        };
        let text = format!(
            "[{:>5.0}s {:<7}] sessions {}/{}  sent {:.0}/s  delivered {:.0}/s  errors {}  p99 so far {}",
            t_s,
            phase.as_str(),
            ctx.recorder.sessions.load(Relaxed),
            ctx.plan.users.len(),
            per_s(i.sent),
            per_s(i.delivered),
            ctx.recorder.errors.load(Relaxed),
            p99
        );
        if self.tty {
            eprint!("\r\x1b[2K{text}");
        } else {
            eprintln!("{text}");
        }
    }

    fn done(&self) {
        if self.enabled && self.tty {
            eprintln!();
        }
    }
}
