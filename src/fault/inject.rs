//! Injecting a scenario's faults at their time, and undoing them.
//!
//! Each fault waits for its time (`at` after sending starts) and then acts:
//!
//! - **kill-broker / kill-server**: the process's command line and environment are read
//!   from `/proc` first (so it can be started again exactly), then it gets SIGKILL and
//!   the injector waits until it is gone, ports included. `node = "leader"` asks the
//!   cluster which broker leads the room's partition (Kafka's murmur2 placement of the
//!   room id, which the reference server and the Spring peer both use).
//! - **restart-broker / restart-server**: kills the process if it still runs, starts it
//!   again as captured, records its new PID in `state.json`, and waits until it listens
//!   (a broker's port accepts; a server's `/healthz` answers 200).
//! - **pause-db**: SIGSTOP to PostgreSQL's postmaster and every backend, SIGCONT after
//!   `duration`.
//! - **delay / drop / partition**: switches the relay in front of that server.
//! - **exec**: `sh -c COMMAND` with `STOMPEDE_RUN_ID` and `STOMPEDE_FAULT` set; a
//!   non-zero exit is a failed injection.
//!
//! Whatever happens, a fault with a duration is lifted: when its time is up, when the
//! run stops, or when the injector is dropped (guards send SIGCONT / clear the relay).
//! After the run, [`Injector::restore`] starts again any broker or server a fault killed
//! and nothing restarted, so a stack the run did not start is left as it was found.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::relay::{NetControl, NetFault};
use crate::load::shared_group::partition_for_key;
use crate::load::Schedule;
use crate::scenario::{server_index, Fault, FaultAction};
use crate::stack::respawn::{self, Captured};
use crate::stack::{self, Role, Stack, StackInfo};

/// Longest an `exec` command may run.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a restarted broker may take to listen again (a server gets its usual start
/// timeout).
pub const RESTART_TIMEOUT: Duration = Duration::from_secs(90);

/// Whose deliveries a fault's outage is measured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affected {
    /// Every user.
    All,
    /// The users whose first server is this one (index into the target's URLs).
    Server(usize),
    /// The rooms on these Kafka partitions (those a killed broker led).
    Partitions(Vec<u32>),
}

/// What happened to one fault.
#[derive(Debug, Clone)]
pub struct Injected {
    /// Position in the scenario (0-based).
    pub index: usize,
    pub kind: &'static str,
    /// What it acted on, for people.
    pub target: String,
    /// Whose deliveries the outage figures watch.
    pub affected: Affected,
    /// The scenario's `at`.
    pub planned: Duration,
    /// When it was injected (µs since the run's t0), if it was.
    pub at_us: Option<u64>,
    /// When it was lifted (faults with a duration).
    pub end_us: Option<u64>,
    pub error: Option<String>,
}

/// Injects one run's faults; see the module docs.
pub struct Injector<'a> {
    faults: Vec<Fault>,
    t0: Instant,
    run_id: String,
    /// The local stack as it stands (PIDs change on restarts), if any.
    stack: Option<Mutex<StackInfo>>,
    /// The stack, when this run started it (restarted processes join its registry).
    owned: Option<&'a Stack>,
    state_dir: PathBuf,
    relays: HashMap<usize, Arc<NetControl>>,
    /// Killed processes by label, and whether something started them again.
    captured: Mutex<HashMap<String, (Captured, bool)>>,
}

