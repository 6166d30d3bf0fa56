//! The coordinator: one run, many shards, one report.
//!
//! It resolves the target and runs the samplers once, waits for its workers, gives each a
//! contiguous slice of the plan's users together with the run id and the run's clock (an
//! epoch in Unix microseconds), and then runs the same clock as a single process
//! ([`crate::load::aggregate`]): phases, churn, the timeline, the interval log and the
//! status line. Its recorder is fed by the shards' per-second intervals instead of
//! users. It answers counter rounds ([`super::counters`]), sends the schedule and churn
//! commands, and at the end merges: histograms are added, membership records are settled
//! against every sender's final counter exactly as in one process, and each shard's
//! figures go into the report's `shards` section. A shard that does not connect, dies,
//! or never sends its final report is named there and fails the run (verdict
//! `shards_finished`); its users count as not connected.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::load::integrity::{Slots, Tally};
use crate::load::stats::{self, Recorder};
use crate::load::warnings::Warnings;
use crate::load::{
    aggregate, hlog, progress, resources, sampling, summary, target, vu, LoadError, RunContext,
    RunOptions, RunOutcome, RUN_LOG,
};
use crate::report::{Bound, ShardReport, SloVerdict, Summary};
use crate::scenario::Scenario;
use crate::shard::wire::{self, Counts, Final, Start, ToCoordinator, ToWorker};

/// How long the coordinator waits for each shard's final report once the run is over:
/// well past a user's longest wait at the end (a 30 s connect, then a 30 s wait for a
/// RECEIPT).
pub const FINAL_PATIENCE: Duration = Duration::from_secs(120);

/// The usual [`Launch::silence`]: a shard that sends nothing for this long during the run
/// is taken for lost (a worker sends its interval every second; a host that vanished
/// without closing its connection says nothing at all).
pub const SILENCE_PATIENCE: Duration = Duration::from_secs(30);

/// How long a new connection may take to say who it is.
const HELLO_PATIENCE: Duration = Duration::from_secs(10);

/// Queue of messages to one worker; the hub waits when it is full.
const WORKER_QUEUE: usize = 1024;

/// How the coordinator meets its workers.
pub struct Launch {
    pub shards: u32,
    pub listener: TcpListener,
    /// How long to wait for every shard to connect before starting without the missing
    /// ones (which fail the run).
    pub patience: Duration,
    /// A shard silent this long during the run, or leaving a counter round unanswered
    /// this long (every user waiting on a round waits on every shard), is lost.
    pub silence: Duration,
    /// Source addresses for the shards (local shards on a loopback target), by shard.
    pub sources: Vec<Option<std::net::IpAddr>>,
}

/// The users of each shard: shard `k` runs `[bounds[k], bounds[k + 1])`.
pub fn bounds(users: u32, shards: u32) -> Vec<u32> {
    let shards = shards.max(1) as u64;
    (0..=shards)
        .map(|k| (u64::from(users) * k / shards) as u32)
        .collect()
}

struct Joined {
    host: String,
    pid: u32,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
}

/// Runs `scenario` over `launch.shards` workers and writes one report.
pub async fn coordinate(
    scenario: Scenario,
    options: &RunOptions,
    launch: Launch,
) -> Result<RunOutcome, LoadError> {
    if !scenario.faults.is_empty() {
        return Err(LoadError::ShardingRefused(format!(
            "{} has [[faults]]; faults act on one process's users and sessions, so a run with faults cannot be sharded: run it without --shards (or remove the faults)",
            scenario.source.display()
        )));
    }
    let started_at = chrono::Utc::now();
    let mut target = target::resolve(&scenario, options).await?;
    let outcome = drive(scenario, options, &target, started_at, launch).await;
    target.release().await;
    outcome
}

