//! More users than one process may open files for: `stompede run --shards 1` refuses the
//! scenario before it opens a single connection; without --shards the run spreads the
//! users over as many local shards as their limits need.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::Command;

const LIMIT: u64 = 300;

fn scenario(url: &str, users: u32) -> String {
    format!(
        r#"
name = "too-many"
duration = "2s"
[users]
count = {users}
connect_rate = 1000.0
[[rooms]]
name = "r"
count = {rooms}
members = 10
[load]
model = "open"
rate = 1.0
[target]
kind = "external"
urls = ["{url}"]
receipts = false
"#,
        rooms = users / 10
    )
}

#[test]
fn users_beyond_the_open_file_limit_are_refused_before_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("ws://{}/ws-stomp", listener.local_addr().unwrap());
    let dir = std::env::temp_dir().join(format!("stompede-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("too-many.toml");
    std::fs::write(&file, scenario(&url, 1000)).unwrap();
    // One process asked for explicitly: the users cannot fit it.
    let out = limited(&["run", "--quiet", "--shards", "1"], &dir, &file)
        .output()
        .expect("run stompede");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("RLIMIT_NOFILE") && stderr.contains(&format!("hard limit {LIMIT}")),
        "the message names the limit: {stderr}"
    );
    assert!(stderr.contains("--shards N"), "and the way out: {stderr}");
    assert!(stderr.contains("1000 virtual users"), "{stderr}");
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the refused run connected anyway (from {peer})"),
        Err(e) => panic!("accept: {e}"),
    }
    assert!(
        !dir.join("reports").exists(),
        "a refused run writes no report"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `stompede ARGS --out DIR/reports --state-dir DIR/state FILE` under an open-file limit
/// of [`LIMIT`].
fn limited(args: &[&str], dir: &std::path::Path, file: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stompede"));
    cmd.args(args)
        .arg("--out")
        .arg(dir.join("reports"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg(file);
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: LIMIT as libc::rlim_t,
                rlim_max: LIMIT as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// Without --shards, users beyond one process's files are spread over local shards by
/// themselves: each shard gets what fits its own limit. (Nothing listens on the target,
/// so the run then fails for that, after every shard has tried.)
#[test]
fn users_beyond_the_limit_are_spread_over_local_shards() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}/ws-stomp", listener.local_addr().unwrap());
    drop(listener);
    let dir = std::env::temp_dir().join(format!("stompede-limits-auto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("many.toml");
    std::fs::write(&file, scenario(&url, 1000)).unwrap();
    let out = limited(&["run"], &dir, &file)
        .output()
        .expect("run stompede");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let per_process = LIMIT - 256;
    let shards = 1000u64.div_ceil(per_process);
    assert!(
        stderr.contains(&format!("running {shards} local shards")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("shards: {shards} of {shards} connected")),
        "{stderr}"
    );
    assert!(!stderr.contains("RLIMIT_NOFILE"), "{stderr}");
    assert_eq!(out.status.code(), Some(3), "nothing listens: {stderr}");
    assert!(
        stderr.contains("every one of the 1000 virtual users failed to connect"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn users_within_the_limit_are_not_refused_for_it() {
    // The same check with room to spare: the run gets past it (and fails later for a
    // different reason, since nothing listens on the port).
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("ws://{}/ws-stomp", listener.local_addr().unwrap());
    drop(listener);
    let dir = std::env::temp_dir().join(format!("stompede-limits-ok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("few.toml");
    std::fs::write(&file, scenario(&url, 20)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stompede"))
        .args(["run", "--quiet", "--out"])
        .arg(dir.join("reports"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg(&file)
        .output()
        .expect("run stompede");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("RLIMIT_NOFILE"), "{stderr}");
    assert_eq!(out.status.code(), Some(3), "nothing listens: {stderr}");
    // Twenty refused connections are one warning with its count, not twenty lines.
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("cannot connect"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("warning x20:"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
