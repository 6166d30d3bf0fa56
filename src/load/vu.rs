//! One virtual user: connect, subscribe, send on schedule, check every message received.
//!
//! A user is a task that owns one STOMP session. After its connect slot in the ramp it
//! subscribes to its rooms (waiting for receipts where the target gives them), reports
//! ready, and waits for the run's schedule. It then selects over: the next frame, the
//! next due send, its heart-beat, churn commands (leave/rejoin a room) and the end of the
//! run. Every MESSAGE carrying this run's stamp is checked against the user's membership
//! record and timed; the aggregator only ever sees histograms and counters.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

use rand::{Rng, SeedableRng};

use crate::client::StompClient;
use crate::load::integrity::Membership;
use crate::load::receive::{Received, Receiver};
use crate::load::send_timer::SendTimer;
use crate::load::stamp::Stamp;
use crate::load::{RunContext, Schedule};
use crate::scenario::{Arrival, BodyFormat, LoadModel};
use crate::stomp::{heart_beat_period, Command, Frame};
use crate::wake_gate::WakeGate;

/// Churn commands from the coordinator.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    Leave(u32),
}

/// Most commands waiting in a user's [`Mailbox`]; further ones are refused.
const MAILBOX: usize = 4;

/// A user's inbox for [`Control`] commands: a few dozen bytes per user where a channel
/// takes over half a kilobyte, for something most runs never use. At most [`MAILBOX`]
/// commands wait; [`Mailbox::try_send`] refuses more, as a full channel would. An empty
/// mailbox answers its one reader from one atomic load (and a waker registration that
/// is a no-op for the same task).
///
/// It also carries the end of the run to its user ([`Mailbox::stop`]): one flag and the
/// waker the user registers anyway, where a wait on the run's cancellation token would
/// keep a waiter of about a hundred bytes per user in the token's list all run.
#[derive(Default)]
pub struct Mailbox {
    queue: Mutex<VecDeque<Control>>,
    waiting: AtomicUsize,
    stopped: AtomicBool,
    reader: AtomicWaker,
}

impl Mailbox {
    /// Queues `c` unless [`MAILBOX`] commands already wait; false when refused.
    pub fn try_send(&self, c: Control) -> bool {
        {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            if q.len() >= MAILBOX {
                return false;
            }
            q.push_back(c);
            self.waiting.store(q.len(), Release);
        }
        self.reader.wake();
        true
    }

    /// Tells the user the run stopped (see [`Mailbox::poll_stopped`]).
    pub fn stop(&self) {
        self.stopped.store(true, Release);
        self.reader.wake();
    }