/// Accepts workers until every shard has said hello or `patience` is over.
async fn gather(launch: &Launch, progress: bool) -> Vec<Option<Joined>> {
    let n = launch.shards as usize;
    let mut joined: Vec<Option<Joined>> = (0..n).map(|_| None).collect();
    let deadline = tokio::time::Instant::now() + launch.patience;
    let mut said = 0;
    while joined.iter().any(Option::is_none) {
        let accepted = tokio::select! {
            a = launch.listener.accept() => a,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (mut reader, writer) = stream.into_split();
        let hello = tokio::time::timeout(
            HELLO_PATIENCE,
            wire::read_limited::<_, ToCoordinator>(&mut reader, wire::MAX_HELLO),
        )
        .await;
        match hello {
            Ok(Ok(ToCoordinator::Hello {
                protocol,
                shard,
                host,
                pid,
                version,
            })) => {
                if protocol != wire::PROTOCOL {
                    refuse(writer, format!(
                        "protocol {protocol} (stompede {version}); this coordinator speaks {} (stompede {}): run the same build on both sides",
                        wire::PROTOCOL,
                        env!("CARGO_PKG_VERSION")
                    ))
                    .await;
                } else if shard as usize >= n {
                    refuse(
                        writer,
                        format!(
                        "shard {shard} is out of range: this run has shards 0 to {} (--shards {n})",
                        n - 1
                    ),
                    )
                    .await;
                } else if joined[shard as usize].is_some() {
                    refuse(
                        writer,
                        format!("shard {shard} is already taken by another worker"),
                    )
                    .await;
                } else {
                    joined[shard as usize] = Some(Joined {
                        host,
                        pid,
                        reader,
                        writer,
                    });
                    let have = joined.iter().filter(|j| j.is_some()).count();
                    if progress && have > said {
                        said = have;
                        eprintln!("shards: {have} of {n} connected");
                    }
                }
            }
            Ok(Ok(_)) => refuse(writer, "expected Hello first".into()).await,
            Ok(Err(e)) => tracing::debug!("connection from {peer} did not say hello: {e}"),
            Err(_) => tracing::debug!("connection from {peer} said nothing for {HELLO_PATIENCE:?}"),
        }
    }
    joined
}

async fn refuse(mut writer: OwnedWriteHalf, why: String) {
    let _ = wire::write(&mut writer, &ToWorker::Refused(why)).await;
}

/// One shard as the hub follows it.
#[derive(Default)]
struct ShardState {
    host: String,
    pid: Option<u32>,
    to: Option<mpsc::Sender<ToWorker>>,
    counts: Counts,
    sent: u64,
    delivered: u64,
    timed: u64,
    final_report: Option<Final>,
    cpu_s: Option<f64>,
    peak_rss_bytes: u64,
    lost: Option<String>,
    /// When a message from this shard last arrived.
    last_heard: Option<tokio::time::Instant>,
}

struct Round {
    number: u64,
    started: tokio::time::Instant,
    waiting: BTreeSet<usize>,
    requesters: Vec<usize>,
}

/// Follows every shard's messages during the run.
struct Hub {
    ctx: Arc<RunContext>,
    shards: Vec<ShardState>,
    bounds: Vec<u32>,
    /// Per shard, its slots in slot order.
    owned: Vec<Vec<usize>>,
    latest: Vec<u64>,
    schedule_sent: bool,
    round: Option<Round>,
    next_requesters: Vec<usize>,
    rounds: u64,
    stopping: bool,
    silence: Duration,
}

impl Hub {
    fn live(&self, k: usize) -> bool {
        self.shards[k].lost.is_none() && self.shards[k].final_report.is_none()
    }

    /// Queues `msg` for shard `k`. A worker whose queue is full has stopped reading: it
    /// is taken for lost rather than let stall every other shard.
    async fn send(&mut self, k: usize, msg: ToWorker) {
        let Some(to) = self.shards[k].to.clone() else {
            return;
        };
        match to.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.mark_lost(
                k,
                format!("it stopped reading: {WORKER_QUEUE} messages to it were waiting"),
            ),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.mark_lost(k, "its connection closed".into())
            }
        }
    }

    /// Shard `k` is gone: named, its users no longer waited for.
    async fn lose(&mut self, k: usize, why: String) {
        self.mark_lost(k, why);
        self.maybe_finish_round().await;
    }

    /// [`Hub::lose`] without finishing a round it may have completed (the hub's loop
    /// checks for that on every turn).
    fn mark_lost(&mut self, k: usize, why: String) {
        if self.shards[k].lost.is_some() || self.shards[k].final_report.is_some() {
            return;
        }
        let t_s = self.ctx.t0.elapsed().as_secs_f64();
        let s = &mut self.shards[k];
        s.lost = Some(format!("{why} (at {t_s:.1} s)"));
        s.to = None;
        self.ctx.warnings.warn(
            "a shard was lost; its users count as not connected and the run fails",
            &format!(
                "shard {k} on {} (pid {}): {why}",
                s.host,
                s.pid.map_or("?".into(), |p| p.to_string())
            ),
        );
        self.publish_counts();
        if let Some(round) = self.round.as_mut() {
            round.waiting.remove(&k);
            round.requesters.retain(|r| *r != k);
        }
        self.next_requesters.retain(|r| *r != k);
    }

    /// The shards' counts, summed into the coordinator's recorder (a lost shard's users
    /// count as ready, so the ramp does not wait for them, and as not connected).
    fn publish_counts(&self) {
        let mut sum = Counts::default();
        let mut peak_of_one = 0;
        for (k, s) in self.shards.iter().enumerate() {
            let c = if s.lost.is_some() {
                Counts {
                    ready: u64::from(self.bounds[k + 1] - self.bounds[k]),
                    connect_errors: s.counts.connect_errors,
                    errors: s.counts.errors,
                    unsent_backlog: s.counts.unsent_backlog,
                    corrupt: s.counts.corrupt,
                    ..Counts::default()
                }
            } else {
                s.counts
            };
            sum.ready += c.ready;
            sum.sessions += c.sessions;
            peak_of_one = peak_of_one.max(c.peak_sessions);
            sum.connected += c.connected;
            sum.subscribed += c.subscribed;
            sum.connect_errors += c.connect_errors;
            sum.disconnects += c.disconnects;
            sum.reconnects += c.reconnects;
            sum.errors += c.errors;
            sum.unsent_backlog += c.unsent_backlog;
            sum.corrupt += c.corrupt;
        }
        let r = &self.ctx.recorder;
        self.ctx.ready.store(sum.ready, Relaxed);
        r.sessions.store(sum.sessions, Relaxed);
        // Shards peak at different moments: the run's peak is the highest sum seen (never
        // below one shard's own peak), not the sum of the peaks.
        r.peak_sessions
            .fetch_max(sum.sessions.max(peak_of_one), Relaxed);
        r.connected.store(sum.connected, Relaxed);
        r.subscribed.store(sum.subscribed, Relaxed);
        r.connect_errors.store(sum.connect_errors, Relaxed);
        r.disconnects.store(sum.disconnects, Relaxed);
        r.reconnects.store(sum.reconnects, Relaxed);
        r.errors.store(sum.errors, Relaxed);
        r.unsent_backlog.store(sum.unsent_backlog, Relaxed);
        r.corrupt.store(sum.corrupt, Relaxed);
    }

    /// Shards silent for [`Launch::silence`], and shards a round has waited on as long,
    /// are lost (which also closes the round without them).
    async fn check_liveness(&mut self) {
        let now = tokio::time::Instant::now();
        let patience = self.silence;
        for k in 0..self.shards.len() {
            let silent = self.shards[k]
                .last_heard
                .is_some_and(|t| now.duration_since(t) >= patience);
            if self.live(k) && silent {
                self.mark_lost(
                    k,
                    format!("it sent nothing for {patience:?} (a worker reports every second)"),
                );
            }
        }
        let overdue: Vec<usize> = self
            .round
            .as_ref()
            .filter(|r| now.duration_since(r.started) >= patience)
            .map(|r| r.waiting.iter().copied().collect())
            .unwrap_or_default();
        for k in overdue {
            self.mark_lost(
                k,
                format!("it did not answer a counter round within {patience:?}"),
            );
        }
        self.maybe_finish_round().await;
    }

    fn heard(&mut self, k: usize, values: &[u64]) {
        for (slot, v) in self.owned[k].iter().zip(values) {
            if let Some(l) = self.latest.get_mut(*slot) {
                *l = (*l).max(*v);
            }
        }
    }

    async fn start_round(&mut self, requesters: Vec<usize>) {
        self.rounds += 1;
        let number = self.rounds;
        let waiting: BTreeSet<usize> = (0..self.shards.len()).filter(|k| self.live(*k)).collect();
        self.round = Some(Round {
            number,
            started: tokio::time::Instant::now(),
            waiting: waiting.clone(),
            requesters,
        });
        for k in waiting {
            self.send(k, ToWorker::ReadCounters { round: number }).await;
        }
        self.maybe_finish_round().await;
    }

    async fn maybe_finish_round(&mut self) {
        loop {
            let Some(round) = self.round.as_ref() else {
                return;
            };
            if !round.waiting.is_empty() {
                return;
            }
            let round = self.round.take().expect("checked above");
            for k in round.requesters {
                let counters = self.latest.clone();
                self.send(k, ToWorker::Round { counters }).await;
            }
            let next = std::mem::take(&mut self.next_requesters);
            if next.is_empty() {
                return;
            }
            self.rounds += 1;
            let number = self.rounds;
            let waiting: BTreeSet<usize> =
                (0..self.shards.len()).filter(|k| self.live(*k)).collect();
            self.round = Some(Round {
                number,
                started: tokio::time::Instant::now(),
                waiting: waiting.clone(),
                requesters: next,
            });
            for k in waiting {
                self.send(k, ToWorker::ReadCounters { round: number }).await;
            }
        }
    }

    async fn on_message(&mut self, k: usize, msg: ToCoordinator) {
        if self.shards[k].lost.is_some() {
            // Taken for lost already (its users counted as not connected): what it says
            // now is not merged.
            return;
        }
        self.shards[k].last_heard = Some(tokio::time::Instant::now());
        match msg {
            ToCoordinator::Progress(c) => {
                self.shards[k].counts = c;
                self.publish_counts();
            }
            ToCoordinator::Interval { interval, counters } => {
                self.heard(k, &counters);
                match interval.to_interval() {
                    Ok(i) => {
                        let s = &mut self.shards[k];
                        s.sent += i.sent;
                        s.delivered += i.delivered;
                        s.timed += i.corrected.len();
                        self.ctx.recorder.add_interval(&i);
                    }
                    Err(e) => {
                        self.lose(k, format!("sent an interval that does not decode: {e}"))
                            .await
                    }
                }
            }
            ToCoordinator::NeedRound => {
                if !self.schedule_sent {
                    // Nobody has been told to send yet: every counter is still zero.
                    self.send(
                        k,
                        ToWorker::Round {
                            counters: Vec::new(),
                        },
                    )
                    .await;
                } else if self.round.is_some() {
                    if !self.next_requesters.contains(&k) {
                        self.next_requesters.push(k);
                    }
                } else {
                    self.start_round(vec![k]).await;
                }
            }
            ToCoordinator::Counters { round, values } => {
                self.heard(k, &values);
                if let Some(r) = self.round.as_mut().filter(|r| r.number == round) {
                    r.waiting.remove(&k);
                }
                self.maybe_finish_round().await;
            }
            ToCoordinator::Final(f) => {
                if !self.stopping {
                    self.lose(k, "ended before the run was over".into()).await;
                    return;
                }
                self.heard(k, &f.counters);
                self.shards[k].counts = f.counts;
                self.shards[k].final_report = Some(*f);
                self.shards[k].to = None;
                self.publish_counts();
            }
            ToCoordinator::Failed(why) => self.lose(k, why).await,
            ToCoordinator::Warning { cause, detail } => {
                let detail = if detail.is_empty() {
                    format!("shard {k}")
                } else {
                    format!("shard {k}, {detail}")
                };
                self.ctx.warnings.first_elsewhere(&cause, &detail);
            }
            ToCoordinator::Hello { .. } => {}
        }
    }
}

