//! The local stack: real Apache Kafka (KRaft) and PostgreSQL 15 processes, plus
//! reference chat server instances, started on free 127.0.0.1 ports.
//!
//! This is what `stompede stack up|status|down` drives and what integration tests use
//! to get real components. Flow of [`up`]:
//!
//! 1. refuse if `state_dir` records a stack whose processes still run;
//! 2. Kafka (`kafka.rs`) and PostgreSQL (`postgres.rs`) start side by side; Kafka is
//!    ready when every broker is in the metadata, then the chat topic is created, every
//!    partition has a leader and the group coordinator of every consumer group the
//!    servers will use answers; PostgreSQL is ready when `SELECT 1` succeeds, then the
//!    `stompede` database and schema are created;
//! 3. the chat servers (`servers.rs`) start against both and must answer `/healthz`;
//! 4. `<state_dir>/state.json` ([`StackInfo`]) is written.
//!
//! Every spawned process is journaled before anything waits on it, so a failed or
//! interrupted `up` stops what it started, and `down` can stop what a crashed `up`
//! left. Logs live in `<state_dir>/logs/` (kept by `down`); scratch data in
//! `<state_dir>/data/` (removed by `down`).
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub mod baseline;
mod kafka;
mod kafka_admin;
pub mod metrics_page;
mod postgres;
mod process;
mod reshape;
pub mod respawn;
mod servers;
mod spring;
mod state;

pub use kafka::{cache_root, kafka_version};
pub use kafka_admin::{
    broker_ids, create_topic, partition_leaders, topic_config, wait_kafka_ready, TopicDescription,
};
pub use process::{http_get, http_get_status};
pub use reshape::Reshaped;
pub use servers::{wait_ready as wait_server_ready, READY_TIMEOUT as SERVER_TIMEOUT};
pub use spring::{ensure_jar as ensure_spring_jar, SHARED_GROUP as SPRING_SHARED_GROUP};
pub use state::{
    read_state, write_state, BrokerInfo, PostgresInfo, ProcRecord, Role, ServerInfo, StackInfo,
};

use crate::server::Persist;
use process::Registry;

/// A consumer group no server uses, whose coordinator `up` always waits for (it also
/// makes the brokers create `__consumer_offsets` before anyone needs it).
pub const READY_PROBE_GROUP: &str = "stompede-stack-ready";

/// Kafka must be ready (brokers, topic, coordinators) within this long after its JVMs start.
pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(90);
/// PostgreSQL must answer within this long after `initdb` starts.
pub const POSTGRES_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process gets to exit after its stop signal before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// Which chat server implementation the stack starts.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ServerImpl {
    /// stompede's reference server (`stompede server`).
    #[default]
    Stompede,
    /// The Spring Boot peer of `peers/spring-chat` (one JVM per instance; built once with
    /// Maven and cached).
    Spring,
}

impl ServerImpl {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerImpl::Stompede => "stompede",
            ServerImpl::Spring => "spring",
        }
    }

    /// The table the implementation writes chat history to.
    pub fn history_table(self) -> &'static str {
        match self {
            ServerImpl::Stompede => crate::db::TABLE,
            ServerImpl::Spring => spring::TABLE,
        }
    }

    /// Whether its STOMP broker answers `receipt` headers (Spring's simple broker does not).
    pub fn gives_receipts(self) -> bool {
        self == ServerImpl::Stompede
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// 1, or 3 (replication factor 3, `min.insync.replicas=2`).
    pub brokers: u8,
    pub partitions: u32,
    /// Chat server instances; 0 starts only Kafka and PostgreSQL.
    pub servers: u32,
    pub persist: Persist,
    /// Which server implementation the instances run.
    pub server_impl: ServerImpl,
    /// Every instance in one fan-out consumer group ([`SPRING_SHARED_GROUP`]) instead of
    /// one each: the classic misconfiguration, where each instance only sees its share
    /// of the partitions. Spring peer only.
    pub shared_fanout_group: bool,
    pub topic: String,
    /// Holds `state.json`, `logs/` and `data/`.
    pub state_dir: PathBuf,
    /// The `stompede` binary the servers are started from.
    pub server_exe: PathBuf,
    /// `true`: children get their own session and outlive us (`stompede stack up`);
    /// while `up` runs, Ctrl-C stops what was started (this installs a process-wide
    /// SIGINT handler, fine for a command that exits after `up`).
    /// `false`: children are killed when this process dies or the [`Stack`] is dropped.
    pub detach: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            brokers: 1,
            partitions: 3,
            servers: 2,
            persist: Persist::Producer,
            server_impl: ServerImpl::Stompede,
            shared_fanout_group: false,
            topic: "chat.messages".to_string(),
            state_dir: PathBuf::from(".stompede"),
            server_exe: PathBuf::from("stompede"),
            detach: false,
        }
    }
}

