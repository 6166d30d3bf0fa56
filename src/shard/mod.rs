//! One run, many shards: virtual users spread over worker processes (on this machine or
//! on many), merged exactly into one report.
//!
//! - [`coordinator`]: resolves the target, runs the clock and the samplers once, hands
//!   each shard its slice of users, answers counter rounds, merges at the end.
//! - [`worker`]: runs one slice of users with the same code as a single process.
//! - [`counters`]: how a shard reads other shards' sequence counters as exactly as its
//!   own (so integrity stays exact across shards).
//! - [`wire`]: the TCP protocol between them.
//!
//! Local mode ([`run_local`], `stompede run --shards N`) starts N workers of this same
//! binary on this machine and talks to them over loopback with the same protocol as
//! cluster mode (`stompede coordinate` / `stompede worker`). Local shards on a loopback
//! target connect from their own address (127.0.0.2, 127.0.0.3, …), so their sessions do
//! not share one address's ephemeral ports.

pub mod coordinator;
pub mod counters;
pub mod wire;
pub mod worker;

use std::net::IpAddr;
use std::time::Duration;

pub use counters::RemoteCounters;

use crate::load::{LoadError, RunOptions, RunOutcome};
use crate::scenario::Scenario;

/// The port `stompede coordinate` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 7700;

/// Most shards one run may have.
pub const MAX_SHARDS: u32 = 256;

/// How long local mode waits for its workers to connect.
const LOCAL_PATIENCE: Duration = Duration::from_secs(60);

/// The name a worker gives its host: `$STOMPEDE_HOST`, else the kernel's hostname.
pub fn host_name() -> String {
    std::env::var("STOMPEDE_HOST")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into())
        })
}

/// Whether every URL's host is a loopback address (or `localhost`).
fn loopback_target(urls: &[String]) -> bool {
    !urls.is_empty()
        && urls.iter().all(|u| {
            let host = u
                .split("://")
                .nth(1)
                .and_then(|rest| rest.split(['/', '?']).next())
                .map(|authority| {
                    if let Some(v6) = authority.strip_prefix('[') {
                        v6.split(']').next().unwrap_or("").to_string()
                    } else {
                        authority
                            .rsplit_once(':')
                            .map_or(authority, |(h, _)| h)
                            .to_string()
                    }
                })
                .unwrap_or_default();
            host == "localhost"
                || host
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback() && ip.is_ipv4())
        })
}

/// Shards needed so each process's users fit its open-file limit (`None`: one process
/// holds them all).
pub fn shards_needed(users: u64) -> Option<u32> {
    let limit = crate::limits::raise_nofile()?;
    let per = limit.soft.saturating_sub(crate::load::FD_HEADROOM).max(1);
    (users + crate::load::FD_HEADROOM > limit.soft)
        .then(|| users.div_ceil(per).min(u64::from(MAX_SHARDS)) as u32)
}

/// Runs `scenario` over `shards` worker processes of this binary on this machine.
pub async fn run_local(
    scenario: Scenario,
    options: &RunOptions,
    shards: u32,
) -> Result<RunOutcome, LoadError> {
    let shards = shards.clamp(1, MAX_SHARDS);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| LoadError::Sharding(format!("cannot listen for local shards: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| LoadError::Sharding(format!("cannot listen for local shards: {e}")))?;
    // Where the users will connect: a loopback target gets a source address per shard.
    let urls = match &scenario.target.kind {
        crate::scenario::TargetKind::External { urls } => urls.clone(),
        _ => vec!["ws://127.0.0.1/".to_string()],
    };
    let sources: Vec<Option<IpAddr>> = (0..shards)
        .map(|k| {
            let n = k + 2;
            loopback_target(&urls).then(|| IpAddr::from([127, 0, (n / 256) as u8, (n % 256) as u8]))
        })
        .collect();
    let host = host_name();
    let mut children = Vec::new();
    for k in 0..shards {
        let child = tokio::process::Command::new(&options.server_exe)
            .arg("worker")
            .arg("--coordinator")
            .arg(addr.to_string())
            .arg("--shard")
            .arg(k.to_string())
            .env("STOMPEDE_HOST", &host)
            // The coordinator's console speaks for its local workers: theirs shows only
            // trouble (unless RUST_LOG asks for more).
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                LoadError::Sharding(format!(
                    "cannot start shard {k} ({} worker): {e}",
                    options.server_exe.display()
                ))
            })?;
        children.push(child);
    }
    let launch = coordinator::Launch {
        shards,
        listener,
        patience: LOCAL_PATIENCE,
        silence: coordinator::SILENCE_PATIENCE,
        sources,
    };
    let outcome = coordinator::coordinate(scenario, options, launch).await;
    // Workers leave once their final report is sent; any still there 10 s on (one
    // deadline for all of them) are stopped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for mut child in children {
        if tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_cover_every_user_once() {
        for (users, shards) in [(10u32, 3u32), (3, 3), (2, 3), (50_000, 7), (0, 2)] {
            let b = coordinator::bounds(users, shards);
            assert_eq!(b.len(), shards as usize + 1);
            assert_eq!((b[0], b[shards as usize]), (0, users));
            assert!(b.windows(2).all(|w| w[0] <= w[1]));
            let sizes: Vec<u32> = b.windows(2).map(|w| w[1] - w[0]).collect();
            let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(hi - lo <= 1, "{sizes:?}");
        }
    }

    #[test]
    fn loopback_targets_are_recognised() {
        assert!(loopback_target(&["ws://127.0.0.1:8080/ws".into()]));
        assert!(loopback_target(&[
            "ws://localhost:1/x".into(),
            "ws://127.0.0.9/".into()
        ]));
        assert!(!loopback_target(&["ws://10.0.0.1:8080/ws".into()]));
        assert!(!loopback_target(&["ws://chat.example:80/".into()]));
        assert!(!loopback_target(&[]));
    }
}