impl<'a> Injector<'a> {
    pub fn new(
        faults: Vec<Fault>,
        t0: Instant,
        run_id: &str,
        stack: Option<StackInfo>,
        owned: Option<&'a Stack>,
        state_dir: PathBuf,
        relays: HashMap<usize, Arc<NetControl>>,
    ) -> Injector<'a> {
        Injector {
            faults,
            t0,
            run_id: run_id.to_string(),
            stack: stack.map(Mutex::new),
            owned,
            state_dir,
            relays,
            captured: Mutex::new(HashMap::new()),
        }
    }

    fn now_us(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    fn info(&self) -> Option<StackInfo> {
        self.stack
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// Waits for the run's schedule, then injects every fault at its time; returns when
    /// all are done (or, at `stop`, right away with the rest marked not injected).
    pub async fn run(
        &self,
        mut schedule: watch::Receiver<Option<Schedule>>,
        stop: CancellationToken,
    ) -> Vec<Injected> {
        let started = tokio::select! {
            _ = stop.cancelled() => None,
            s = schedule.wait_for(|s| s.is_some()) => s.ok().and_then(|s| *s),
        };
        let Some(schedule) = started else {
            return (0..self.faults.len())
                .map(|i| self.blank(i, Some("the run ended before sending started".into())))
                .collect();
        };
        let all = (0..self.faults.len()).map(|i| self.one(i, schedule.send_start_us, &stop));
        futures_util::future::join_all(all).await
    }

    fn blank(&self, index: usize, error: Option<String>) -> Injected {
        let f = &self.faults[index];
        Injected {
            index,
            kind: f.action.kind(),
            target: describe(&f.action),
            affected: affected(&f.action),
            planned: f.at,
            at_us: None,
            end_us: None,
            error,
        }
    }

    async fn one(&self, index: usize, send_start_us: u64, stop: &CancellationToken) -> Injected {
        let mut out = self.blank(index, None);
        let fault = self.faults[index].clone();
        let due = self.t0 + Duration::from_micros(send_start_us) + fault.at;
        tokio::select! {
            _ = stop.cancelled() => {
                out.error = Some("the run ended before its time".into());
                return out;
            }
            _ = tokio::time::sleep_until(due.into()) => {}
        }
        out.at_us = Some(self.now_us());
        let result = match &fault.action {
            FaultAction::KillBroker { node, room } => {
                match self.kill_broker(*node, room.as_deref()).await {
                    Ok((target, led)) => {
                        out.affected = Affected::Partitions(led);
                        Ok(Some(target))
                    }
                    Err(e) => Err(e),
                }
            }
            FaultAction::RestartBroker { node } => self.restart_broker(*node).await,
            FaultAction::KillServer { server } => self.kill_server(server).await,
            FaultAction::RestartServer { server } => self.restart_server(server).await,
            FaultAction::PauseDb { duration } => {
                let r = self.pause_db(*duration, stop).await;
                out.end_us = Some(self.now_us());
                r
            }
            FaultAction::Delay {
                server,
                duration,
                delay,
            } => {
                let r = self
                    .network(server, NetFault::Delay(*delay), *duration, stop)
                    .await;
                out.end_us = Some(self.now_us());
                r
            }
            FaultAction::Drop { server, duration } => {
                let r = self.network(server, NetFault::Drop, *duration, stop).await;
                out.end_us = Some(self.now_us());
                r
            }
            FaultAction::Partition { server, duration } => {
                let r = self
                    .network(server, NetFault::Partition, *duration, stop)
                    .await;
                out.end_us = Some(self.now_us());
                r
            }
            FaultAction::Exec { command } => self.exec(index, command, stop).await,
        };
        match result {
            Ok(Some(target)) => out.target = target,
            Ok(None) => {}
            Err(e) => out.error = Some(e),
        }
        out
    }

    /// Kills a broker; returns what it was and the partitions it led.
    async fn kill_broker(
        &self,
        node: Option<u32>,
        room: Option<&str>,
    ) -> Result<(String, Vec<u32>), String> {
        let info = self.info().ok_or("no local stack")?;
        let leaders = stack::partition_leaders(&info.kafka_bootstrap, &info.topic)
            .await
            .map_err(|e| e.to_string())?;
        let (node, what) = match (node, room) {
            (Some(n), _) => (n, format!("broker {n}")),
            (None, Some(room)) => {
                let partition = partition_for_key(room, info.partitions);
                let leader = leaders.get(partition as usize).copied().unwrap_or(-1);
                if leader < 0 {
                    return Err(format!(
                        "partition {partition} (room {room}) has no leader right now"
                    ));
                }
                (
                    leader as u32,
                    format!("broker {leader}, leader of {room}'s partition {partition}"),
                )
            }
            (None, None) => return Err("no node given".into()),
        };
        let led: Vec<u32> = leaders
            .iter()
            .enumerate()
            .filter(|(_, l)| **l == node as i32)
            .map(|(p, _)| p as u32)
            .collect();
        let led_text = led
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let target = format!("{what} (leading partitions {led_text})");
        let b = info
            .brokers
            .iter()
            .find(|b| b.node_id == node)
            .ok_or_else(|| format!("the stack has no broker {node}"))?;
        self.kill(
            Role::Kafka,
            &format!("kafka broker {node}"),
            b.pid,
            b.pid_start,
            &b.log,
        )
        .await?;
        Ok((target, led))
    }

    async fn kill_server(&self, server: &str) -> Result<Option<String>, String> {
        let info = self.info().ok_or("no local stack")?;
        let s = server_index(server)
            .and_then(|i| info.servers.get(i))
            .ok_or_else(|| format!("the stack has no server {server}"))?;
        self.kill(
            Role::Server,
            &format!("server {}", s.instance_id),
            s.pid,
            s.pid_start,
            &s.log,
        )
        .await?;
        Ok(None)
    }

    /// Captures and SIGKILLs one process, waiting until it is gone.
    async fn kill(
        &self,
        role: Role,
        label: &str,
        pid: u32,
        pid_start: u64,
        log: &std::path::Path,
    ) -> Result<(), String> {
        if !respawn::is_alive(pid, pid_start) {
            return Err(format!("{label} is not running"));
        }
        let captured = respawn::capture(pid, role, label, log).map_err(|e| e.to_string())?;
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(label.to_string(), (captured, false));
        if respawn::kill(pid, pid_start).await {
            Ok(())
        } else {
            Err(format!("{label} (pid {pid}) still runs 10 s after SIGKILL"))
        }
    }

    async fn restart_broker(&self, node: u32) -> Result<Option<String>, String> {
        let info = self.info().ok_or("no local stack")?;
        let b = info
            .brokers
            .iter()
            .find(|b| b.node_id == node)
            .ok_or_else(|| format!("the stack has no broker {node}"))?
            .clone();
        let label = format!("kafka broker {node}");
        if respawn::is_alive(b.pid, b.pid_start) {
            self.kill(Role::Kafka, &label, b.pid, b.pid_start, &b.log)
                .await?;
        }
        let rec = self.respawn(&label)?;
        self.update(|info| {
            if let Some(b) = info.brokers.iter_mut().find(|b| b.node_id == node) {
                b.pid = rec.pid;
                b.pid_start = rec.pid_start;
            }
        });
        wait_listening(
            SocketAddr::from(([127, 0, 0, 1], b.port)),
            rec.pid,
            rec.pid_start,
        )
        .await
        .map_err(|e| format!("{label} restarted (pid {}) but {e}", rec.pid))?;
        Ok(None)
    }

    async fn restart_server(&self, server: &str) -> Result<Option<String>, String> {
        let info = self.info().ok_or("no local stack")?;
        let s = server_index(server)
            .and_then(|i| info.servers.get(i))
            .ok_or_else(|| format!("the stack has no server {server}"))?
            .clone();
        let label = format!("server {}", s.instance_id);
        if respawn::is_alive(s.pid, s.pid_start) {
            self.kill(Role::Server, &label, s.pid, s.pid_start, &s.log)
                .await?;
        }
        let rec = self.respawn(&label)?;
        self.update(|info| {
            if let Some(x) = info
                .servers
                .iter_mut()
                .find(|x| x.instance_id == s.instance_id)
            {
                x.pid = rec.pid;
                x.pid_start = rec.pid_start;
            }
        });
        let restarted = stack::ServerInfo {
            pid: rec.pid,
            pid_start: rec.pid_start,
            ..s
        };
        stack::wait_server_ready(&restarted, info.server_impl)
            .await
            .map_err(|e| format!("{label} restarted (pid {}) but {e}", rec.pid))?;
        Ok(None)
    }

    /// Starts a killed process again and marks it restarted.
    fn respawn(&self, label: &str) -> Result<stack::ProcRecord, String> {
        let mut captured = self.captured.lock().unwrap_or_else(|e| e.into_inner());
        let (c, restarted) = captured.get_mut(label).ok_or_else(|| {
            format!("{label} is not running and no fault of this run stopped it, so how to start it is unknown; restart the stack (stompede stack down, then up)")
        })?;
        let rec = match self.owned {
            Some(stack) => stack.respawn(c),
            None => respawn::respawn(c, None),
        }
        .map_err(|e| e.to_string())?;
        *restarted = true;
        Ok(rec)
    }

    /// Applies a change to the live stack record and writes it to `state.json`.
    fn update(&self, change: impl FnOnce(&mut StackInfo)) {
        if let Some(stack) = &self.stack {
            let mut info = stack.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut info);
            if let Err(e) = stack::write_state(&self.state_dir, &info) {
                tracing::warn!("cannot record the restarted process in state.json: {e}");
            }
        }
    }

    async fn pause_db(
        &self,
        duration: Duration,
        stop: &CancellationToken,
    ) -> Result<Option<String>, String> {
        let info = self.info().ok_or("no local stack")?;
        if !respawn::is_alive(info.postgres.pid, info.postgres.pid_start) {
            return Err("PostgreSQL is not running".into());
        }
        let pids = respawn::tree(info.postgres.pid);
        let paused = Resume(pids.clone());
        respawn::signal_all(&pids, libc::SIGSTOP);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(duration) => {}
        }
        drop(paused);
        Ok(Some(format!("PostgreSQL ({} processes)", pids.len())))
    }

    async fn network(
        &self,
        server: &str,
        fault: NetFault,
        duration: Duration,
        stop: &CancellationToken,
    ) -> Result<Option<String>, String> {
        let control = server_index(server)
            .and_then(|i| self.relays.get(&i))
            .ok_or_else(|| format!("no relay in front of {server}"))?;
        let lifted = Lift(control.clone());
        control.set(fault);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(duration) => {}
        }
        drop(lifted);
        Ok(None)
    }

    async fn exec(
        &self,
        index: usize,
        command: &str,
        stop: &CancellationToken,
    ) -> Result<Option<String>, String> {
        let child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .env("STOMPEDE_RUN_ID", &self.run_id)
            .env("STOMPEDE_FAULT", (index + 1).to_string())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::select! {
            _ = stop.cancelled() => return Err("the run ended while the command ran; it was killed".into()),
            r = tokio::time::timeout(EXEC_TIMEOUT, child) => r,
        };
        match out {
            Err(_) => Err(format!("still running after {EXEC_TIMEOUT:?}; killed")),
            Ok(Err(e)) => Err(format!("cannot run sh -c: {e}")),
            Ok(Ok(o)) if o.status.success() => Ok(None),
            Ok(Ok(o)) => {
                let text = String::from_utf8_lossy(&o.stderr);
                let tail: String = text
                    .trim()
                    .chars()
                    .rev()
                    .take(300)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Err(format!(
                    "exited with {}{}",
                    o.status,
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!(": {tail}")
                    }
                ))
            }
        }
    }

    /// After the run: starts again every process a fault killed and nothing restarted,
    /// unless the run started the stack itself (it is about to be taken down). Returns a
    /// note per process.
    pub async fn restore(&self) -> Vec<String> {
        if self.owned.is_some() {
            return Vec::new();
        }
        let pending: Vec<String> = self
            .captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, (_, restarted))| !restarted)
            .map(|(label, _)| label.clone())
            .collect();
        let mut notes = Vec::new();
        for label in pending {
            let result = if let Some(node) = label
                .strip_prefix("kafka broker ")
                .and_then(|n| n.parse().ok())
            {
                self.restart_broker(node).await
            } else if let Some(id) = label.strip_prefix("server ") {
                self.restart_server(id).await
            } else {
                Err("unknown process".into())
            };
            notes.push(match result {
                Ok(_) => format!("{label}, killed by a fault, was started again after the run so the stack is as it was found"),
                Err(e) => format!("{label}, killed by a fault, could not be started again after the run: {e}; run `stompede stack down` and `up`"),
            });
        }
        notes
    }
}

