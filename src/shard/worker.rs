//! A worker: runs one shard's slice of the virtual users on the coordinator's clock and
//! reports what they measured.
//!
//! The users are the same [`crate::load::vu`] users as in a single process. What differs:
//! the run id, the start instant and the schedule come from the coordinator; the
//! sequence counters of senders in other shards are read through counter rounds
//! ([`super::counters`]); once a second the shard's histograms go to the coordinator; at
//! the end its users' membership records, its own counters and its voided numbers go
//! there too, and the coordinator settles integrity over all shards at once.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::load::integrity::Slots;
use crate::load::stats::Recorder;
use crate::load::warnings::Warnings;
use crate::load::{aggregate, resources, stats, vu, RunContext};
use crate::shard::counters::RemoteCounters;
use crate::shard::wire::{self, Counts, Final, Start, ToCoordinator, ToWorker, WireInterval};

/// How long a worker keeps trying to reach its coordinator (a Kubernetes pod may start
/// before the coordinator's Service answers).
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(120);

/// Queue of messages to the coordinator; a full queue makes the sender wait.
const OUT_QUEUE: usize = 4096;

/// The coordinator speaks every second during the run (the counters it heard); a worker
/// that hears nothing for this long takes it for gone and stops (a host that vanished
/// without closing its connection would otherwise leave the worker waiting for ever).
const COORDINATOR_SILENCE: Duration = Duration::from_secs(60);

/// Why a worker stopped without finishing its part.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot reach the coordinator at {addr} within {patience:?}: {last}")]
    Unreachable {
        addr: String,
        patience: Duration,
        last: String,
    },
    #[error("the coordinator refused shard {shard}: {why}")]
    Refused { shard: u32, why: String },
    #[error("lost the coordinator: {0}")]
    Lost(String),
    #[error("the coordinator's plan does not match this build's: {0}")]
    Mismatch(String),
    #[error("{0}")]
    Cannot(String),
}

