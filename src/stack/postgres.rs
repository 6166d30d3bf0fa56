//! A private PostgreSQL cluster for the local stack.
//!
//! Flow of `start`: find the server binaries (newest `/usr/lib/postgresql/*/bin`, else
//! `pg_config --bindir`), `initdb` a fresh cluster into `<state_dir>/data/pg` with a
//! trusted superuser `stompede`, start `postgres` on a free 127.0.0.1 port with
//! durability settings traded for speed (this is scratch data), logging to
//! `<state_dir>/logs/postgres.log`. Ready means a real `SELECT 1` over TCP succeeded;
//! then the `stompede` database is created and [`crate::db::SCHEMA`] applied.
//!
//! PostgreSQL refuses to run as root. When we are root, `initdb` and `postgres` run as
//! the `postgres` system user through `Command::uid/gid` (so postgres stays our direct
//! child and the death signal still applies); the data directory is chowned to that
//! user, and must be reachable by it: if an ancestor of the state directory is closed
//! to other users, the cluster goes to a directory under the system temp dir instead.
//! Unix-domain sockets are disabled (`unix_socket_directories=''`): every client uses
//! TCP, and long state paths cannot overflow the socket path limit.
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{self, Registry};
use super::state::{PostgresInfo, Role};
use super::StackError;

const PG_INSTALL: &str = "apt-get install postgresql-15";
const PART: &str = "postgres";
/// Database the chat server uses.
pub const DATABASE: &str = "stompede";
/// Superuser created by initdb.
pub const USER: &str = "stompede";
/// File under `<state_dir>/data/` naming a cluster directory kept outside the state dir.
pub const OUTSIDE_DATA_NOTE: &str = "pg.path";

/// Directory holding `initdb` and `postgres`.
pub fn find_bindir() -> Result<PathBuf, StackError> {
    let has_bins = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("STOMPEDE_PG_BINDIR").map(PathBuf::from) {
        if has_bins(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_bins(&bin).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_bins(&dir) {
            return Ok(dir);
        }
    }
    Err(StackError::MissingPrerequisite {
        program: "initdb and postgres (PostgreSQL server)".into(),
        install: PG_INSTALL,
    })
}

/// The uid/gid to run PostgreSQL as: `None` when we are not root.
fn run_as() -> Result<Option<(u32, u32)>, StackError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new("postgres").map_err(|_| StackError::Invalid("user name".into()))?;
    // SAFETY: getpwnam returns null or a pointer to static storage that we read at once;
    // `up` is the only caller and nothing else in this crate calls getpw*.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(StackError::Part {
            part: PART.into(),
            reason: format!(
                "PostgreSQL refuses to run as root and there is no `postgres` system user to run it as; \
                 `{PG_INSTALL}` creates one, or run stompede as an ordinary user"
            ),
            log: None,
            tail: String::new(),
        });
    }
    // SAFETY: checked non-null above.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some((uid, gid)))
}

/// Whether user `uid`/`gid` may enter every ancestor directory of `path`.
fn traversable(path: &Path, uid: u32, gid: u32) -> bool {
    path.ancestors()
        .skip(1)
        .all(|dir| match std::fs::metadata(dir) {
            Ok(m) => {
                let mode = m.mode();
                if m.uid() == uid {
                    mode & 0o100 != 0
                } else if m.gid() == gid {
                    mode & 0o010 != 0
                } else {
                    mode & 0o001 != 0
                }
            }
            Err(_) => false,
        })
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), StackError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .map_err(|e| StackError::io("chown to the postgres user", path, e))
}