/// Why a stack operation failed, phrased for the person who has to fix it.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("invalid stack options: {0}")]
    Invalid(String),
    #[error("{program} is not installed or not on PATH; install it with `{install}`")]
    MissingPrerequisite {
        program: String,
        install: &'static str,
    },
    #[error("{part} failed: {reason}{}", log_suffix(.log.as_deref(), .tail))]
    Part {
        part: String,
        reason: String,
        log: Option<PathBuf>,
        tail: String,
    },
    #[error("{part}: cannot start {program}: {source}")]
    Spawn {
        part: String,
        program: String,
        source: io::Error,
    },
    #[error("kafka at {bootstrap}: {what}: {detail}")]
    Kafka {
        bootstrap: String,
        what: String,
        detail: String,
    },
    #[error("a stack is already running from {} ({running}); run `stompede stack down` first", .state_dir.display())]
    AlreadyRunning { state_dir: PathBuf, running: String },
    #[error(
        "a stack start in {} did not finish and left processes running ({running}); \
         run `stompede stack down` to stop them",
        .state_dir.display()
    )]
    Incomplete { state_dir: PathBuf, running: String },
    #[error("cannot {action} {}: {source}", .path.display())]
    Io {
        action: String,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the stack record {} is unreadable ({detail}); if no stack processes still run, delete it", .path.display())]
    BadState { path: PathBuf, detail: String },
    #[error("interrupted; everything started so far was stopped")]
    Interrupted,
    #[error("could not stop {0}; stop these processes by hand")]
    StopFailed(String),
}

fn log_suffix(log: Option<&Path>, tail: &str) -> String {
    match log {
        None => String::new(),
        Some(log) if tail.is_empty() => format!("\n  log: {}", log.display()),
        Some(log) => {
            let indented: Vec<String> = tail.lines().map(|l| format!("    {l}")).collect();
            format!(
                "\n  log: {}\n  last lines:\n{}",
                log.display(),
                indented.join("\n")
            )
        }
    }
}