async fn drive(
    scenario: Scenario,
    options: &RunOptions,
    target: &target::Resolved,
    started_at: chrono::DateTime<chrono::Utc>,
    launch: Launch,
) -> Result<RunOutcome, LoadError> {
    let n = launch.shards.max(1) as usize;
    let run_id = format!("{:08x}", rand::random::<u32>());
    let plan = scenario.plan();
    let users = plan.users.len();
    let bounds = bounds(users as u32, n as u32);
    let joined = gather(&launch, options.progress).await;
    if joined.iter().all(Option::is_none) {
        return Err(LoadError::Sharding(format!(
            "none of the {n} shards connected within {:?}; are the workers running and pointed at this coordinator?",
            launch.patience
        )));
    }
    // The run's clock starts once the shards are here, so the ramp is the scenario's.
    let t0 = Instant::now();
    let epoch_unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let stamp = started_at.format("%Y%m%dT%H%M%SZ");
    let dir = options.out.join(format!("{}-{stamp}", scenario.name));
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
    let room_senders: Vec<Vec<u32>> = plan.rooms.iter().map(|r| r.senders.clone()).collect();
    let slots = Slots::new(&room_senders);
    let shard_of = |user: u32| bounds.partition_point(|b| *b <= user).saturating_sub(1);
    let mut owned = vec![Vec::new(); n];
    for (slot, sender) in slots.senders().into_iter().enumerate() {
        owned[shard_of(sender).min(n - 1)].push(slot);
    }
    let slot_count = slots.senders().len();
    let partitions = target.stack.as_ref().map(|s| s.partitions);
    let room_partitions: Vec<Option<u32>> = plan
        .rooms
        .iter()
        .map(|r| partitions.map(|p| crate::load::shared_group::partition_for_key(&r.id, p)))
        .collect();
    let (schedule_tx, schedule_rx) = watch::channel(None);
    let hosts: Vec<String> = joined
        .iter()
        .map(|j| j.as_ref().map_or_else(String::new, |j| j.host.clone()))
        .collect();
    let ctx = Arc::new(RunContext {
        marker: crate::load::stamp::marker(&run_id),
        run_id: run_id.clone(),
        t0,
        receipts: scenario.receipts_expected(),
        churn_rejoin: scenario
            .churn
            .as_ref()
            .map_or(Duration::ZERO, |c| c.rejoin_after),
        slots,
        recorder: Recorder::new(1),
        urls: target.urls.clone(),
        connect: crate::load::connect_options(&scenario),
        schedule: schedule_rx,
        ready: AtomicU64::new(0),
        stop: CancellationToken::new(),
        warnings: warnings.clone(),
        tracking: None,
        room_partitions,
        remote: None,
        timed: None,
        precise_sends: crate::load::send_timer::precise_for(&plan),
        plan,
        scenario,
    });

    // Start every shard that came; the missing ones are lost from the start.
    let (events_tx, mut events_rx) = mpsc::channel::<(usize, Result<ToCoordinator, String>)>(4096);
    let mut states: Vec<ShardState> = (0..n).map(|_| ShardState::default()).collect();
    for (k, j) in joined.into_iter().enumerate() {
        let Some(j) = j else {
            states[k].lost = Some(format!("did not connect within {:?}", launch.patience));
            continue;
        };
        states[k].host = j.host.clone();
        states[k].pid = Some(j.pid);
        states[k].last_heard = Some(tokio::time::Instant::now());
        let start = Start {
            run_id: run_id.clone(),
            epoch_unix_us,
            scenario: ctx.scenario.clone(),
            urls: target.urls.clone(),
            shard: k as u32,
            shards: n as u32,
            users: (bounds[k], bounds[k + 1]),
            bounds: bounds.clone(),
            hosts: hosts.clone(),
            source: launch.sources.get(k).copied().flatten(),
            receipts: ctx.receipts,
        };
        let (to_tx, mut to_rx) = mpsc::channel::<ToWorker>(WORKER_QUEUE);
        let mut writer = j.writer;
        let first = ToWorker::Start(Box::new(start));
        let events = events_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = wire::write(&mut writer, &first).await {
                let _ = events
                    .send((k, Err(format!("cannot send it its part: {e}"))))
                    .await;
                return;
            }
            while let Some(msg) = to_rx.recv().await {
                if let Err(e) = wire::write(&mut writer, &msg).await {
                    let _ = events
                        .send((k, Err(format!("cannot write to it: {e}"))))
                        .await;
                    return;
                }
            }
        });
        let mut reader = j.reader;
        let events = events_tx.clone();
        tokio::spawn(async move {
            loop {
                let msg = wire::read::<_, ToCoordinator>(&mut reader).await;
                let end = msg.is_err();
                let msg = msg.map_err(|e| match e {
                    wire::WireError::Closed => "its connection closed".to_string(),
                    e => e.to_string(),
                });
                if events.send((k, msg)).await.is_err() || end {
                    return;
                }
            }
        });
        states[k].to = Some(to_tx);
    }
    drop(events_tx);
    for (k, s) in states.iter().enumerate() {
        if let Some(why) = &s.lost {
            warnings.warn(
                "a shard was lost; its users count as not connected and the run fails",
                &format!("shard {k}: {why}"),
            );
        }
    }
    let mut hub = Hub {
        ctx: ctx.clone(),
        shards: states,
        bounds: bounds.clone(),
        owned,
        latest: vec![0; slot_count],
        schedule_sent: false,
        round: None,
        next_requesters: Vec::new(),
        rounds: 0,
        stopping: false,
        silence: launch.silence,
    };
    hub.publish_counts();

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

    // The hub: every shard's messages, the schedule, churn commands, the end.
    let (leave_tx, mut leave_rx) = mpsc::channel::<(u32, u32)>(4096);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    // Silence counts from here: the samplers' start is the coordinator's time, not theirs.
    let now = tokio::time::Instant::now();
    for s in hub.shards.iter_mut().filter(|s| s.to.is_some()) {
        s.last_heard = Some(now);
    }
    let hub_task = tokio::spawn(async move {
        let mut schedule = hub.ctx.schedule.clone();
        let mut stop_rx = stop_rx;
        let mut heard_tick = tokio::time::interval(Duration::from_secs(1));
        let mut final_deadline: Option<tokio::time::Instant> = None;
        let mut events_open = true;
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 86_400);
        loop {
            hub.maybe_finish_round().await;
            if hub.stopping && (0..hub.shards.len()).all(|k| !hub.live(k)) {
                break;
            }
            tokio::select! {
                event = events_rx.recv(), if events_open => match event {
                    Some((k, Ok(msg))) => hub.on_message(k, msg).await,
                    Some((k, Err(why))) => hub.lose(k, why).await,
                    None => {
                        events_open = false;
                        for k in 0..hub.shards.len() {
                            hub.lose(k, "its connection closed".into()).await;
                        }
                    }
                },
                changed = schedule.changed(), if !hub.schedule_sent => {
                    if changed.is_err() { continue; }
                    let s = *schedule.borrow_and_update();
                    if let Some(s) = s {
                        hub.schedule_sent = true;
                        for k in 0..hub.shards.len() {
                            hub.send(k, ToWorker::Schedule(s)).await;
                        }
                    }
                }
                leave = leave_rx.recv(), if !hub.stopping => {
                    if let Some((user, room)) = leave {
                        let k = hub.bounds.partition_point(|b| *b <= user).saturating_sub(1);
                        if k < hub.shards.len() {
                            hub.send(k, ToWorker::Leave { user, room }).await;
                        }
                    }
                }
                _ = heard_tick.tick(), if !hub.stopping => {
                    hub.check_liveness().await;
                    let counters = hub.latest.clone();
                    for k in 0..hub.shards.len() {
                        if hub.live(k) {
                            hub.send(k, ToWorker::Heard { counters: counters.clone() }).await;
                        }
                    }
                }
                _ = &mut stop_rx, if !hub.stopping => {
                    hub.stopping = true;
                    final_deadline = Some(tokio::time::Instant::now() + FINAL_PATIENCE);
                    for k in 0..hub.shards.len() {
                        hub.send(k, ToWorker::Stop).await;
                    }
                }
                _ = tokio::time::sleep_until(final_deadline.unwrap_or(far)), if final_deadline.is_some() => {
                    for k in 0..hub.shards.len() {
                        hub.lose(k, format!("sent no final report within {FINAL_PATIENCE:?} of the end")).await;
                    }
                }
            }
        }
        hub
    });

    let progress = progress::Progress::new(options.progress);
    let control = |user: u32, c: vu::Control| {
        let vu::Control::Leave(room) = c;
        let _ = leave_tx.try_send((user, room));
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
    ctx.stop.cancel();
    progress.done();
    let _ = stop_tx.send(());
    let mut split = crate::load::shared_group_split(&ctx, target, &warnings).await;
    let mut hub = match hub_task.await {
        Ok(hub) => hub,
        Err(e) => {
            return Err(LoadError::Sharding(format!(
                "the coordinator's hub failed: {e}"
            )))
        }
    };

    // Merge: counters first (every sender's final numbering), then the memberships.
    let mut totals = aggregated.totals;
    // Intervals that arrived after the last second was drained.
    let mut rest = crate::load::stats::Recorder::empty_interval();
    ctx.recorder.drain(&mut rest);
    totals.add(&rest);
    let mut loop_lag = stats::histogram();
    let mut failed_task = None;
    let mut finals = Vec::new();
    for (k, s) in hub.shards.iter_mut().enumerate() {
        if let Some(f) = s.final_report.take() {
            s.cpu_s = f.cpu_s;
            s.peak_rss_bytes = f.peak_rss_bytes;
            match f.interval.to_interval() {
                Ok(i) => {
                    s.sent += i.sent;
                    s.delivered += i.delivered;
                    s.timed += i.corrected.len();
                    totals.add(&i);
                }
                Err(e) => {
                    s.lost = Some(format!("its final report does not decode: {e}"));
                    continue;
                }
            }
            if let Ok(h) = wire::decode_histogram(&f.loop_lag) {
                let _ = loop_lag.add(&h);
            }
            if let Some(what) = &f.failed_task {
                failed_task.get_or_insert(format!("shard {k}: {what}"));
            }
            for c in &f.warnings {
                warnings.add(c, &format!("shard {k}"));
            }
            finals.push((k, f));
        }
    }
    for (slot, v) in hub.latest.iter().enumerate() {
        ctx.slots.raise(slot, *v);
    }
    for (_, f) in &finals {
        for (slot, seq) in &f.voided {
            ctx.slots.void(*slot, *seq);
        }
    }
    let mut tally = Tally::default();
    let mut late = 0u64;
    // A lost shard's senders have no final counter: what they sent is not known exactly.
    let unsettled: HashSet<usize> = hub
        .shards
        .iter()
        .enumerate()
        .filter(|(_, s)| s.lost.is_some())
        .flat_map(|(k, _)| hub.owned[k].iter().copied())
        .collect();
    for (_, f) in finals.iter_mut() {
        for (user, room, m) in f.memberships.iter_mut() {
            // Numbers at or past a sender's final counter were never issued: mangled
            // stamps a shard could only bound while the run went on.
            for (sender, set) in &m.received {
                if let Some(slot) = ctx
                    .slots
                    .slot(*room, *sender)
                    .filter(|s| !unsettled.contains(s))
                {
                    late += set.count_from(ctx.slots.issued(slot));
                }
            }
            let (expected, delivered) = tally.add(m, *room, &ctx.slots);
            if let Some(split) = split.as_mut() {
                split.add(*user, *room, expected, delivered);
            }
        }
    }
    hub.publish_counts();
    if late > 0 {
        ctx.recorder.corrupt.fetch_add(late, Relaxed);
    }
    warnings.flush();
    if let Some(what) = failed_task {
        warnings.log(&format!("virtual-user task failed: {what}"));
        warnings.flush();
        return Err(LoadError::UserTask(what));
    }
    if ctx.recorder.connected.load(Relaxed) == 0 {
        for c in warnings.summary() {
            eprintln!(
                "warning x{}: {} (first at {:.1} s, {})",
                c.count, c.cause, c.first_t_s, c.first
            );
        }
        return Err(LoadError::NoSessions(users as u64, dir.join(RUN_LOG)));
    }
    let sampled = samplers.finish(&run_id, totals.sent).await;
    let histogram_log = match hlog.map(hlog::IntervalLog::finish) {
        Some(Ok(_)) => Some(hlog::FILE.to_string()),
        Some(Err(e)) => {
            warnings.warn(&format!("latency.hlog is incomplete: {e}"), "");
            None
        }
        None => None,
    };
    let mut resources = tracker.finish(totals.delivered);
    // The harness is the coordinator and every shard.
    let shard_cpu: f64 = hub.shards.iter().filter_map(|s| s.cpu_s).sum();
    let shard_rss: u64 = hub.shards.iter().map(|s| s.peak_rss_bytes).sum();
    resources.harness_cpu_s = resources.harness_cpu_s.map(|c| c + shard_cpu);
    resources.harness_peak_rss_bytes += shard_rss;
    resources.harness_cpu_s_per_million = resources
        .harness_cpu_s
        .filter(|_| totals.delivered > 0)
        .map(|c| c * 1e6 / totals.delivered as f64);
    resources.basis = Some(format!(
        "{}; the harness is the coordinator and its {n} shards together (CPU summed, RSS summed over their peaks)",
        resources::BASIS
    ));
    let schedule = aggregated.schedule.unwrap_or_default();
    let mut summary = summary::build(summary::Inputs {
        ctx: &ctx,
        target,
        started_at,
        schedule,
        ramp_end_s: aggregated.ramp_end_s,
        totals: &totals,
        tally,
        timeline: aggregated.timeline,
        sampled,
        loop_lag,
        resources,
        shared_group: split.map(crate::load::shared_group::Split::finish),
        sample_interval_s: options.sample_interval.as_secs_f64(),
    });
    summary.files.histogram_log = histogram_log;
    finish_summary(&mut summary, &hub, &bounds, &launch.sources, totals.untimed);
    warnings.flush();
    crate::report::write_report(&summary, &dir).map_err(|source| LoadError::Report {
        dir: dir.clone(),
        source,
    })?;
    let summary = Summary::load(&dir.join(crate::report::SUMMARY_FILE)).unwrap_or(summary);
    Ok(RunOutcome { summary, dir })
}

