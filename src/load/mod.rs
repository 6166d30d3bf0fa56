//! The load run: a scenario's virtual users against a target, measured end to end.
//!
//! Data flow: [`run`] checks that this process may open what the scenario needs
//! ([`crate::limits`]), resolves the target ([`target`]), plans users and rooms, and
//! spawns the virtual users ([`vu`]). Users record into the shared [`stats::Recorder`]
//! and report trouble to [`warnings`]; the run's clock ([`aggregate`]) drains the
//! recorder once a second into the totals, the timeline and the interval log
//! ([`hlog`]), moves the run through its phases and prints the status line
//! ([`progress`]). The Kafka lag and database samplers ([`sampling`]) and an
//! event-loop probe run beside it; [`resources`] follows CPU and memory. At the end
//! every user hands back its membership records, [`integrity`] turns them into exact
//! loss/duplicate counts, [`verdicts`] judges the SLOs and whether the load was applied,
//! and [`summary`] builds the report model that `crate::report` renders.

pub mod aggregate;
pub mod hlog;
pub mod integrity;
pub mod progress;
pub mod receive;
pub mod resources;
pub mod samplers;
pub mod sampling;
pub mod send_timer;
pub mod shared_group;
pub mod stamp;
pub mod stats;
pub mod summary;
pub mod target;
pub mod verdicts;
pub mod vu;
pub mod warnings;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::ConnectOptions;
use crate::fault;
use crate::report::Summary;
use crate::scenario::{Plan, Scenario};
use integrity::{Slots, Tally};
use stats::Recorder;
use warnings::Warnings;

/// When sending starts, when the measured phase starts, when sending stops (µs since t0).
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
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
    /// Trouble during the run, counted by cause; the run log.
    pub warnings: Arc<Warnings>,
    /// What users go through while faults are on (only for scenarios with faults).
    pub tracking: Option<crate::fault::outage::Tracking>,
    /// Per room, the Kafka partition its messages use (local stack only).
    pub room_partitions: Vec<Option<u32>>,
    /// In a shard of a run: reads of the other shards' sequence counters.
    pub remote: Option<Arc<crate::shard::RemoteCounters>>,
    /// In a shard of a run spread over several hosts: per sender, whether its stamps'
    /// times are on this host's clock (see [`receive::Receiver::timed`]).
    pub timed: Option<Vec<bool>>,
    /// Sends are woken by [`send_timer`]'s thread to the microsecond (the plan sends at
    /// most [`send_timer::PRECISE_UP_TO`] messages a second), else by tokio's timer.
    pub precise_sends: bool,
}

impl RunContext {
    /// Per sender of `room`: messages numbered so far, read after this call began (so a
    /// subscription in place before it expects every number from there on). In a shard
    /// whose room has senders elsewhere, the other shards' counters are read through the
    /// coordinator; if it cannot answer, the last values heard are used (the run then
    /// fails on the lost coordinator anyway).
    pub async fn snapshot(&self, room: u32) -> HashMap<u32, u64> {
        if let Some(remote) = self
            .remote
            .as_ref()
            .filter(|_| self.slots.room_has_remote(room))
        {
            if let Some(counters) = remote.fresh().await {
                return self.slots.snapshot_of(room, &counters);
            }
        }
        self.slots.snapshot(room)
    }

    /// [`RunContext::snapshot`] for several rooms at once, from one read: one counter
    /// round across shards however many rooms, so every room's numbering is of the same
    /// moment (a broken session's rooms are all left when it broke, not one round apart).
    pub async fn snapshots(&self, rooms: &[u32]) -> HashMap<u32, HashMap<u32, u64>> {
        if let Some(remote) = self
            .remote
            .as_ref()
            .filter(|_| rooms.iter().any(|r| self.slots.room_has_remote(*r)))
        {
            if let Some(counters) = remote.fresh().await {
                return rooms
                    .iter()
                    .map(|r| (*r, self.slots.snapshot_of(*r, &counters)))
                    .collect();
            }
        }
        rooms
            .iter()
            .map(|r| (*r, self.slots.snapshot(*r)))
            .collect()
    }
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
    /// Time between Kafka lag and database samples (normally 1 s).
    pub sample_interval: Duration,
}

impl RunOptions {
    /// Options with the usual defaults: reports under `reports/`, the stack in
    /// `.stompede/`, a status line, one sample a second.
    pub fn new(server_exe: PathBuf) -> RunOptions {
        RunOptions {
            out: PathBuf::from("reports"),
            state_dir: PathBuf::from(".stompede"),
            server_exe,
            progress: true,
            sample_interval: Duration::from_secs(1),
        }
    }
}