impl StackError {
    pub(crate) fn io(action: &str, path: &Path, source: io::Error) -> StackError {
        StackError::Io {
            action: action.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn spawn(part: &str, program: &str, source: io::Error) -> StackError {
        StackError::Spawn {
            part: part.to_string(),
            program: program.to_string(),
            source,
        }
    }

    /// A part failed; attach its log path and the last 20 lines of it.
    pub(crate) fn part(part: &str, reason: String, log: &Path) -> StackError {
        StackError::Part {
            part: part.to_string(),
            reason,
            log: Some(log.to_path_buf()),
            tail: process::log_tail(log, 20),
        }
    }
}

/// A running stack started by this process.
pub struct Stack {
    info: StackInfo,
    registry: Registry,
    detach: bool,
    stopped: bool,
}

impl Stack {
    pub fn info(&self) -> &StackInfo {
        &self.info
    }

    /// Starts a process of this stack again (see [`respawn`]); it is stopped with the rest.
    pub fn respawn(&self, c: &respawn::Captured) -> Result<ProcRecord, StackError> {
        respawn::respawn(c, Some(&self.registry))
    }

    /// Every process of this stack: those started through its registry, and those
    /// recorded in `state.json` (fault injection records the processes it restarts
    /// there; one started through this registry is in both).
    pub(crate) fn known_processes(&self) -> Vec<ProcRecord> {
        let mut records = self.registry.records();
        if let Ok(Some(info)) = state::read_state(&self.info.state_dir) {
            for rec in info.processes() {
                if !records.iter().any(|r| r.pid == rec.pid) {
                    records.push(rec);
                }
            }
        }
        records
    }

    /// Stop every process this stack started (gracefully, then SIGKILL) and remove
    /// its scratch data and `state.json`; logs are kept.
    pub async fn down(mut self) -> Result<(), StackError> {
        self.stopped = true;
        let records = self.known_processes();
        let res = teardown(&self.info.state_dir, &records).await;
        self.registry.reap();
        self.registry.disarm();
        res
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !self.detach && !self.stopped {
            self.registry.kill_all();
            let _ = remove_records(&self.info.state_dir);
        }
    }
}

/// Kafka brokers alone, started and not waited for: what a client meets while a cluster
/// is still starting (tests of the servers' own start use it). The brokers are killed
/// when this is dropped.
pub struct Brokers {
    brokers: Vec<BrokerInfo>,
    _registry: Registry,
}

impl Brokers {
    pub fn info(&self) -> &[BrokerInfo] {
        &self.brokers
    }

    /// `127.0.0.1:port,...` of every broker.
    pub fn bootstrap(&self) -> String {
        kafka::bootstrap(&self.brokers)
    }
}

/// Start `brokers` (1 or 3) Kafka nodes with their data and logs in `state_dir`, and
/// return as soon as the JVMs run: before any of them listens, elects a controller or
/// loads a group coordinator. No topic is created.
pub async fn start_brokers(
    state_dir: &Path,
    brokers: u8,
    partitions: u32,
) -> Result<Brokers, StackError> {
    validate(&StackOptions {
        brokers,
        partitions,
        servers: 0,
        ..StackOptions::default()
    })?;
    for sub in ["data", "logs"] {
        let p = state_dir.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| StackError::io("create", &p, e))?;
    }
    let dir = std::fs::canonicalize(state_dir)
        .map_err(|e| StackError::io("resolve state directory", state_dir, e))?;
    let registry = Registry::new(&dir, false);
    let brokers = kafka::start(&registry, &dir, brokers, partitions).await?;
    Ok(Brokers {
        brokers,
        _registry: registry,
    })
}

/// Start Kafka, PostgreSQL and `opts.servers` chat servers; returns when all are ready.
pub async fn up(opts: &StackOptions) -> Result<Stack, StackError> {
    validate(opts)?;
    std::fs::create_dir_all(&opts.state_dir)
        .map_err(|e| StackError::io("create state directory", &opts.state_dir, e))?;
    // Absolute paths in state.json, props files and child arguments: children run with
    // other working directories, and `down` may run from anywhere.
    let state_dir = std::fs::canonicalize(&opts.state_dir)
        .map_err(|e| StackError::io("resolve state directory", &opts.state_dir, e))?;
    let opts = &StackOptions {
        state_dir,
        ..opts.clone()
    };
    let dir = &opts.state_dir;
    // Held until `up` returns: a second `up` on the same directory cannot race this one.
    let _lock = process::lock_dir(dir)?;
    refuse_if_running(dir)?;
    // Whatever is recorded is dead: clear it so this start begins clean.
    remove_records(dir)?;
    for sub in ["data", "logs"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(|e| StackError::io("create", &p, e))?;
    }
    let mut registry = Registry::new(dir, opts.detach);
    let result = if opts.detach {
        // `stack up` in a terminal: children are in their own session, so Ctrl-C only
        // reaches us; stop them before returning.
        let interrupted = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = bring_up(opts, &registry) => r,
            () = interrupted => Err(StackError::Interrupted),
        }
    } else {
        bring_up(opts, &registry).await
    };
    match result {
        Ok(info) => {
            if opts.detach {
                registry.disarm();
            }
            Ok(Stack {
                info,
                registry,
                detach: opts.detach,
                stopped: false,
            })
        }
        Err(e) => {
            registry.kill_all();
            let _ = remove_records(dir);
            Err(e)
        }
    }
}

