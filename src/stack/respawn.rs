//! Killing, pausing and restarting single processes of a running stack, for fault
//! injection (`crate::fault::inject`).
//!
//! A process is restarted exactly as it was started: before it is killed, its command
//! line, environment and working directory are read from `/proc/PID/` ([`capture`]); the
//! restart runs that again, appending to the same log. The new PID is recorded by the
//! caller in `state.json`, so `stompede stack down` stops it like the original.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use super::process::is_alive;
use super::process::{self, Registry};
use super::state::{ProcRecord, Role};
use super::StackError;

/// How a process was started, read back from `/proc` while it ran.
#[derive(Debug, Clone)]
pub struct Captured {
    pub role: Role,
    pub label: String,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    log: PathBuf,
}

fn split_nul(bytes: Vec<u8>) -> Vec<OsString> {
    bytes
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsString::from_vec(s.to_vec()))
        .collect()
}

/// Reads how `pid` was started (its command line, environment and directory).
pub fn capture(pid: u32, role: Role, label: &str, log: &Path) -> Result<Captured, StackError> {
    let read = |what: &str| {
        let path = PathBuf::from(format!("/proc/{pid}/{what}"));
        std::fs::read(&path).map_err(|e| StackError::io("read", &path, e))
    };
    let argv = split_nul(read("cmdline")?);
    if argv.is_empty() {
        return Err(StackError::part(
            label,
            format!("pid {pid} has no command line (it is exiting)"),
            log,
        ));
    }
    let env = split_nul(read("environ")?)
        .into_iter()
        .filter_map(|kv| {
            let bytes = kv.into_vec();
            let eq = bytes.iter().position(|b| *b == b'=')?;
            Some((
                OsString::from_vec(bytes[..eq].to_vec()),
                OsString::from_vec(bytes[eq + 1..].to_vec()),
            ))
        })
        .collect();
    let cwd_path = PathBuf::from(format!("/proc/{pid}/cwd"));
    let cwd = std::fs::read_link(&cwd_path).map_err(|e| StackError::io("read", &cwd_path, e))?;
    Ok(Captured {
        role,
        label: label.to_string(),
        argv,
        env,
        cwd,
        log: log.to_path_buf(),
    })
}

/// Starts a captured process again: through `registry` when the stack belongs to this
/// process (so it is stopped with the rest), otherwise detached like `stack up` does.
pub fn respawn(c: &Captured, registry: Option<&Registry>) -> Result<ProcRecord, StackError> {
    let (out, err) = process::append_log(&c.log)?;
    let mut cmd = Command::new(&c.argv[0]);
    cmd.args(&c.argv[1..])
        .env_clear()
        .envs(c.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&c.cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    match registry {
        Some(reg) => reg.spawn(c.role, &c.label, cmd),
        None => {
            let program = c.argv[0].to_string_lossy().into_owned();
            let child =
                process::spawn(cmd, true).map_err(|e| StackError::spawn(&c.label, &program, e))?;
            let pid = child.id();
            // Detached: it outlives this process; its exit status is nobody's business
            // here, and the handle holds nothing that needs closing.
            drop(child);
            Ok(ProcRecord {
                role: c.role,
                label: c.label.clone(),
                pid,
                pid_start: process::start_time(pid),
            })
        }
    }
}

/// SIGKILL `pid` and wait (up to 10 s) until it is gone, ports included. Returns
/// whether it is gone.
pub async fn kill(pid: u32, pid_start: u64) -> bool {
    if !is_alive(pid, pid_start) {
        return true;
    }
    process::signal(pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_alive(pid, pid_start) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// `root` and every process below it (PostgreSQL's postmaster and its backends).
pub fn tree(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        out.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    out
}

/// Sends `sig` to each of `pids`.
pub fn signal_all(pids: &[u32], sig: libc::c_int) {
    for pid in pids {
        process::signal(*pid, sig);
    }
}