/// Descriptors a run needs beyond one per virtual user: Kafka and PostgreSQL clients of
/// the samplers, the report's files, the runtime's own.
pub const FD_HEADROOM: u64 = 256;

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
    #[error("every one of the {0} virtual users failed to connect; is the target up? (see the warnings above; every occurrence is in {1})")]
    NoSessions(u64, PathBuf),
    #[error(
        "{users} virtual users need about {need} open files (one per session plus {FD_HEADROOM} for the harness), \
         but this process may open only {soft} (RLIMIT_NOFILE soft limit {soft}, hard limit {hard}). \
         Raise the hard limit (e.g. `ulimit -Hn {need}` as root, or LimitNOFILE= in a systemd unit), \
         or spread the users over more processes (`--shards N`; without --shards a run does so by itself)"
    )]
    OpenFiles {
        users: u64,
        need: u64,
        soft: u64,
        hard: u64,
    },
    #[error("a virtual-user task failed: {0}; the run's figures would be incomplete, so it is not judged")]
    UserTask(String),
    #[error("cannot start the relay for the scenario's network faults: {0}")]
    Relay(String),
    /// A sharded run could not be carried out.
    #[error("{0}")]
    Sharding(String),
    /// A sharded run was asked for something it cannot do.
    #[error("{0}")]
    ShardingRefused(String),
}

impl LoadError {
    /// True when the error lies in what was asked (the scenario against this machine's
    /// limits), not in carrying the run out.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            LoadError::OpenFiles { .. } | LoadError::ShardingRefused(_)
        )
    }
}

/// Raises the open-file limit and checks that `users` sessions fit under it.
pub fn check_open_files(users: u64) -> Result<(), LoadError> {
    let Some(limit) = crate::limits::raise_nofile() else {
        return Ok(());
    };
    let need = users + FD_HEADROOM;
    if need > limit.soft {
        return Err(LoadError::OpenFiles {
            users,
            need,
            soft: limit.soft,
            hard: limit.hard,
        });
    }
    Ok(())
}