fn validate(opts: &StackOptions) -> Result<(), StackError> {
    if opts.brokers != 1 && opts.brokers != 3 {
        return Err(StackError::Invalid(format!(
            "brokers must be 1 or 3, not {}",
            opts.brokers
        )));
    }
    if opts.partitions == 0 || opts.partitions > 10_000 {
        return Err(StackError::Invalid(format!(
            "partitions must be 1..=10000, not {}",
            opts.partitions
        )));
    }
    let exe = &opts.server_exe;
    if opts.servers > 0 && exe.components().count() > 1 && !exe.is_file() {
        return Err(StackError::Invalid(format!(
            "the server binary {} does not exist; build it with `cargo build` or pass the path of the stompede binary",
            exe.display()
        )));
    }
    if opts.server_impl == ServerImpl::Spring && opts.persist != Persist::Producer {
        return Err(StackError::Invalid(
            "the Spring peer persists on the producer side only (it saves each message once Kafka acknowledged it); \
             use persist producer with server_impl spring"
                .into(),
        ));
    }
    if opts.shared_fanout_group && opts.server_impl != ServerImpl::Spring {
        return Err(StackError::Invalid(
            "a shared fan-out group is a switch of the Spring peer (stompede's server always gives each instance its own group); \
             add --server-impl spring, or drop --shared-fanout-group"
                .into(),
        ));
    }
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if opts.topic.is_empty() || opts.topic.len() > 249 || !opts.topic.chars().all(legal) {
        return Err(StackError::Invalid(format!(
            "topic {:?} is not a legal Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)",
            opts.topic
        )));
    }
    Ok(())
}

fn refuse_if_running(dir: &Path) -> Result<(), StackError> {
    let running = |procs: &[ProcRecord]| -> Option<String> {
        let live: Vec<String> = procs
            .iter()
            .filter(|p| p.alive())
            .map(|p| format!("{} pid {}", p.label, p.pid))
            .collect();
        (!live.is_empty()).then(|| live.join(", "))
    };
    if let Some(info) = state::read_state(dir)? {
        if let Some(running) = running(&info.processes()) {
            return Err(StackError::AlreadyRunning {
                state_dir: dir.to_path_buf(),
                running,
            });
        }
    }
    if let Some(running) = running(&state::journal_read(dir)?) {
        return Err(StackError::Incomplete {
            state_dir: dir.to_path_buf(),
            running,
        });
    }
    Ok(())
}