fn pg_command(bin: &Path, user: Option<(u32, u32)>, cwd: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(cwd)
        .env_remove("PGDATA")
        .stdin(Stdio::null());
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// The PostgreSQL data directory for this state dir: `<state_dir>/data/pg`, or a
/// temp directory when running as root and the postgres user cannot reach that path.
fn choose_data_dir(state_dir: &Path, user: Option<(u32, u32)>) -> Result<PathBuf, StackError> {
    let preferred = state_dir.join("data").join("pg");
    let Some((uid, gid)) = user else {
        return Ok(preferred);
    };
    if traversable(&preferred, uid, gid) {
        return Ok(preferred);
    }
    let fallback = std::env::temp_dir().join(format!("stompede-pg-{:016x}", rand::random::<u64>()));
    // Recorded before anything is written there, so `down` finds it even after a crash.
    let note = state_dir.join("data").join(OUTSIDE_DATA_NOTE);
    std::fs::write(&note, fallback.display().to_string())
        .map_err(|e| StackError::io("write", &note, e))?;
    eprintln!(
        "postgres: the `postgres` user cannot reach {}, so the cluster lives in {} (removed by `stack down`)",
        preferred.display(),
        fallback.display()
    );
    Ok(fallback)
}

/// initdb and start PostgreSQL; returns once the server answers and the schema exists.
pub async fn start(
    reg: &Registry,
    state_dir: &Path,
    deadline: Instant,
) -> Result<PostgresInfo, StackError> {
    let bindir = find_bindir()?;
    let user = run_as()?;
    let data_dir = choose_data_dir(state_dir, user)?;
    let log = state_dir.join("logs").join("postgres.log");
    std::fs::create_dir_all(&data_dir).map_err(|e| StackError::io("create", &data_dir, e))?;
    if let Some((uid, gid)) = user {
        chown(&data_dir, uid, gid)?;
    }

    let (out, err) = process::open_log(&log)?;
    let mut initdb = pg_command(&bindir.join("initdb"), user, &data_dir);
    initdb
        .arg("-D")
        .arg(&data_dir)
        .args([
            "-U",
            USER,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ])
        .stdout(out)
        .stderr(err);
    let status = tokio::process::Command::from(initdb)
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| StackError::spawn(PART, "initdb", e))?;
    if !status.success() {
        return Err(StackError::part(
            PART,
            format!("initdb exited with {status}"),
            &log,
        ));
    }

    let port = process::free_ports(1)?[0];
    let (out, err) = process::append_log(&log)?;
    let mut cmd = pg_command(&bindir.join("postgres"), user, &data_dir);
    cmd.arg("-D").arg(&data_dir).arg("-p").arg(port.to_string());
    for setting in [
        "listen_addresses=127.0.0.1",
        "unix_socket_directories=",
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
        "max_connections=200",
        "shared_buffers=256MB",
    ] {
        cmd.arg("-c").arg(setting);
    }
    cmd.stdout(out).stderr(err);
    let rec = reg.spawn(Role::Postgres, PART, cmd)?;
    let url = format!("postgres://{USER}@127.0.0.1:{port}/{DATABASE}");
    let admin_url = format!("postgres://{USER}@127.0.0.1:{port}/postgres");

    // Ready = a real query succeeds.
    loop {
        if let Some(status) = reg.exited(rec.pid) {
            return Err(StackError::part(
                PART,
                format!("postgres exited with {status}"),
                &log,
            ));
        }
        let last = match query_one(&admin_url, "SELECT 1").await {
            Ok(()) => break,
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(StackError::part(
                PART,
                format!("no answer to SELECT 1 on port {port} in time: {last}"),
                &log,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    create_database(&admin_url, &url)
        .await
        .map_err(|e| StackError::part(PART, e, &log))?;
    Ok(PostgresInfo {
        url,
        port,
        pid: rec.pid,
        pid_start: rec.pid_start,
        data_dir,
        log,
        alive: None,
    })
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    tokio::time::timeout(Duration::from_secs(5), crate::db::connect(url))
        .await
        .map_err(|_| "connection attempt timed out".to_string())?
        .map_err(|e| e.to_string())
}

async fn query_one(url: &str, sql: &str) -> Result<(), String> {
    let client = connect(url).await?;
    client
        .simple_query(sql)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn create_database(admin_url: &str, url: &str) -> Result<(), String> {
    let admin = connect(admin_url).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await
        .map_err(|e| format!("CREATE DATABASE {DATABASE}: {e}"))?;
    let db = connect(url).await?;
    db.batch_execute(crate::db::SCHEMA)
        .await
        .map_err(|e| format!("applying the chat history schema: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_owned_open_dirs_are_traversable_and_closed_ones_are_not() {
        let base = std::env::temp_dir().join(format!("stompede-trav-{}", std::process::id()));
        let closed = base.join("closed");
        let inner = closed.join("inner");
        std::fs::create_dir_all(&inner).expect("mkdir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        // A uid/gid that owns nothing here.
        let (uid, gid) = (54_321, 54_321);
        assert!(traversable(&closed, uid, gid));
        assert!(!traversable(&inner.join("pg"), uid, gid));
        std::fs::remove_dir_all(&base).expect("cleanup");
    }
}