/// Runs `scenario` and writes its report.
pub async fn run(scenario: Scenario, options: &RunOptions) -> Result<RunOutcome, LoadError> {
    check_open_files(scenario.users.count as u64)?;
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
    let connect = connect_options(&scenario);
    // The report directory exists from the start: the run log and the interval log are
    // written as the run goes.
    let stamp = started_at.format("%Y%m%dT%H%M%SZ");
    let dir = options.out.join(format!("{}-{stamp}", scenario.name));
    let t0 = Instant::now();
    let warnings = Arc::new(Warnings::new(t0, options.progress));
    if let Err(e) = warnings.open_log(&dir.join(RUN_LOG)) {
        return Err(LoadError::Report {
            dir: dir.clone(),
            source: crate::report::ReportError::Write {
                path: dir.join(RUN_LOG),
                source: e,
            },
        });
    }
    let mut hlog = match hlog::IntervalLog::create(&dir) {
        Ok(log) => Some(log),
        Err(e) => {
            warnings.warn(&format!("latency.hlog not written: {e}"), "");
            None
        }
    };
    let (schedule_tx, schedule_rx) = watch::channel(None);
    let users = plan.users.len();
    let has_faults = !scenario.faults.is_empty();
    let mut urls = target.urls.clone();
    let relays = match fault::Relays::start(&scenario, &mut urls).await {
        Ok(r) => r,
        Err(e) => return Err(LoadError::Relay(e.to_string())),
    };
    let mut slots = Slots::new(&room_senders);
    if has_faults && scenario.receipts_expected() {
        slots.track_receipts();
    }
    let partitions = target.stack.as_ref().map(|s| s.partitions);
    let room_partitions: Vec<Option<u32>> = plan
        .rooms
        .iter()
        .map(|r| partitions.map(|n| shared_group::partition_for_key(&r.id, n)))
        .collect();
    let tracking = has_faults.then(|| {
        let seconds = scenario.ramp_up() + scenario.warmup + scenario.duration + scenario.grace;
        fault::outage::Tracking::new(
            urls.len(),
            partitions.unwrap_or(0) as usize,
            seconds.as_secs() + 120,
        )
    });
    let ctx = Arc::new(RunContext {
        marker: stamp::marker(&run_id),
        run_id: run_id.clone(),
        t0,
        receipts: scenario.receipts_expected(),
        churn_rejoin: scenario
            .churn
            .as_ref()
            .map_or(Duration::ZERO, |c| c.rejoin_after),
        slots,
        recorder: Recorder::new(64),
        urls,
        connect,
        schedule: schedule_rx,
        ready: AtomicU64::new(0),
        stop: CancellationToken::new(),
        warnings: warnings.clone(),
        tracking,
        room_partitions,
        remote: None,
        timed: None,
        precise_sends: send_timer::precise_for(&plan),
        plan,
        scenario,
    });
    let samplers = sampling::start(
        target,
        ctx.t0,
        options.sample_interval,
        ctx.stop.child_token(),
        &warnings,
    )
    .await;
    let servers: Vec<(String, u32)> = target
        .stack
        .iter()
        .flat_map(|info| info.servers.iter())
        .map(|s| (s.instance_id.clone(), s.pid))
        .collect();
    let brokers: Vec<(String, u32)> = target
        .stack
        .iter()
        .flat_map(|info| info.brokers.iter())
        .map(|b| (format!("broker {}", b.node_id), b.pid))
        .collect();
    let mut tracker = resources::Tracker::start(&servers, &brokers);
    let probe = tokio::spawn(aggregate::probe_loop_lag(ctx.clone()));

    let (controls, handles) = spawn_users(&ctx, 0..users as u32);

    let progress = progress::Progress::new(options.progress);
    let injector = has_faults.then(|| {
        fault::inject::Injector::new(
            ctx.scenario.faults.clone(),
            ctx.t0,
            &ctx.run_id,
            target.stack.clone(),
            target.owned_stack(),
            options.state_dir.clone(),
            relays.controls.clone(),
        )
    });
    let inject_stop = ctx.stop.child_token();
    let clock = async {
        let control = |user: u32, c: vu::Control| {
            let _ = controls[user as usize].try_send(c);
        };
        let aggregated = aggregate::run(
            &ctx,
            &schedule_tx,
            &control,
            &progress,
            &mut hlog,
            &mut tracker,
        )
        .await;
        inject_stop.cancel();
        aggregated
    };
    let injecting = async {
        match &injector {
            Some(i) => i.run(ctx.schedule.clone(), inject_stop.clone()).await,
            None => Vec::new(),
        }
    };
    let (aggregated, injected) = tokio::join!(clock, injecting);
    ctx.stop.cancel();
    progress.done();

    let mut split = shared_group_split(&ctx, target, &warnings).await;
    let schedule = aggregated.schedule.unwrap_or_default();
    let mut faults = fault::Settle::new(&ctx, &injected, schedule);
    let mut tally = Tally::default();
    let mut failed_task = None;
    for handle in handles {
        match handle.await {
            Ok(reports) => {
                for mut report in reports {
                    for (room, membership) in report.memberships.iter_mut() {
                        let (expected, delivered) = tally.add(membership, *room, &ctx.slots);
                        if let Some(split) = split.as_mut() {
                            split.add(report.index, *room, expected, delivered);
                        }
                        if let Some(f) = faults.as_mut() {
                            f.add(membership, *room, &ctx.slots);
                        }
                    }
                }
            }
            Err(e) => {
                failed_task.get_or_insert(task_failure(e));
            }
        }
    }
    let loop_lag = probe.await.unwrap_or_else(|_| stats::histogram());
    let aggregated_timeline = aggregated.timeline;
    warnings.flush();
    if let Some(what) = failed_task {
        warnings.log(&format!("virtual-user task failed: {what}"));
        warnings.flush();
        return Err(LoadError::UserTask(what));
    }
    let connected = ctx.recorder.connected.load(Relaxed);
    if connected == 0 {
        print_warnings(&warnings);
        return Err(LoadError::NoSessions(users as u64, dir.join(RUN_LOG)));
    }
    let totals = aggregated.totals;
    let sampled = samplers.finish(&run_id, totals.sent).await;
    let histogram_log = match hlog.map(hlog::IntervalLog::finish) {
        Some(Ok(_)) => Some(hlog::FILE.to_string()),
        Some(Err(e)) => {
            warnings.warn(&format!("latency.hlog is incomplete: {e}"), "");
            None
        }
        None => None,
    };
    let mut summary = summary::build(summary::Inputs {
        ctx: &ctx,
        target,
        started_at,
        schedule,
        ramp_end_s: aggregated.ramp_end_s,
        totals: &totals,
        tally,
        timeline: aggregated_timeline.clone(),
        sampled,
        loop_lag,
        resources: tracker.finish(totals.delivered),
        shared_group: split.map(shared_group::Split::finish),
        sample_interval_s: options.sample_interval.as_secs_f64(),
    });
    summary.files.histogram_log = histogram_log;
    if let (Some(f), Some(injector)) = (faults, &injector) {
        let restored = injector.restore().await;
        f.finish(
            &ctx,
            target,
            &injected,
            &aggregated_timeline,
            tally.lost(),
            &mut summary,
        )
        .await;
        summary.notes.extend(restored);
    }
    relays.stop().await;
    warnings.flush();
    crate::report::write_report(&summary, &dir).map_err(|source| LoadError::Report {
        dir: dir.clone(),
        source,
    })?;
    let summary = Summary::load(&dir.join(crate::report::SUMMARY_FILE)).unwrap_or(summary);
    Ok(RunOutcome { summary, dir })
}