/// The `shards` section, the verdict on lost shards and the notes of a sharded run.
fn finish_summary(
    summary: &mut Summary,
    hub: &Hub,
    bounds: &[u32],
    sources: &[Option<std::net::IpAddr>],
    untimed: u64,
) {
    let n = hub.shards.len();
    let reports: Vec<ShardReport> = hub
        .shards
        .iter()
        .enumerate()
        .map(|(k, s)| ShardReport {
            shard: k as u32,
            host: s.host.clone(),
            pid: s.pid,
            users: u64::from(bounds[k + 1] - bounds[k]),
            connected: if s.lost.is_some() {
                0
            } else {
                s.counts.connected
            },
            sent: s.sent,
            delivered: s.delivered,
            timed: s.timed,
            cpu_s: s.cpu_s,
            peak_rss_bytes: s.peak_rss_bytes,
            source: sources.get(k).copied().flatten().map(|a| a.to_string()),
            lost: s.lost.clone(),
        })
        .collect();
    let finished = reports.iter().filter(|r| r.lost.is_none()).count();
    summary.slo.push(SloVerdict::new(
        "shards_finished",
        Bound::AtLeast,
        n as f64,
        finished as f64,
        "shards",
    ));
    for r in reports.iter().filter(|r| r.lost.is_some()) {
        summary.notes.push(format!(
            "shard {} on {} (pid {}) was lost: {}; its {} users count as not connected, and the run fails",
            r.shard,
            if r.host.is_empty() { "an unknown host" } else { &r.host },
            r.pid.map_or("?".into(), |p| p.to_string()),
            r.lost.as_deref().unwrap_or(""),
            r.users
        ));
    }
    let hosts: BTreeSet<&str> = reports
        .iter()
        .map(|r| r.host.as_str())
        .filter(|h| !h.is_empty())
        .collect();
    summary.notes.push(format!(
        "run spread over {n} shards on {} host(s); histograms merged exactly, integrity settled over every shard's records",
        hosts.len()
    ));
    if untimed > 0 {
        summary.notes.push(format!(
            "{untimed} deliveries crossed hosts: counted for integrity, but not timed (latency is measured only between users on the same host)"
        ));
    }
    summary.passed = summary.slo.iter().all(|v| v.passed);
    summary.shards = Some(reports);
}
