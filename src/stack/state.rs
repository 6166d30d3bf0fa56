//! What a running stack is, on disk: `<state_dir>/state.json` and the start journal.
//!
//! `up` appends one line per process it spawns to `<state_dir>/starting.pids` *before*
//! waiting for anything to become ready, so a start that is interrupted (Ctrl-C, a
//! crash, a killed terminal) still leaves a record that `stompede stack down` can use.
//! Once every part is ready, `up` writes the full [`StackInfo`] to `state.json`
//! (atomically, through a temporary file) and removes the journal. `status` and `down`
//! read both files; every recorded process carries its kernel start time so a PID
//! that has since been reused by an unrelated process is never signalled.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::process;
use super::{ServerImpl, StackError};
use crate::server::{Persist, FANOUT_GROUP_PREFIX};

/// File name of the stack record inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// File name of the start journal inside the state directory.
pub const JOURNAL_FILE: &str = "starting.pids";

/// Everything a client needs to reach a running stack, and what `down` needs to stop it.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct StackInfo {
    /// Comma-separated `host:port` list for Kafka clients.
    pub kafka_bootstrap: String,
    pub kafka_version: String,
    pub brokers: Vec<BrokerInfo>,
    pub topic: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub min_insync_replicas: u16,
    pub postgres: PostgresInfo,
    pub servers: Vec<ServerInfo>,
    pub persist: Persist,
    /// Which implementation the servers run (absent in records of older builds: stompede).
    #[serde(default)]
    pub server_impl: ServerImpl,
    /// Whether every instance shares one fan-out consumer group (Spring peer only).
    #[serde(default)]
    pub shared_fanout_group: bool,
    pub state_dir: PathBuf,
    /// RFC 3339 time at which the stack became ready.
    pub started_at: String,
}

/// One Kafka node (broker and controller in one JVM).
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct BrokerInfo {
    pub node_id: u32,
    pub port: u16,
    pub controller_port: u16,
    pub pid: u32,
    /// Kernel start time of `pid` (clock ticks since boot), guards against PID reuse.
    #[serde(default)]
    pub pid_start: u64,
    pub log: PathBuf,
    pub data_dir: PathBuf,
    /// Filled in by [`status`](super::status); not stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive: Option<bool>,
}

/// The private PostgreSQL cluster.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct PostgresInfo {
    /// `postgres://stompede@127.0.0.1:PORT/stompede`
    pub url: String,
    pub port: u16,
    pub pid: u32,
    #[serde(default)]
    pub pid_start: u64,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive: Option<bool>,
}

/// One reference chat server instance.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct ServerInfo {
    /// `s1`, `s2`, ...
    pub instance_id: String,
    /// `ws://127.0.0.1:PORT/ws-stomp`
    pub ws_url: String,
    /// `http://127.0.0.1:PORT/metrics`
    pub metrics_url: String,
    pub pid: u32,
    #[serde(default)]
    pub pid_start: u64,
    pub log: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive: Option<bool>,
}

/// What kind of process a record is; decides the stop signal and the stop order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Postgres,
    Kafka,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Postgres => "postgres",
            Role::Kafka => "kafka",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "server" => Some(Role::Server),
            "postgres" => Some(Role::Postgres),
            "kafka" => Some(Role::Kafka),
            _ => None,
        }
    }

    /// The signal that asks this kind of process for a clean, prompt shutdown.
    /// PostgreSQL's SIGTERM is "smart" shutdown, which waits for every client to
    /// disconnect; SIGINT is its "fast" shutdown.
    pub fn stop_signal(self) -> libc::c_int {
        match self {
            Role::Postgres => libc::SIGINT,
            Role::Server | Role::Kafka => libc::SIGTERM,
        }
    }
}

/// One recorded process: enough to find it again and stop it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcRecord {
    pub role: Role,
    /// Human name used in messages: `kafka broker 2`, `postgres`, `server s1`.
    pub label: String,
    pub pid: u32,
    pub pid_start: u64,
}

impl ProcRecord {
    pub fn alive(&self) -> bool {
        process::is_alive(self.pid, self.pid_start)
    }
}