/// The CONNECT options of a scenario's users.
pub(crate) fn connect_options(scenario: &Scenario) -> ConnectOptions {
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
    ConnectOptions {
        heartbeat: (heartbeat, heartbeat),
        headers,
        ..ConnectOptions::default()
    }
}

/// The tasks of users `range` of the plan, and each user's control channel (indexed
/// from `range.start`). `users.per_task` users share one task: their state machines are
/// polled together (join_all), which costs less than a task each when there are tens of
/// thousands. When the run stops, one more task tells every user's mailbox.
pub(crate) fn spawn_users(
    ctx: &Arc<RunContext>,
    range: std::ops::Range<u32>,
) -> (
    Vec<Arc<vu::Mailbox>>,
    Vec<tokio::task::JoinHandle<Vec<vu::UserReport>>>,
) {
    let mut controls = Vec::with_capacity(range.len());
    let mut handles = Vec::new();
    let per_task = ctx.scenario.users.per_task.max(1) as usize;
    let mut group = Vec::with_capacity(per_task);
    let last = range.end.saturating_sub(1);
    for index in range {
        let mailbox = Arc::new(vu::Mailbox::default());
        controls.push(mailbox.clone());
        group.push(vu::run(ctx.clone(), index, mailbox));
        if group.len() == per_task || index == last {
            let users_of_task = std::mem::take(&mut group);
            handles.push(tokio::spawn(futures_util::future::join_all(users_of_task)));
        }
    }
    let stop = ctx.stop.clone();
    let mailboxes = controls.clone();
    tokio::spawn(async move {
        stop.cancelled().await;
        for mailbox in &mailboxes {
            mailbox.stop();
        }
    });
    (controls, handles)
}

/// What a failed virtual-user task said.
pub(crate) fn task_failure(e: tokio::task::JoinError) -> String {
    if e.is_panic() {
        let payload = e.into_panic();
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        format!("it panicked: {text}")
    } else {
        format!("{e}")
    }
}

/// With a fan-out group shared by the stack's instances: each instance's partitions,
/// read while the servers still run, to split the loss by (`None` otherwise, or when
/// an instance cannot say, which is warned about).
pub(crate) async fn shared_group_split(
    ctx: &RunContext,
    target: &target::Resolved,
    warnings: &Warnings,
) -> Option<shared_group::Split> {
    let info = target.stack.as_ref().filter(|i| i.shared_fanout_group)?;
    match shared_group::read_assignment(info).await {
        Ok(assignment) => {
            let ids: Vec<String> = info.servers.iter().map(|s| s.instance_id.clone()).collect();
            let rooms: Vec<String> = ctx.plan.rooms.iter().map(|r| r.id.clone()).collect();
            let group = info.fanout_groups().join(",");
            Some(shared_group::Split::new(
                &group,
                &ids,
                assignment,
                &rooms,
                info.partitions,
            ))
        }
        Err(e) => {
            warnings.warn(
                &format!("the fan-out group is shared, but the instances' partitions could not be read, so loss is not split by them: {e}"),
                "",
            );
            None
        }
    }
}

/// The run log's file name in the report directory.
pub const RUN_LOG: &str = "run.log";

/// Prints the warnings of a run that ends without a summary (which would show them).
fn print_warnings(warnings: &Warnings) {
    for c in warnings.summary() {
        let first = if c.first.is_empty() {
            String::new()
        } else {
            format!(", {}", c.first)
        };
        eprintln!(
            "warning x{}: {} (first at {:.1} s{first})",
            c.count, c.cause, c.first_t_s
        );
    }
}
