//! Child processes of the stack: spawning, liveness, stopping, and small probes.
//!
//! Two ways to start a child, chosen by `StackOptions::detach`:
//! - **detached** (`stompede stack up`): the child calls `setsid()` before `exec`, so it
//!   has its own session and outlives the command that started it;
//! - **tied** (tests, in-process use): the child asks the kernel for
//!   `PR_SET_PDEATHSIG = SIGKILL`, so it dies with us even if we crash. The kernel sends
//!   that signal when the *thread* that forked the child exits, so tied children are all
//!   forked by one long-lived spawner thread, never by a test or runtime thread that may
//!   finish while the stack is still in use (a stack shared across a test binary).
//!
//! The [`Registry`] owns the `Child` handles of one `up`, appends every spawn to the
//! start journal, and, unless disarmed, kills everything it holds when dropped.
use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::state::{self, ProcRecord, Role};
use super::StackError;

type SpawnJob = (Command, mpsc::SyncSender<io::Result<Child>>);

/// The spawner thread's queue. The thread lives as long as the process.
fn spawner() -> &'static Mutex<mpsc::SyncSender<SpawnJob>> {
    static SPAWNER: OnceLock<Mutex<mpsc::SyncSender<SpawnJob>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::sync_channel::<SpawnJob>(8);
        let spawned = std::thread::Builder::new()
            .name("stompede-stack-spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            });
        if let Err(e) = spawned {
            // Without the thread every spawn reports this error through the closed queue.
            tracing::error!("cannot start the process spawner thread: {e}");
        }
        Mutex::new(tx)
    })
}

/// Start `cmd` detached (own session) or tied to this process (death signal).
pub fn spawn(mut cmd: Command, detach: bool) -> io::Result<Child> {
    if detach {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        return cmd.spawn();
    }
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec. This runs after a
    // uid/gid switch requested on `cmd`, so the death signal survives it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // We died between fork and prctl: nobody will ever stop this child.
                return Err(io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let closed = || io::Error::other("the process spawner thread is gone");
    spawner()
        .lock()
        .map_err(|_| closed())?
        .send((cmd, reply_tx))
        .map_err(|_| closed())?;
    reply_rx.recv().map_err(|_| closed())?
}

/// Kernel start time of `pid` in clock ticks since boot (field 22 of `/proc/PID/stat`),
/// and whether it is a zombie. `None` when there is no such process.
fn stat(pid: u32) -> Option<(u64, bool)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let zombie = matches!(fields.first(), Some(&"Z") | Some(&"X"));
    let start = fields.get(19)?.parse().ok()?;
    Some((start, zombie))
}

/// Start time of a live process, for the record (0 if it cannot be read).
pub fn start_time(pid: u32) -> u64 {
    stat(pid).map(|(s, _)| s).unwrap_or(0)
}

/// Whether `pid` is running and is still the process that was recorded. A zombie
/// (exited, not yet reaped) counts as gone once all its threads have exited. A recorded
/// start time of 0 means unknown.
pub fn is_alive(pid: u32, pid_start: u64) -> bool {
    match stat(pid) {
        Some((start, zombie)) => {
            (pid_start == 0 || start == pid_start) && (!zombie || threads_exiting(pid))
        }
        None => false,
    }
}

/// Whether a zombie thread-group leader still has threads on their way out. A killed
/// JVM's main thread can be a zombie while its other threads still exit, and the
/// descriptors they share (its listening sockets) close only when the last one has: until
/// then the process has not let go of its ports.
fn threads_exiting(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|tasks| tasks.count() > 1)
}