impl StackInfo {
    /// The table the servers write chat history to.
    pub fn history_table(&self) -> &'static str {
        self.server_impl.history_table()
    }

    /// The fan-out consumer groups the servers use: one per instance, or the one they share.
    pub fn fanout_groups(&self) -> Vec<String> {
        if self.shared_fanout_group {
            return vec![super::spring::SHARED_GROUP.to_string()];
        }
        self.servers
            .iter()
            .map(|s| format!("{FANOUT_GROUP_PREFIX}{}", s.instance_id))
            .collect()
    }

    /// Every process of the stack, servers first (the order `down` stops them in).
    pub fn processes(&self) -> Vec<ProcRecord> {
        let mut out = Vec::new();
        for s in &self.servers {
            out.push(ProcRecord {
                role: Role::Server,
                label: format!("server {}", s.instance_id),
                pid: s.pid,
                pid_start: s.pid_start,
            });
        }
        out.push(ProcRecord {
            role: Role::Postgres,
            label: "postgres".to_string(),
            pid: self.postgres.pid,
            pid_start: self.postgres.pid_start,
        });
        for b in &self.brokers {
            out.push(ProcRecord {
                role: Role::Kafka,
                label: format!("kafka broker {}", b.node_id),
                pid: b.pid,
                pid_start: b.pid_start,
            });
        }
        out
    }

    /// Fill in the `alive` flags from the process table.
    pub fn refresh_alive(&mut self) {
        for b in &mut self.brokers {
            b.alive = Some(process::is_alive(b.pid, b.pid_start));
        }
        let pg = &mut self.postgres;
        pg.alive = Some(process::is_alive(pg.pid, pg.pid_start));
        for s in &mut self.servers {
            s.alive = Some(process::is_alive(s.pid, s.pid_start));
        }
    }
}

/// Read `state.json`; `Ok(None)` when there is none.
pub fn read_state(state_dir: &Path) -> Result<Option<StackInfo>, StackError> {
    let path = state_dir.join(STATE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StackError::io("read", &path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StackError::BadState {
            path,
            detail: e.to_string(),
        })
}

/// Write `state.json` atomically (temporary file, then rename).
pub fn write_state(state_dir: &Path, info: &StackInfo) -> Result<(), StackError> {
    let path = state_dir.join(STATE_FILE);
    let tmp = state_dir.join(format!("{STATE_FILE}.tmp"));
    let text = serde_json::to_string_pretty(info).map_err(|e| StackError::BadState {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    fs::write(&tmp, text + "\n").map_err(|e| StackError::io("write", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| StackError::io("rename into place", &path, e))
}

/// Append one spawned process to the start journal (and flush it to the file).
pub fn journal_append(state_dir: &Path, rec: &ProcRecord) -> Result<(), StackError> {
    let path = state_dir.join(JOURNAL_FILE);
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| StackError::io("open", &path, e))?;
    // label last: it may contain spaces.
    writeln!(
        f,
        "{} {} {} {}",
        rec.pid,
        rec.pid_start,
        rec.role.as_str(),
        rec.label
    )
    .map_err(|e| StackError::io("append to", &path, e))
}

/// The processes in the start journal; malformed lines are skipped (they can only
/// come from a write cut short, and the process they named was never recorded).
pub fn journal_read(state_dir: &Path) -> Result<Vec<ProcRecord>, StackError> {
    let path = state_dir.join(JOURNAL_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StackError::io("read", &path, e)),
    };
    Ok(text.lines().filter_map(parse_journal_line).collect())
}

fn parse_journal_line(line: &str) -> Option<ProcRecord> {
    let mut it = line.splitn(4, ' ');
    let pid = it.next()?.parse().ok()?;
    let pid_start = it.next()?.parse().ok()?;
    let role = Role::parse(it.next()?)?;
    let label = it.next()?.to_string();
    Some(ProcRecord {
        role,
        label,
        pid,
        pid_start,
    })
}

/// Remove a file, treating "already gone" as success.
pub fn remove_file_if_present(path: &Path) -> Result<(), StackError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StackError::io("remove", path, e)),
    }
}

/// Remove a directory tree, treating "already gone" as success.
pub fn remove_dir_if_present(path: &Path) -> Result<(), StackError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StackError::io("remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_round_trip_and_skip_garbage() {
        let rec = parse_journal_line("4242 987654 kafka kafka broker 2").expect("valid line");
        assert_eq!(rec.pid, 4242);
        assert_eq!(rec.pid_start, 987654);
        assert_eq!(rec.role, Role::Kafka);
        assert_eq!(rec.label, "kafka broker 2");
        assert!(parse_journal_line("4242 98").is_none());
        assert!(parse_journal_line("x 1 kafka k").is_none());
        assert!(parse_journal_line("1 1 zookeeper z").is_none());
    }
}