    /// Whether the run stopped; otherwise the reader's waker is kept to hear of it.
    pub fn poll_stopped(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.stopped.load(Acquire) {
            return Poll::Ready(());
        }
        // Registered before the second look: a stop in between wakes us.
        self.reader.register(cx.waker());
        if self.stopped.load(Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn take(&self) -> Option<Control> {
        if self.waiting.load(Acquire) == 0 {
            return None;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let c = q.pop_front();
        self.waiting.store(q.len(), Release);
        c
    }

    /// The next command, waiting for one (one reader at a time).
    pub async fn recv(&self) -> Control {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`recv`](Self::recv) as a poll: a command, or the reader's waker kept for one.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Control> {
        if let Some(c) = self.take() {
            return Poll::Ready(c);
        }
        // Registered before the second look: a command queued in between wakes us.
        self.reader.register(cx.waker());
        match self.take() {
            Some(c) => Poll::Ready(c),
            None => Poll::Pending,
        }
    }
}

/// A session's seldom events, polled together behind one [`WakeGate`] in
/// [`User::converse`].
enum Rare {
    /// The run stopped.
    Stop,
    /// The run's schedule was published (`None`: it never will be).
    Scheduled(Option<Schedule>),
    /// A heart-beat is due.
    Beat,
    Command(Control),
    /// Time to check that the server still sends its heart-beats.
    Liveness,
}

/// What a user hands back at the end.
pub struct UserReport {
    /// The user's index in the plan.
    pub index: u32,
    pub memberships: HashMap<u32, Membership>,
}

/// How late after the end of sending a send due before it may still leave (µs); later
/// ones are counted as unsent (`max_unsent`).
const LATE_SEND_ALLOWANCE_US: u64 = 100_000;

/// Most SENDs awaiting a receipt per user; past it, receipts are not asked for.
const MAX_PENDING_RECEIPTS: usize = 10_000;

struct Leaving {
    room: u32,
    snapshot: HashMap<u32, u64>,
    deadline: Instant,
}

enum Away {
    /// Unsubscribed; rejoin at this instant.
    Until(Instant),
    /// SUBSCRIBE sent, waiting for its receipt.
    Rejoining,
    /// SUBSCRIBE sent to a target without receipts: counted as joined from this instant,
    /// once the server has surely registered it.
    Settling(Instant),
}

/// Without receipts, how long after SUBSCRIBE a rejoined member starts to be expected.
const SUBSCRIBE_SETTLE: Duration = Duration::from_secs(1);

/// How long one reconnection attempt may take (CONNECTED, then the SUBSCRIBE receipts).
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct User {
    ctx: Arc<RunContext>,
    index: u32,
    /// Small (32 bytes, where `StdRng` takes over 300 per user) and seeded per user, so a
    /// run's arrivals, sizes and jitter are the same every time with the same build.
    rng: rand::rngs::SmallRng,
    memberships: HashMap<u32, Membership>,
    /// Due sends: (µs since t0, room).
    due: BinaryHeap<Reverse<(u64, u32)>>,
    /// Closed model: the message each room's next send waits for.
    awaiting: HashMap<u32, (u64, Instant)>,
    pending: HashMap<String, Instant>,
    leaving: Option<Leaving>,
    away: HashMap<u32, Away>,
    schedule: Schedule,
    /// Whether the run's schedule arrived (and the first sends were planned).
    scheduled: bool,
    /// Server group for the fault figures: the user's first server.
    home: usize,
}

pub async fn run(ctx: Arc<RunContext>, index: u32, control: Arc<Mailbox>) -> UserReport {
    let seed = ctx.scenario.seed ^ (u64::from(index) << 20) ^ 0x5eed;
    let mut user = User {
        ctx: ctx.clone(),
        index,
        rng: rand::rngs::SmallRng::seed_from_u64(seed),
        memberships: HashMap::new(),
        due: BinaryHeap::new(),
        awaiting: HashMap::new(),
        pending: HashMap::new(),
        leaving: None,
        away: HashMap::new(),
        schedule: Schedule::default(),
        scheduled: false,
        home: home_of(index, ctx.urls.len()),
    };
    let slot = secs(f64::from(index) / ctx.scenario.users.connect_rate);
    tokio::select! {
        _ = ctx.stop.cancelled() => { ctx.ready.fetch_add(1, Relaxed); return user.report() }
        _ = tokio::time::sleep_until((ctx.t0 + slot).into()) => {}
    }
    let url = &ctx.urls[index as usize % ctx.urls.len()];
    // The user's future is what every idle user holds for the whole run, and it is as
    // large as its largest await: so the handshake (several KiB of state) and the rare
    // paths (reconnection, churn) are boxed while they run, and the session itself lives
    // on the heap, once, rather than in the future's layout (where the result of the
    // connect and the session would each take a slot).
    let mut client: Box<StompClient> = match Box::pin(tokio::time::timeout(
        Duration::from_secs(30),
        StompClient::connect(url, &ctx.connect),
    ))
    .await
    {
        Ok(Ok(client)) => Box::new(client),
        Ok(Err(e)) => {
            let text = e.to_string();
            let cause = if text.contains(url.as_str()) {
                format!("cannot connect: {text}")
            } else {
                format!("cannot connect to {url}: {text}")
            };
            ctx.warnings.warn(&cause, &format!("user {index}"));
            ctx.recorder.connect_errors.fetch_add(1, Relaxed);
            ctx.ready.fetch_add(1, Relaxed);
            return user.report();
        }
        Err(_) => {
            ctx.warnings.warn(
                &format!("no CONNECTED from {url} within 30 s"),
                &format!("user {index}"),
            );
            ctx.recorder.connect_errors.fetch_add(1, Relaxed);
            ctx.ready.fetch_add(1, Relaxed);
            return user.report();
        }
    };
    ctx.recorder.session_opened();
    let subscribed = Box::pin(user.subscribe_all(&mut client)).await;
    if subscribed {
        ctx.recorder.subscribed.fetch_add(1, Relaxed);
    }
    ctx.ready.fetch_add(1, Relaxed);
    if !subscribed {
        ctx.recorder.session_closed();
        return user.report();
    }
    let mut server = index as usize % ctx.urls.len();
    loop {
        let broke = user.converse(&mut client, &control).await;
        ctx.recorder.session_closed();
        if !broke {
            let _ = Box::pin(tokio::time::timeout(
                Duration::from_secs(2),
                client.send_frame(&Frame::new(Command::Disconnect)),
            ))
            .await;
            break;
        }
        // The session is gone: nothing numbered from now on can reach this user, so
        // it is not expected (the disconnect itself is counted).
        ctx.recorder.disconnects.fetch_add(1, Relaxed);
        let down_us = user.now_us();
        let left = Box::pin(user.session_lost()).await;
        let Some(policy) = ctx.scenario.users.reconnect.clone() else {
            break;
        };
        let slot = ctx
            .tracking
            .as_ref()
            .and_then(|t| t.session_broke(index, down_us));
        // Boxed at once: the reconnection's result is not kept across the rejoin below.
        let Some(back) = Box::pin(user.reconnect(&policy, &mut server))
            .await
            .map(Box::new)
        else {
            break;
        };
        client = back;
        ctx.recorder.session_reopened();
        let up_us = user.now_us();
        Box::pin(user.rejoin_all(&left)).await;
        if let Some(t) = &ctx.tracking {
            t.session_back(slot, up_us);
        }
    }
    user.expire_pending();
    user.report()
}

impl User {
    fn report(self) -> UserReport {
        UserReport {
            index: self.index,
            memberships: self.memberships,
        }
    }

    fn now_us(&self) -> u64 {
        self.ctx.t0.elapsed().as_micros() as u64
    }

    fn subscribe_frame(&self, room: u32, receipt: bool) -> Frame {
        let plan = &self.ctx.plan.rooms[room as usize];
        let mut frame = Frame::new(Command::Subscribe)
            .header("id", format!("r{room}"))
            .header(
                "destination",
                self.ctx.scenario.target.subscribe_destination(&plan.id),
            )
            .header("ack", "auto");
        if receipt {
            frame = frame.header("receipt", format!("sub-{room}"));
        }
        frame
    }

    /// Subscribes to every room; with receipts, waits until all are confirmed.
    async fn subscribe_all(&mut self, client: &mut StompClient) -> bool {
        let rooms = self.ctx.plan.users[self.index as usize].rooms.clone();
        for room in &rooms {
            if let Err(e) = client
                .send_frame(&self.subscribe_frame(*room, self.ctx.receipts))
                .await
            {
                self.ctx.warnings.warn(
                    &format!("SUBSCRIBE failed: {e}"),
                    &format!("user {}", self.index),
                );
                return false;
            }
        }
        let mut confirmed = 0;
        while self.ctx.receipts && confirmed < rooms.len() {
            match client.recv_timeout(Duration::from_secs(30)).await {
                Ok(Some(frame)) if frame.command == Command::Receipt => confirmed += 1,
                Ok(Some(frame)) if frame.command == Command::Error => {
                    self.ctx.recorder.error(self.index);
                    self.ctx.warnings.warn(
                        &format!(
                            "ERROR while subscribing: {}",
                            frame.get("message").unwrap_or("(no message)")
                        ),
                        &format!("user {}", self.index),
                    );
                    return false;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => {
                    self.ctx.warnings.warn(
                        "no RECEIPT for SUBSCRIBE within 30 s",
                        &format!("user {}", self.index),
                    );
                    return false;
                }
            }
        }
        // Nothing is sent before every user is subscribed: expect from the start.
        for (room, snapshot) in self.ctx.snapshots(&rooms).await {
            self.memberships.entry(room).or_default().join(snapshot);
        }
        true
    }

    fn first_sends(&mut self) {
        // A user that became ready late starts from now, not with a backlog.
        let base = self.schedule.send_start_us.max(self.now_us());
        let sends_to = self.ctx.plan.users[self.index as usize].sends_to.clone();
        for room in sends_to {
            let at = match &self.ctx.scenario.load.model {
                LoadModel::Open { arrival, .. } => {
                    // Constant arrivals: spread the senders' phases evenly over the period
                    // (a golden-ratio sequence over the slots), so the total rate is smooth.
                    match arrival {
                        Arrival::Constant => {
                            let period = self.period_us(room) as f64;
                            let ordinal = self.ctx.slots.slot(room, self.index).unwrap_or(0) as f64;
                            base + ((ordinal * 0.618_033_988_749_895).fract() * period) as u64
                        }
                        // Memoryless: the first gap is exponential too, or short runs
                        // would send more than rate × time.
                        Arrival::Poisson => base + self.next_gap_us(room),
                    }
                }
                LoadModel::Closed { .. } => base,
            };
            self.due.push(Reverse((at, room)));
        }
    }

    /// Open model: how many sends of `room` were due from `at` until `end` (the first at
    /// `at` included); closed model: none (a closed-model user never falls behind).
    fn backlog_of(&self, room: u32, at: u64, end: u64) -> u64 {
        match self.ctx.scenario.load.model {
            LoadModel::Open { .. } if at < end => 1 + (end - at - 1) / self.period_us(room).max(1),
            _ => 0,
        }
    }

    fn period_us(&self, room: u32) -> u64 {
        let rate = self.ctx.plan.rooms[room as usize].rate_per_sender.max(1e-9);
        (1e6 / rate) as u64
    }

    fn next_gap_us(&mut self, room: u32) -> u64 {
        match &self.ctx.scenario.load.model {
            LoadModel::Open {
                arrival: Arrival::Poisson,
                ..
            } => {
                let mean = self.period_us(room) as f64;
                let u: f64 = self.rng.random::<f64>().max(1e-12);
                (-u.ln() * mean) as u64
            }
            _ => self.period_us(room),
        }
    }

    /// Runs one session until the run stops (`false`) or the session breaks (`true`).
    async fn converse(&mut self, client: &mut StompClient, control: &Mailbox) -> bool {
        // Heart-beats flow from the moment the session is up, including the wait for the
        // rest of the ramp, or the server would drop users that connected early.
        let (cx, _) = self.ctx.connect.heartbeat;
        let sy = client
            .connected
            .get("heart-beat")
            .and_then(crate::stomp::parse_heart_beat)
            .map_or(0, |(_, sy)| sy);
        let beat = heart_beat_period(cx, sy);
        let mut beat_tick = tokio::time::interval(Duration::from_millis(if beat > 0 {
            beat
        } else {
            3_600_000
        }));
        beat_tick.tick().await;
        // The server's side: nothing heard for two of its periods means a dead session.
        let mut liveness =
            tokio::time::interval(Duration::from_millis(client.server_beat_ms.max(100)));
        liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Only a closed model (re-arming a message that never came back) and churn (a
        // leave or a rejoin in progress) need looking after between events: an idle user
        // of an open-model run wakes for nothing else than its sends and heart-beats.
        let closed_model = matches!(self.ctx.scenario.load.model, LoadModel::Closed { .. });
        let mut housekeeping = tokio::time::interval(Duration::from_millis(100));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut send_timer = SendTimer::new(self.ctx.precise_sends);
        // Everything but frames and sends waits behind one gate: a user's task wakes for
        // every MESSAGE it receives, and polling the rest on each of those wakes (a wait
        // on the run's cancellation token locks it and its notifier; each interval reads
        // the clock) cost as much as checking the MESSAGE did. The end of the run comes
        // through the mailbox. The schedule's wait is on the heap and only until the
        // schedule is out: every user keeps this loop's state for the whole run.
        let mut published = (!self.scheduled).then(|| {
            let mut schedule = self.ctx.schedule.clone();
            Box::pin(async move {
                schedule
                    .wait_for(|s| s.is_some())
                    .await
                    .ok()
                    .and_then(|s| *s)
            })
        });
        let server_beats = client.server_beat_ms > 0;
        let mut rare = WakeGate::new(std::future::poll_fn(|cx| {
            if control.poll_stopped(cx).is_ready() {
                return Poll::Ready(Rare::Stop);
            }
            if let Some(wait) = published.as_mut() {
                if let Poll::Ready(got) = wait.as_mut().poll(cx) {
                    published = None;
                    return Poll::Ready(Rare::Scheduled(got));
                }
            }
            if let Poll::Ready(command) = control.poll_recv(cx) {
                return Poll::Ready(Rare::Command(command));
            }
            if beat > 0 && beat_tick.poll_tick(cx).is_ready() {
                return Poll::Ready(Rare::Beat);
            }
            if server_beats && liveness.poll_tick(cx).is_ready() {
                return Poll::Ready(Rare::Liveness);
            }
            Poll::Pending
        }));
        let ended = loop {
            let send_end_us = self.schedule.send_end_us;
            let next_due = self
                .due
                .peek()
                .map(|Reverse((at, _))| *at)
                .filter(|at| *at < send_end_us);
            send_timer.set(next_due.map(|at| self.ctx.t0 + Duration::from_micros(at)));
            tokio::select! {
                why = &mut rare => match why {
                    Rare::Stop => break false,
                    Rare::Scheduled(got) => {
                        self.scheduled = true;
                        if let Some(s) = got {
                            self.schedule = s;
                            self.first_sends();
                        }
                    }
                    Rare::Beat => {
                        if client.heartbeat().await.is_err() {
                            break true;
                        }
                    }
                    Rare::Command(Control::Leave(room)) => Box::pin(self.start_leave(room)).await,
                    Rare::Liveness => {
                        if let Some(silent) = client.server_silent() {
                            self.ctx.warnings.warn(
                                "a server sent no heart-beat for twice the agreed period; the session was taken for dead",
                                &format!(
                                    "user {}: nothing for {} ms, heart-beats every {} ms",
                                    self.index,
                                    silent.as_millis(),
                                    client.server_beat_ms
                                ),
                            );
                            break true;
                        }
                    }
                },
                frame = client.recv() => match frame {
                    Ok(Some(frame)) => self.on_frame(client, frame).await,
                    Ok(None) | Err(_) => break true,
                },
                _ = send_timer.wait() => {
                    if let Some(Reverse((at, room))) = self.due.pop() {
                        if self.send(client, room, at).await.is_err() {
                            break true;
                        }
                    }
                }
                _ = housekeeping.tick(), if closed_model || self.leaving.is_some() || !self.away.is_empty() => {
                    self.rearm_closed_model();
                    if Box::pin(self.churn_step(client)).await.is_err() {
                        break true;
                    }
                }
            }
        };
        // Sends still due when the run stopped (the user never got to them) were not
        // sent: count them as the harness falling behind, like late ones.
        let end = self.schedule.send_end_us;
        if !ended && end > 0 {
            let mut backlog = 0;
            for Reverse((at, room)) in std::mem::take(&mut self.due).into_vec() {
                backlog += self.backlog_of(room, at, end);
            }
            self.ctx.recorder.unsent_backlog.fetch_add(backlog, Relaxed);
        }
        ended
    }

    /// The session broke: every room is left at the current numbering (returned per
    /// room, to count what the user misses while away); receipts still awaited will never
    /// come; churn in progress is dropped (the rooms are all rejoined on reconnection).
    async fn session_lost(&mut self) -> HashMap<u32, HashMap<u32, u64>> {
        let rooms: Vec<u32> = self.memberships.keys().copied().collect();
        let left = self.ctx.snapshots(&rooms).await;
        for (room, snapshot) in &left {
            if let Some(m) = self.memberships.get_mut(room) {
                m.leave_broken(snapshot);
            }
        }
        self.leaving = None;
        self.away.clear();
        self.expire_pending();
        // Closed model: the message each room waited for may never come back.
        let now = self.now_us();
        for (room, _) in std::mem::take(&mut self.awaiting) {
            self.due.push(Reverse((now, room)));
        }
        left
    }

    /// Receipts still awaited will never come: counted by their send time.
    fn expire_pending(&mut self) {
        let t0 = self.ctx.t0;
        for (_, sent) in self.pending.drain() {
            if let Some(t) = &self.ctx.tracking {
                t.receipt_lost(sent.saturating_duration_since(t0).as_micros() as u64);
            }
        }
    }

    /// Opens a new session after a break: waits with backoff (jittered), moves to the
    /// next server URL each attempt, connects and subscribes to every room again.
    /// `None` when the run stopped first.
    async fn reconnect(
        &mut self,
        policy: &crate::scenario::Reconnect,
        server: &mut usize,
    ) -> Option<StompClient> {
        let ctx = self.ctx.clone();
        let mut attempt = 0u32;
        loop {
            let scale = 1.0 - policy.jitter * self.rng.random::<f64>();
            let wait = policy.backoff(attempt).mul_f64(scale.clamp(0.0, 1.0));
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = ctx.stop.cancelled() => return None,
                _ = tokio::time::sleep(wait) => {}
            }
            *server = (*server + 1) % ctx.urls.len();
            let url = &ctx.urls[*server];
            let opened = tokio::select! {
                _ = ctx.stop.cancelled() => return None,
                // Boxed for the same reason as the first connect.
                r = Box::pin(tokio::time::timeout(RECONNECT_TIMEOUT, StompClient::connect(url, &ctx.connect))) => r,
            };
            let mut client = match opened {
                Ok(Ok(client)) => client,
                Ok(Err(e)) => {
                    ctx.warnings.warn(
                        &format!("reconnect to {url} failed: {e}"),
                        &format!("user {}", self.index),
                    );
                    continue;
                }
                Err(_) => {
                    ctx.warnings.warn(
                        &format!("reconnect to {url}: no CONNECTED within {RECONNECT_TIMEOUT:?}"),
                        &format!("user {}", self.index),
                    );
                    continue;
                }
            };
            if self.resubscribe(&mut client).await {
                return Some(client);
            }
            if ctx.stop.is_cancelled() {
                return None;
            }
        }
    }

    /// SUBSCRIBE to every room on a new session and wait until the server has them: for
    /// their receipts, or (no receipts) [`SUBSCRIBE_SETTLE`]. Frames meanwhile are not
    /// expected by anybody and are dropped.
    async fn resubscribe(&mut self, client: &mut StompClient) -> bool {
        let ctx = self.ctx.clone();
        let rooms: Vec<u32> = self.memberships.keys().copied().collect();
        for room in &rooms {
            if let Err(e) = client
                .send_frame(&self.subscribe_frame(*room, ctx.receipts))
                .await
            {
                ctx.warnings.warn(
                    &format!("SUBSCRIBE after reconnecting failed: {e}"),
                    &format!("user {}", self.index),
                );
                return false;
            }
        }
        let deadline = tokio::time::Instant::now()
            + if ctx.receipts {
                RECONNECT_TIMEOUT
            } else {
                SUBSCRIBE_SETTLE
            };
        let mut confirmed = 0;
        loop {
            if ctx.receipts && confirmed == rooms.len() {
                return true;
            }
            let frame = tokio::select! {
                _ = ctx.stop.cancelled() => return false,
                _ = tokio::time::sleep_until(deadline) => {
                    if ctx.receipts {
                        ctx.warnings.warn("no RECEIPT for SUBSCRIBE after reconnecting", &format!("user {}", self.index));
                        return false;
                    }
                    return true;
                }
                f = client.recv() => f,
            };
            match frame {
                Ok(Some(f)) if f.command == Command::Receipt => confirmed += 1,
                Ok(Some(f)) if f.command == Command::Error => {
                    ctx.recorder.error(self.index);
                    return false;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Subscribed again after a break: expect from now on, count what was numbered while
    /// away as missed, and move sends that came due while away past now (skipped, and
    /// counted, rather than sent as a burst).
    async fn rejoin_all(&mut self, left: &HashMap<u32, HashMap<u32, u64>>) {
        let mut missed = 0;
        let rooms: Vec<u32> = left.keys().copied().collect();
        let mut now_all = self.ctx.snapshots(&rooms).await;
        for (room, before) in left {
            let now = now_all.remove(room).unwrap_or_default();
            missed += before
                .iter()
                .map(|(sender, at)| now.get(sender).copied().unwrap_or(*at).saturating_sub(*at))
                .sum::<u64>();
            self.memberships.entry(*room).or_default().join(now);
        }
        let now_us = self.now_us();
        let end = self.schedule.send_end_us;
        let mut skipped = 0;
        let due = std::mem::take(&mut self.due).into_vec();
        for Reverse((at, room)) in due {
            if at >= now_us || !matches!(self.ctx.scenario.load.model, LoadModel::Open { .. }) {
                self.due.push(Reverse((at, room)));
                continue;
            }
            let n = self.backlog_of(room, at, now_us.min(end.max(at + 1)));
            skipped += n;
            self.due
                .push(Reverse((at + n * self.period_us(room).max(1), room)));
        }
        if let Some(t) = &self.ctx.tracking {
            t.missed_while_disconnected.fetch_add(missed, Relaxed);
            t.unsent_while_disconnected.fetch_add(skipped, Relaxed);
        }
    }

    /// Closed model: a send whose echo or receipt never came is re-armed after the grace
    /// period, so one lost message does not silence a sender for the rest of the run.
    fn rearm_closed_model(&mut self) {
        let LoadModel::Closed { think_time } = self.ctx.scenario.load.model else {
            return;
        };
        let grace = self.ctx.scenario.grace.max(Duration::from_secs(1));
        let stale: Vec<u32> = self
            .awaiting
            .iter()
            .filter(|(_, (_, since))| since.elapsed() > grace)
            .map(|(room, _)| *room)
            .collect();
        for room in stale {
            self.awaiting.remove(&room);
            let at = self.now_us() + think_time.as_micros() as u64;
            self.due.push(Reverse((at, room)));
        }
    }

    async fn send(
        &mut self,
        client: &mut StompClient,
        room: u32,
        intended_us: u64,
    ) -> Result<(), crate::client::ClientError> {
        let ctx = self.ctx.clone();
        let Some(slot) = ctx.slots.slot(room, self.index) else {
            return Ok(());
        };
        let now_us = self.now_us();
        if now_us >= self.schedule.send_end_us + LATE_SEND_ALLOWANCE_US {
            // Far behind schedule when sending ended: the backlog is not sent, and is
            // counted. A send due before the end that wakes a little late still goes
            // (its latency, counted from the intended time, shows the lateness).
            let end = self.schedule.send_end_us;
            let mut backlog = self.backlog_of(room, intended_us, end);
            for Reverse((at, room)) in std::mem::take(&mut self.due).into_vec() {
                backlog += self.backlog_of(room, at, end);
            }
            ctx.recorder.unsent_backlog.fetch_add(backlog, Relaxed);
            return Ok(());
        }
        if self.away.contains_key(&room) || self.leaving.as_ref().is_some_and(|l| l.room == room) {
            // Not a member right now: skip this turn, keep the schedule going.
            let next = match ctx.scenario.load.model {
                LoadModel::Open { .. } => intended_us + self.next_gap_us(room),
                LoadModel::Closed { think_time } => now_us + think_time.as_micros() as u64,
            };
            self.due.push(Reverse((next, room)));
            return Ok(());
        }
        let seq = ctx.slots.next_seq(slot);
        let sent_us = now_us;
        let intended_us = match ctx.scenario.load.model {
            LoadModel::Open { .. } => intended_us,
            LoadModel::Closed { .. } => sent_us,
        };
        let stamp = Stamp {
            sender: self.index,
            room,
            seq,
            intended_us,
            sent_us,
        };
        let size = ctx.scenario.load.message_size.sample(&mut self.rng) as usize;
        let text = stamp.text(&ctx.run_id, size);
        let room_id = &ctx.plan.rooms[room as usize].id;
        let body = match ctx.scenario.target.body {
            BodyFormat::ChatJson => serde_json::json!({
                "roomId": room_id, "sender": ctx.plan.users[self.index as usize].id, "message": text, "type": "TALK"
            })
            .to_string(),
            BodyFormat::Raw => text,
        };
        let receipt = (ctx.receipts && self.pending.len() < MAX_PENDING_RECEIPTS)
            .then(|| format!("{room}:{seq}"));
        let destination = ctx.scenario.target.send_destination(room_id);
        if let Err(e) = client.send(&destination, body, receipt.as_deref()).await {
            // Numbered but never on the wire: nobody may expect it.
            ctx.slots.void(slot, seq);
            if let Some(t) = &ctx.tracking {
                t.send_failed(intended_us);
            }
            return Err(e);
        }
        if let Some(receipt) = receipt {
            self.pending.insert(receipt, Instant::now());
        }
        let lag = matches!(ctx.scenario.load.model, LoadModel::Open { .. })
            .then(|| sent_us.saturating_sub(intended_us));
        ctx.recorder
            .sent(self.index, self.schedule.measured(intended_us), lag);
        match ctx.scenario.load.model {
            LoadModel::Open { .. } => {
                let gap = self.next_gap_us(room);
                self.due.push(Reverse((intended_us + gap, room)));
            }
            LoadModel::Closed { .. } => {
                self.awaiting.insert(room, (seq, Instant::now()));
            }
        }
        Ok(())
    }

    async fn on_frame(&mut self, client: &mut StompClient, frame: Frame) {
        match frame.command {
            Command::Message => {
                let now = self.now_us();
                let receiver = Receiver {
                    marker: &self.ctx.marker,
                    slots: &self.ctx.slots,
                    recorder: &self.ctx.recorder,
                    schedule: self.schedule,
                    timed: self.ctx.timed.as_deref(),
                };
                let memberships = &mut self.memberships;
                let Received::Delivered {
                    stamp,
                    corrected_us: corrected,
                } = receiver.receive(&frame.body, self.index, now, |room| {
                    memberships.get_mut(&room)
                })
                else {
                    return;
                };
                if let Some(t) = &self.ctx.tracking {
                    let partition = self
                        .ctx
                        .room_partitions
                        .get(stamp.room as usize)
                        .copied()
                        .flatten();
                    t.delivered(self.home, partition, now);
                    let sender_home = home_of(stamp.sender, self.ctx.urls.len());
                    t.latency
                        .record(self.home, sender_home, partition, corrected);
                }
                if stamp.sender == self.index && !self.ctx.receipts {
                    self.closed_model_next(stamp.room, stamp.seq);
                }
                if let Some(leaving) = &self.leaving {
                    if leaving.room == stamp.room {
                        let _ = Box::pin(self.churn_step(client)).await;
                    }
                }
            }
            Command::Receipt => {
                let Some(id) = frame.get("receipt-id") else {
                    return;
                };
                if let Some(room) = id.strip_prefix("sub-").and_then(|r| r.parse::<u32>().ok()) {
                    if matches!(self.away.get(&room), Some(Away::Rejoining)) {
                        Box::pin(self.rejoined(client, room)).await;
                    }
                    return;
                }
                if let Some(sent) = self.pending.remove(id) {
                    let us = sent.elapsed().as_micros() as u64;
                    let intended = sent.duration_since(self.ctx.t0).as_micros() as u64;
                    self.ctx
                        .recorder
                        .receipt(self.index, us, self.schedule.measured(intended));
                    if let Some((room, seq)) = id
                        .split_once(':')
                        .and_then(|(r, s)| Some((r.parse::<u32>().ok()?, s.parse().ok()?)))
                    {
                        if let Some(t) = &self.ctx.tracking {
                            t.receipt(intended, us);
                            if let Some(slot) = self.ctx.slots.slot(room, self.index) {
                                self.ctx.slots.receipted(slot, seq);
                            }
                        }
                        self.closed_model_next(room, seq);
                    }
                }
            }
            Command::Error => {
                self.ctx.recorder.error(self.index);
                self.ctx.warnings.warn(
                    &format!(
                        "ERROR from the server: {}",
                        frame.get("message").unwrap_or("(no message)")
                    ),
                    &format!("user {}", self.index),
                );
            }
            _ => {}
        }
    }

    fn closed_model_next(&mut self, room: u32, seq: u64) {
        if let LoadModel::Closed { think_time } = self.ctx.scenario.load.model {
            if self.awaiting.get(&room).is_some_and(|(s, _)| *s == seq) {
                self.awaiting.remove(&room);
                let at = self.now_us() + think_time.as_micros() as u64;
                self.due.push(Reverse((at, room)));
            }
        }
    }

    async fn start_leave(&mut self, room: u32) {
        if self.leaving.is_some()
            || self.away.contains_key(&room)
            || !self.memberships.contains_key(&room)
        {
            return;
        }
        let snapshot = self.ctx.snapshot(room).await;
        self.leaving = Some(Leaving {
            room,
            snapshot,
            deadline: Instant::now() + self.ctx.scenario.grace,
        });
    }

    /// Advances a leave (once caught up) or a rejoin (once its time came).
    async fn churn_step(
        &mut self,
        client: &mut StompClient,
    ) -> Result<(), crate::client::ClientError> {
        if let Some(leaving) = &self.leaving {
            let room = leaving.room;
            let done = self
                .memberships
                .get(&room)
                .is_none_or(|m| m.caught_up(&leaving.snapshot));
            if done || Instant::now() >= leaving.deadline {
                let leaving = self.leaving.take().expect("checked above");
                if let Some(m) = self.memberships.get_mut(&room) {
                    m.leave(&leaving.snapshot);
                }
                self.presence(client, room, "LEAVE").await?;
                client
                    .send_frame(&Frame::new(Command::Unsubscribe).header("id", format!("r{room}")))
                    .await?;
                let back = Instant::now() + self.ctx.churn_rejoin;
                self.away.insert(room, Away::Until(back));
            }
        }
        let now = Instant::now();
        let due: Vec<u32> = self
            .away
            .iter()
            .filter_map(|(room, away)| matches!(away, Away::Until(t) if *t <= now).then_some(*room))
            .collect();
        for room in due {
            if self.ctx.receipts {
                client.send_frame(&self.subscribe_frame(room, true)).await?;
                self.away.insert(room, Away::Rejoining);
            } else {
                client
                    .send_frame(&self.subscribe_frame(room, false))
                    .await?;
                self.away
                    .insert(room, Away::Settling(Instant::now() + SUBSCRIBE_SETTLE));
            }
        }
        let settled: Vec<u32> = self
            .away
            .iter()
            .filter_map(|(room, away)| {
                matches!(away, Away::Settling(t) if *t <= now).then_some(*room)
            })
            .collect();
        for room in settled {
            self.rejoined(client, room).await;
        }
        Ok(())
    }

    async fn rejoined(&mut self, client: &mut StompClient, room: u32) {
        self.away.remove(&room);
        let snapshot = self.ctx.snapshot(room).await;
        self.memberships.entry(room).or_default().join(snapshot);
        let _ = self.presence(client, room, "ENTER").await;
    }

    /// An ENTER or LEAVE chat message (unstamped: it is not part of the measured traffic).
    async fn presence(
        &mut self,
        client: &mut StompClient,
        room: u32,
        kind: &str,
    ) -> Result<(), crate::client::ClientError> {
        let ctx = self.ctx.clone();
        let room_id = &ctx.plan.rooms[room as usize].id;
        let user = &ctx.plan.users[self.index as usize].id;
        let text = format!("{user} {}", if kind == "ENTER" { "joined" } else { "left" });
        let body = match ctx.scenario.target.body {
            BodyFormat::ChatJson => {
                serde_json::json!({"roomId": room_id, "sender": user, "message": text, "type": kind}).to_string()
            }
            BodyFormat::Raw => text,
        };
        client
            .send(&ctx.scenario.target.send_destination(room_id), body, None)
            .await
    }
}

/// `x` seconds as a Duration, saturating at a year (never a panic for huge or odd input).
/// The server group of user `index`: users are spread over the server URLs in turn, and
/// a user's first server is its group (also after it reconnects elsewhere).
pub fn home_of(index: u32, servers: usize) -> usize {
    index as usize % servers.max(1)
}

fn secs(x: f64) -> Duration {
    const YEAR: f64 = 365.0 * 86_400.0;
    Duration::from_secs_f64(if x.is_finite() {
        x.clamp(0.0, YEAR)
    } else {
        YEAR
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mailbox_holds_a_few_commands_in_order_and_wakes_its_user() {
        let mailbox = Arc::new(Mailbox::default());
        // Queued before anyone waits: kept, in order, up to the limit.
        for room in 0..MAILBOX as u32 {
            assert!(mailbox.try_send(Control::Leave(room)));
        }
        assert!(!mailbox.try_send(Control::Leave(99)), "one past the limit");
        for room in 0..MAILBOX as u32 {
            let Control::Leave(got) = mailbox.recv().await;
            assert_eq!(got, room);
        }
        // A user waiting on an empty mailbox is woken by the next command.
        let waiting = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.recv().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert!(mailbox.try_send(Control::Leave(7)));
        let Control::Leave(got) = waiting.await.unwrap();
        assert_eq!(got, 7);
    }

    #[tokio::test]
    async fn a_stop_wakes_a_user_waiting_on_its_mailbox_and_stays() {
        let mailbox = Arc::new(Mailbox::default());
        // Waiting as a user's loop does: for a command or the end of the run.
        let waiting = tokio::spawn({
            let mailbox = mailbox.clone();
            async move {
                std::future::poll_fn(|cx| {
                    if mailbox.poll_stopped(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    mailbox.poll_recv(cx).map(Some)
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "nothing has happened yet");
        mailbox.stop();
        let woke = tokio::time::timeout(Duration::from_secs(10), waiting).await;
        assert!(woke.expect("woken by the stop").unwrap().is_none());
        // A user that comes back to its mailbox later (after a reconnection) still sees it.
        let later = std::future::poll_fn(|cx| Poll::Ready(mailbox.poll_stopped(cx))).await;
        assert!(later.is_ready());
    }
}