async fn bring_up(opts: &StackOptions, reg: &Registry) -> Result<StackInfo, StackError> {
    let t0 = Instant::now();
    let dir = &opts.state_dir;
    let (rf, min_isr): (u16, u16) = if opts.brokers >= 3 { (3, 2) } else { (1, 1) };

    let kafka_part = async {
        let t = Instant::now();
        let brokers = kafka::start(reg, dir, opts.brokers, opts.partitions).await?;
        // The clock for readiness starts once the JVMs run (not during a jar download).
        let deadline = Instant::now() + KAFKA_TIMEOUT;
        kafka_admin::wait_ready_started(reg, &brokers, None, deadline).await?;
        let boot = kafka::bootstrap(&brokers);
        let min_isr_text = min_isr.to_string();
        let configs: Vec<(&str, &str)> = if rf >= 3 {
            vec![("min.insync.replicas", min_isr_text.as_str())]
        } else {
            Vec::new()
        };
        create_topic(&boot, &opts.topic, opts.partitions, rf, &configs)
            .await
            .map_err(|e| {
                StackError::part("kafka (topic creation)", e.to_string(), &brokers[0].log)
            })?;
        kafka_admin::wait_ready_started(reg, &brokers, Some(&opts.topic), deadline).await?;
        let mut groups = vec![READY_PROBE_GROUP.to_string()];
        groups.extend(servers::consumer_groups(opts));
        kafka_admin::wait_coordinators_started(
            reg,
            &brokers,
            &opts.topic,
            opts.partitions,
            &groups,
            deadline,
        )
        .await?;
        let ports: Vec<String> = brokers.iter().map(|b| b.port.to_string()).collect();
        eprintln!(
            "kafka: {} broker{} ready on 127.0.0.1:{}, topic {} ({} partitions, RF {rf}) ({:.1} s)",
            brokers.len(),
            if brokers.len() == 1 { "" } else { "s" },
            ports.join(","),
            opts.topic,
            opts.partitions,
            t.elapsed().as_secs_f64()
        );
        Ok::<_, StackError>(brokers)
    };
    let pg_part = async {
        let t = Instant::now();
        let pg = postgres::start(reg, dir, t + POSTGRES_TIMEOUT).await?;
        eprintln!(
            "postgres: ready on 127.0.0.1:{}, database {} ({:.1} s)",
            pg.port,
            postgres::DATABASE,
            t.elapsed().as_secs_f64()
        );
        Ok::<_, StackError>(pg)
    };
    let (brokers, pg) = tokio::try_join!(kafka_part, pg_part)?;
    let bootstrap = kafka::bootstrap(&brokers);

    let t = Instant::now();
    let servers = servers::start(reg, opts, &bootstrap, &pg.url).await?;
    for s in &servers {
        eprintln!("server {}: ready at {}", s.instance_id, s.ws_url);
    }
    if !servers.is_empty() {
        eprintln!(
            "servers: {} ready ({:.1} s)",
            servers.len(),
            t.elapsed().as_secs_f64()
        );
    }

    let info = StackInfo {
        kafka_bootstrap: bootstrap,
        kafka_version: kafka::kafka_version().to_string(),
        brokers,
        topic: opts.topic.clone(),
        partitions: opts.partitions,
        replication_factor: rf,
        min_insync_replicas: min_isr,
        postgres: pg,
        servers,
        persist: opts.persist,
        server_impl: opts.server_impl,
        shared_fanout_group: opts.shared_fanout_group,
        state_dir: dir.clone(),
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    state::write_state(dir, &info)?;
    state::remove_file_if_present(&dir.join(state::JOURNAL_FILE))?;
    eprintln!(
        "stack ready in {:.1} s; recorded in {}",
        t0.elapsed().as_secs_f64(),
        dir.join(state::STATE_FILE).display()
    );
    Ok(info)
}

/// The recorded stack, with each process's `alive` flag filled in; `None` if none.
pub fn status(state_dir: &Path) -> Result<Option<StackInfo>, StackError> {
    if let Some(mut info) = state::read_state(state_dir)? {
        info.refresh_alive();
        return Ok(Some(info));
    }
    let live: Vec<String> = state::journal_read(state_dir)?
        .into_iter()
        .filter(|p| p.alive())
        .map(|p| format!("{} pid {}", p.label, p.pid))
        .collect();
    if live.is_empty() {
        Ok(None)
    } else {
        Err(StackError::Incomplete {
            state_dir: state_dir.to_path_buf(),
            running: live.join(", "),
        })
    }
}

/// Stop exactly the processes recorded in `state_dir` (and any left by an unfinished
/// `up`), then remove `data/` and `state.json`. No stack recorded is not an error.
pub async fn down(state_dir: &Path) -> Result<(), StackError> {
    let mut procs = match state::read_state(state_dir)? {
        Some(info) => info.processes(),
        None => Vec::new(),
    };
    for rec in state::journal_read(state_dir)? {
        if !procs.iter().any(|p| p.pid == rec.pid) {
            procs.push(rec);
        }
    }
    if procs.is_empty() {
        remove_records(state_dir)?;
        eprintln!(
            "no stack recorded in {}; nothing to stop",
            state_dir.display()
        );
        return Ok(());
    }
    teardown(state_dir, &procs).await
}

/// Servers first (they hold connections to the rest), then PostgreSQL and Kafka together.
async fn teardown(state_dir: &Path, procs: &[ProcRecord]) -> Result<(), StackError> {
    let t = Instant::now();
    let (servers, rest): (Vec<ProcRecord>, Vec<ProcRecord>) =
        procs.iter().cloned().partition(|p| p.role == Role::Server);
    let mut killed = process::stop(&servers, STOP_GRACE).await;
    killed.extend(process::stop(&rest, STOP_GRACE).await);
    if !killed.is_empty() {
        eprintln!(
            "stack: {} did not stop within {STOP_GRACE:?} and got SIGKILL",
            killed.join(", ")
        );
    }
    let survivors: Vec<String> = procs
        .iter()
        .filter(|p| p.alive())
        .map(|p| format!("{} pid {}", p.label, p.pid))
        .collect();
    if !survivors.is_empty() {
        return Err(StackError::StopFailed(survivors.join(", ")));
    }
    remove_records(state_dir)?;
    eprintln!(
        "stack down: stopped {} process{} in {:.1} s; logs kept in {}",
        procs.len(),
        if procs.len() == 1 { "" } else { "es" },
        t.elapsed().as_secs_f64(),
        state_dir.join("logs").display()
    );
    Ok(())
}

/// Remove scratch data (including a cluster kept outside the state dir), the journal
/// and `state.json`; logs stay.
fn remove_records(state_dir: &Path) -> Result<(), StackError> {
    let data = state_dir.join("data");
    if let Ok(outside) = std::fs::read_to_string(data.join(postgres::OUTSIDE_DATA_NOTE)) {
        let outside = PathBuf::from(outside.trim());
        // Only ever a directory this module created under the temp dir.
        let ours = outside
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("stompede-pg-"));
        if ours {
            state::remove_dir_if_present(&outside)?;
        }
    }
    state::remove_dir_if_present(&data)?;
    state::remove_file_if_present(&state_dir.join(state::JOURNAL_FILE))?;
    state::remove_file_if_present(&state_dir.join(state::STATE_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        let ok = StackOptions::default();
        assert!(validate(&ok).is_ok());
        let two = StackOptions {
            brokers: 2,
            ..StackOptions::default()
        };
        assert!(matches!(validate(&two), Err(StackError::Invalid(m)) if m.contains("1 or 3")));
        let bad_topic = StackOptions {
            topic: "chat messages".into(),
            ..StackOptions::default()
        };
        assert!(validate(&bad_topic).is_err());
    }

    #[test]
    fn part_errors_name_the_log_and_show_its_tail() {
        let e = StackError::Part {
            part: "kafka broker 2".into(),
            reason: "the JVM exited with exit status: 1".into(),
            log: Some(PathBuf::from("/s/logs/kafka-2.log")),
            tail: "line a\nline b".into(),
        };
        let text = e.to_string();
        assert!(text.starts_with("kafka broker 2 failed: the JVM exited"));
        assert!(text.contains("log: /s/logs/kafka-2.log"));
        assert!(text.contains("    line b"));
    }

    #[tokio::test]
    async fn down_without_a_stack_is_ok() {
        let dir = std::env::temp_dir().join(format!("stompede-empty-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert!(down(&dir).await.is_ok());
        assert!(status(&dir).expect("status").is_none());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