/// Sends `sig` to `pid` (nothing for pid 0 or one that does not fit a pid_t).
pub fn signal(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        if pid > 0 {
            // SAFETY: plain syscall; a vanished pid just yields ESRCH.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

/// Stop the given processes: each gets its role's stop signal at once, then up to
/// `grace` to exit, then SIGKILL. Returns the labels of those that had to be killed.
pub async fn stop(procs: &[ProcRecord], grace: Duration) -> Vec<String> {
    let live: Vec<&ProcRecord> = procs.iter().filter(|p| p.alive()).collect();
    for p in &live {
        signal(p.pid, p.role.stop_signal());
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && live.iter().any(|p| p.alive()) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut killed = Vec::new();
    for p in live.iter().filter(|p| p.alive()) {
        signal(p.pid, libc::SIGKILL);
        killed.push(p.label.clone());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && live.iter().any(|p| p.alive()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    killed
}

/// A child started by this process during `up`.
pub struct Managed {
    pub record: ProcRecord,
    pub child: Child,
}

/// The children of one `up`, in start order. Dropped while armed, it kills them all.
pub struct Registry {
    state_dir: PathBuf,
    detach: bool,
    armed: bool,
    children: Mutex<Vec<Managed>>,
}

impl Registry {
    pub fn new(state_dir: &Path, detach: bool) -> Registry {
        Registry {
            state_dir: state_dir.to_path_buf(),
            detach,
            armed: true,
            children: Mutex::new(Vec::new()),
        }
    }

    /// Spawn `cmd`, record it in the journal, and keep its handle.
    pub fn spawn(&self, role: Role, label: &str, cmd: Command) -> Result<ProcRecord, StackError> {
        let program = cmd.get_program().to_string_lossy().into_owned();
        let child = spawn(cmd, self.detach).map_err(|e| StackError::spawn(label, &program, e))?;
        let record = ProcRecord {
            role,
            label: label.to_string(),
            pid: child.id(),
            pid_start: start_time(child.id()),
        };
        let journaled = state::journal_append(&self.state_dir, &record);
        self.lock().push(Managed {
            record: record.clone(),
            child,
        });
        journaled?;
        Ok(record)
    }

    /// Exit status of a child of ours that has exited (reaping it), if it has.
    pub fn exited(&self, pid: u32) -> Option<ExitStatus> {
        let mut children = self.lock();
        // Newest first: the kernel may have given an earlier child's pid to a new one.
        let m = children.iter_mut().rev().find(|m| m.record.pid == pid)?;
        m.child.try_wait().ok().flatten()
    }

    pub fn records(&self) -> Vec<ProcRecord> {
        self.lock().iter().map(|m| m.record.clone()).collect()
    }

    /// Keep the children running when this registry is dropped.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// SIGKILL every child and reap it. Used when `up` fails or is abandoned.
    pub fn kill_all(&self) {
        let mut children = self.lock();
        for m in children.iter_mut() {
            if let Ok(None) = m.child.try_wait() {
                let _ = m.child.kill();
                let _ = m.child.wait();
            }
        }
    }

    /// Reap children that have exited (after a graceful stop) and forget them.
    pub fn reap(&self) {
        self.lock()
            .retain_mut(|m| !matches!(m.child.try_wait(), Ok(Some(_))));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Managed>> {
        // A panic while holding the lock leaves a Vec that is still valid.
        self.children
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if self.armed {
            self.kill_all();
        }
    }
}

/// An exclusive advisory lock on `<dir>/.lock`, released when the file is dropped.
pub fn lock_dir(dir: &Path) -> Result<File, StackError> {
    let path = dir.join(".lock");
    let file = File::create(&path).map_err(|e| StackError::io("create", &path, e))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StackError::AlreadyRunning {
            state_dir: dir.to_path_buf(),
            running: "another `stompede stack up` is starting it".into(),
        });
    }
    Ok(file)
}

/// Reserve `n` distinct free TCP ports on 127.0.0.1. The listeners are closed on
/// return, so another program could take a port before we bind it; that window is
/// short and a lost race surfaces as a clear start-up failure.
pub fn free_ports(n: usize) -> Result<Vec<u16>, StackError> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let l = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| StackError::io("bind a free port on", Path::new("127.0.0.1:0"), e))?;
        held.push(l);
    }
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<io::Result<Vec<u16>>>()
        .map_err(|e| StackError::io("read the address of", Path::new("127.0.0.1:0"), e))
}

/// Create (truncate) a log file for a child's stdout and stderr.
pub fn open_log(path: &Path) -> Result<(File, File), StackError> {
    let out = File::create(path).map_err(|e| StackError::io("create log file", path, e))?;
    let err = out
        .try_clone()
        .map_err(|e| StackError::io("open log file", path, e))?;
    Ok((out, err))
}

/// Open a log file for appending (a second command writing to the same log).
pub fn append_log(path: &Path) -> Result<(File, File), StackError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| StackError::io("open log file", path, e))?;
    let err = out
        .try_clone()
        .map_err(|e| StackError::io("open log file", path, e))?;
    Ok((out, err))
}

/// The last `n` lines of a log file, or a note saying why there are none.
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            if lines.is_empty() {
                "(the log is empty)".to_string()
            } else {
                lines[start..].join("\n")
            }
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

/// One HTTP/1.1 GET; returns the status code. Enough for a health probe, no client crate.
pub async fn http_get_status(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<u16> {
    http_get_limited(addr, path, timeout, None)
        .await
        .map(|(code, _)| code)
}

/// Largest response [`http_get`] reads.
pub const MAX_HTTP_RESPONSE: usize = 4 * 1024 * 1024;

/// One HTTP/1.1 GET of a small text resource (a `/metrics` page); returns the status
/// code and the body. Responses over [`MAX_HTTP_RESPONSE`] are refused.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> io::Result<(u16, String)> {
    http_get_limited(addr, path, timeout, Some(MAX_HTTP_RESPONSE)).await
}

/// `body_limit: None` reads only the status line.
async fn http_get_limited(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    body_limit: Option<usize>,
) -> io::Result<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 4096];
        loop {
            let done = match body_limit {
                None => buf.contains(&b'\n') || buf.len() >= 4096,
                Some(limit) if buf.len() > limit => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("response larger than {limit} bytes"),
                    ))
                }
                Some(_) => false,
            };
            if done {
                break;
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let code = parse_status_line(&buf)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))?;
        let body = match buf.windows(4).position(|w| w == b"\r\n\r\n") {
            Some(i) if body_limit.is_some() => String::from_utf8_lossy(&buf[i + 4..]).into_owned(),
            _ => String::new(),
        };
        Ok((code, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no HTTP response in time"))?
}

fn parse_status_line(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_parsing() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"),
            Some(200)
        );
        assert_eq!(
            parse_status_line(b"HTTP/1.0 503 Service Unavailable\r\n"),
            Some(503)
        );
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn own_process_is_alive_and_start_time_guards_reuse() {
        let me = std::process::id();
        let start = start_time(me);
        assert!(start > 0);
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start + 1));
        assert!(!is_alive(u32::MAX - 1, 0));
    }

    #[test]
    fn a_state_dir_can_be_locked_once_at_a_time() {
        let dir = std::env::temp_dir().join(format!("stompede-lock-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let held = lock_dir(&dir).expect("first lock");
        assert!(matches!(
            lock_dir(&dir),
            Err(StackError::AlreadyRunning { .. })
        ));
        drop(held);
        assert!(lock_dir(&dir).is_ok());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports = free_ports(5).expect("ports");
        let mut sorted = ports.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 5);
    }
}