/// Runs shard `shard` for the coordinator at `addr`; `host` names this machine to it.
pub async fn work(addr: &str, shard: u32, host: &str) -> Result<(), WorkerError> {
    let stream = connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    wire::write(
        &mut writer,
        &ToCoordinator::Hello {
            protocol: wire::PROTOCOL,
            shard,
            host: host.to_string(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
    )
    .await
    .map_err(|e| WorkerError::Lost(e.to_string()))?;
    tracing::info!("shard {shard}: connected to the coordinator at {addr}, waiting for the run");
    let start = match wire::read::<_, ToWorker>(&mut reader).await {
        Ok(ToWorker::Start(start)) => start,
        Ok(ToWorker::Refused(why)) => return Err(WorkerError::Refused { shard, why }),
        Ok(other) => return Err(WorkerError::Lost(format!("expected Start, got {other:?}"))),
        Err(e) => return Err(WorkerError::Lost(e.to_string())),
    };
    let (out_tx, mut out_rx) = mpsc::channel::<ToCoordinator>(OUT_QUEUE);
    let writing = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if let Err(e) = wire::write(&mut writer, &msg).await {
                return Err(e.to_string());
            }
        }
        Ok(())
    });
    let (in_tx, in_rx) = mpsc::channel::<ToWorker>(OUT_QUEUE);
    let reading = tokio::spawn(async move {
        loop {
            match wire::read::<_, ToWorker>(&mut reader).await {
                Ok(msg) => {
                    if in_tx.send(msg).await.is_err() {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    tracing::info!(
        "shard {shard} of {}: run {}, users {} to {}{}",
        start.shards,
        start.run_id,
        start.users.0,
        start.users.1.saturating_sub(1),
        start
            .source
            .map_or(String::new(), |a| format!(", connecting from {a}"))
    );
    let result = run_shard(*start, out_tx, in_rx).await;
    if result.is_ok() {
        tracing::info!("shard {shard}: run over, final report sent");
    }
    // The final report is queued: let the writer send it before the connection closes.
    let sent = writing.await;
    reading.abort();
    result?;
    match sent {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(WorkerError::Lost(e)),
        Err(e) => Err(WorkerError::Lost(e.to_string())),
    }
}

async fn connect(addr: &str) -> Result<TcpStream, WorkerError> {
    let until = Instant::now() + CONNECT_PATIENCE;
    let mut wait = Duration::from_millis(100);
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() + wait < until => {
                tracing::debug!("coordinator {addr} not reachable yet: {e}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(WorkerError::Unreachable {
                    addr: addr.to_string(),
                    patience: CONNECT_PATIENCE,
                    last: e.to_string(),
                })
            }
        }
    }
}

fn counts(ctx: &RunContext) -> Counts {
    let r = &ctx.recorder;
    Counts {
        ready: ctx.ready.load(Relaxed),
        sessions: r.sessions.load(Relaxed),
        peak_sessions: r.peak_sessions.load(Relaxed),
        connected: r.connected.load(Relaxed),
        subscribed: r.subscribed.load(Relaxed),
        connect_errors: r.connect_errors.load(Relaxed),
        disconnects: r.disconnects.load(Relaxed),
        reconnects: r.reconnects.load(Relaxed),
        errors: r.errors.load(Relaxed),
        unsent_backlog: r.unsent_backlog.load(Relaxed),
        corrupt: r.corrupt.load(Relaxed),
    }
}

/// The run's start instant on this process's clock, from the coordinator's epoch.
fn instant_of(epoch_unix_us: u64) -> Instant {
    let now_unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let now = Instant::now();
    if now_unix_us >= epoch_unix_us {
        let ago = Duration::from_micros(now_unix_us - epoch_unix_us);
        now.checked_sub(ago).unwrap_or(now)
    } else {
        now + Duration::from_micros(epoch_unix_us - now_unix_us)
    }
}

async fn run_shard(
    start: Start,
    out: mpsc::Sender<ToCoordinator>,
    mut inbox: mpsc::Receiver<ToWorker>,
) -> Result<(), WorkerError> {
    let plan = start.scenario.plan();
    let (first, end) = start.users;
    if plan.users.len() as u32 != *start.bounds.last().unwrap_or(&0) || first > end {
        let e = WorkerError::Mismatch(format!(
            "this build plans {} users, the coordinator {}",
            plan.users.len(),
            start.bounds.last().unwrap_or(&0)
        ));
        let _ = out.send(ToCoordinator::Failed(e.to_string())).await;
        return Err(e);
    }
    if let Err(e) = crate::load::check_open_files(u64::from(end - first)) {
        let why = format!("shard {}: {e}", start.shard);
        let _ = out.send(ToCoordinator::Failed(why.clone())).await;
        return Err(WorkerError::Cannot(why));
    }
    let room_senders: Vec<Vec<u32>> = plan.rooms.iter().map(|r| r.senders.clone()).collect();
    let mut slots = Slots::new(&room_senders);
    slots.set_remote(|sender| sender >= first && sender < end);
    let own_slots: Vec<usize> = (0..slots.senders().len())
        .filter(|s| !slots.is_remote(*s))
        .collect();
    let slot_count = slots.senders().len();
    let my_host = start
        .hosts
        .get(start.shard as usize)
        .cloned()
        .unwrap_or_default();
    let timed = (start.hosts.iter().any(|h| *h != my_host)).then(|| {
        let mut timed = vec![false; plan.users.len()];
        for (k, w) in start.bounds.windows(2).enumerate() {
            if start.hosts.get(k) == Some(&my_host) {
                for t in &mut timed[w[0] as usize..w[1] as usize] {
                    *t = true;
                }
            }
        }
        timed
    });
    let t0 = instant_of(start.epoch_unix_us);
    let forward = out.clone();
    let warnings = Arc::new(Warnings::forwarding(
        t0,
        Box::new(move |cause: &str, detail: &str| {
            let _ = forward.try_send(ToCoordinator::Warning {
                cause: cause.to_string(),
                detail: detail.to_string(),
            });
        }),
    ));
    let remote = Arc::new(RemoteCounters::new(out.clone(), slot_count));
    let (schedule_tx, schedule_rx) = watch::channel(None);
    let mut connect = crate::load::connect_options(&start.scenario);
    connect.source = start.source;
    let ctx = Arc::new(RunContext {
        marker: crate::load::stamp::marker(&start.run_id),
        run_id: start.run_id.clone(),
        t0,
        receipts: start.receipts,
        churn_rejoin: start
            .scenario
            .churn
            .as_ref()
            .map_or(Duration::ZERO, |c| c.rejoin_after),
        slots,
        recorder: Recorder::new(64),
        urls: start.urls.clone(),
        connect,
        schedule: schedule_rx,
        ready: AtomicU64::new(0),
        stop: CancellationToken::new(),
        warnings: warnings.clone(),
        tracking: None,
        room_partitions: vec![None; plan.rooms.len()],
        remote: Some(remote.clone()),
        timed,
        precise_sends: crate::load::send_timer::precise_for(&plan),
        plan,
        scenario: start.scenario,
    });
    let cpu_start = resources::sample(None).map(|s| s.cpu_s);
    let mut peak_rss = 0u64;
    let probe = tokio::spawn(aggregate::probe_loop_lag(ctx.clone()));
    let (controls, handles) = crate::load::spawn_users(&ctx, first..end);
    let own_values =
        |ctx: &RunContext| -> Vec<u64> { own_slots.iter().map(|s| ctx.slots.issued(*s)).collect() };

    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut last_second = Instant::now();
    let mut last_counts = Counts::default();
    let mut interval = Recorder::empty_interval();
    let mut last_heard = Instant::now();
    let lost = loop {
        tokio::select! {
            msg = inbox.recv() => match msg.inspect(|_| last_heard = Instant::now()) {
                Some(ToWorker::Schedule(s)) => { let _ = schedule_tx.send(Some(s)); }
                Some(ToWorker::Leave { user, room }) => {
                    if let Some(c) = user.checked_sub(first).and_then(|i| controls.get(i as usize)) {
                        let _ = c.try_send(vu::Control::Leave(room));
                    }
                }
                Some(ToWorker::ReadCounters { round }) => {
                    let values = own_values(&ctx);
                    if out.send(ToCoordinator::Counters { round, values }).await.is_err() {
                        break Some("the connection to the coordinator closed".to_string());
                    }
                }
                Some(ToWorker::Round { counters }) => {
                    raise_remote(&ctx.slots, &counters);
                    remote.answered(counters).await;
                }
                Some(ToWorker::Heard { counters }) => raise_remote(&ctx.slots, &counters),
                Some(ToWorker::Stop) => break None,
                Some(ToWorker::Start(_)) | Some(ToWorker::Refused(_)) => {}
                None => break Some("the connection to the coordinator closed".to_string()),
            },
            _ = tick.tick() => {
                if last_heard.elapsed() >= COORDINATOR_SILENCE {
                    break Some(format!("heard nothing from the coordinator for {COORDINATOR_SILENCE:?}"));
                }
                let now = counts(&ctx);
                if now != last_counts {
                    last_counts = now;
                    let _ = out.send(ToCoordinator::Progress(now)).await;
                }
                if last_second.elapsed() >= Duration::from_secs(1) {
                    last_second = Instant::now();
                    peak_rss = peak_rss.max(resources::sample(None).map_or(0, |s| s.rss_bytes));
                    ctx.recorder.drain(&mut interval);
                    let msg = ToCoordinator::Interval {
                        interval: WireInterval::from(&interval),
                        counters: own_values(&ctx),
                    };
                    if out.send(msg).await.is_err() {
                        break Some("the connection to the coordinator closed".to_string());
                    }
                }
            }
        }
    };
    ctx.stop.cancel();
    remote.fail();
    if let Some(why) = lost {
        for h in handles {
            h.abort();
        }
        return Err(WorkerError::Lost(why));
    }
    let mut memberships = Vec::new();
    let mut failed_task = None;
    for handle in handles {
        match handle.await {
            Ok(reports) => {
                for report in reports {
                    for (room, m) in report.memberships {
                        memberships.push((report.index, room, m));
                    }
                }
            }
            Err(e) => {
                failed_task.get_or_insert(crate::load::task_failure(e));
            }
        }
    }
    let loop_lag = probe.await.unwrap_or_else(|_| stats::histogram());
    ctx.recorder.drain(&mut interval);
    peak_rss = peak_rss.max(resources::sample(None).map_or(0, |s| s.rss_bytes));
    let cpu_s = match (cpu_start, resources::sample(None)) {
        (Some(a), Some(b)) => Some(b.cpu_s - a),
        _ => None,
    };
    let fin = Final {
        counts: counts(&ctx),
        interval: WireInterval::from(&interval),
        counters: own_values(&ctx),
        voided: ctx.slots.voided_all(),
        memberships,
        loop_lag: wire::encode_histogram(&loop_lag),
        cpu_s,
        peak_rss_bytes: peak_rss,
        warnings: warnings.summary(),
        failed_task,
    };
    out.send(ToCoordinator::Final(Box::new(fin)))
        .await
        .map_err(|_| WorkerError::Lost("the connection to the coordinator closed".into()))?;
    Ok(())
}

/// Remote slots' counters as last heard (for the plausibility check of arrivals).
fn raise_remote(slots: &Slots, counters: &[u64]) {
    for (slot, value) in counters.iter().enumerate() {
        if slots.is_remote(slot) {
            slots.raise(slot, *value);
        }
    }
}