/// SIGCONT to the paused processes when dropped.
struct Resume(Vec<u32>);

impl Drop for Resume {
    fn drop(&mut self) {
        respawn::signal_all(&self.0, libc::SIGCONT);
    }
}

/// Lifts a relay's network fault when dropped.
struct Lift(Arc<NetControl>);

impl Drop for Lift {
    fn drop(&mut self) {
        self.0.set(NetFault::Pass);
    }
}

/// What a fault acts on, before it runs (the leader is only known at injection).
pub fn describe(action: &FaultAction) -> String {
    match action {
        FaultAction::KillBroker { node: Some(n), .. } | FaultAction::RestartBroker { node: n } => {
            format!("broker {n}")
        }
        FaultAction::KillBroker { room, .. } => format!(
            "the leader of {}'s partition",
            room.as_deref().unwrap_or("?")
        ),
        FaultAction::KillServer { server } | FaultAction::RestartServer { server } => {
            format!("server {server}")
        }
        FaultAction::PauseDb { .. } => "PostgreSQL".into(),
        FaultAction::Delay { server, delay, .. } => format!(
            "users of {server} (+{} each way)",
            crate::scenario::format_duration(*delay)
        ),
        FaultAction::Drop { server, .. } | FaultAction::Partition { server, .. } => {
            format!("users of {server}")
        }
        FaultAction::Exec { command } => format!("sh -c {command:?}"),
    }
}

/// Whose deliveries a fault touches, before it runs (a broker kill narrows it to the
/// partitions the broker led once it knows them).
pub fn affected(action: &FaultAction) -> Affected {
    match action.server().and_then(server_index) {
        Some(i) => Affected::Server(i),
        None => Affected::All,
    }
}

async fn wait_listening(addr: SocketAddr, pid: u32, pid_start: u64) -> Result<(), String> {
    let deadline = Instant::now() + RESTART_TIMEOUT;
    loop {
        if !respawn::is_alive(pid, pid_start) {
            return Err("it exited (see its log)".into());
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{addr} does not accept connections after {RESTART_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
