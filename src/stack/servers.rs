//! Chat server instances for the local stack: stompede's reference server or, with
//! `server_impl = spring`, the Spring Boot peer (`spring.rs`; one JVM per instance, one
//! port for WebSocket, `/healthz` and `/metrics`).
//!
//! Each reference instance `s<i>` is the `stompede server` subcommand of the binary given in
//! `StackOptions::server_exe`, on its own free WebSocket and metrics ports, pointed at
//! the stack's Kafka bootstrap and PostgreSQL URL, logging to
//! `<state_dir>/logs/server-s<i>.log`. An instance is ready when
//! `GET http://127.0.0.1:M/healthz` answers 200. Each server retries Kafka's "not ready
//! yet" answers for [`KAFKA_START_TIMEOUT`] itself; the stack waits a little longer, so a
//! server that gives up exits with its own error, which the stack shows from its log.
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::process::{self, Registry};
use super::state::{Role, ServerInfo};
use super::{spring, ServerImpl, StackError, StackOptions};
use crate::server::{Persist, DEFAULT_PERSIST_GROUP, FANOUT_GROUP_PREFIX};

/// `--kafka-start-timeout` of every instance.
pub const KAFKA_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one instance may take to answer its health check.
pub const READY_TIMEOUT: Duration = Duration::from_secs(75);
/// The same for a Spring peer instance: a JVM that starts Spring, Hibernate, Tomcat and
/// a Kafka consumer takes 10 s on an idle 2-core machine and several times that on a
/// busy one.
pub const SPRING_READY_TIMEOUT: Duration = Duration::from_secs(180);

/// The id of instance `i` (0-based): `s1`, `s2`, …
fn instance_id(i: usize) -> String {
    format!("s{}", i + 1)
}

/// The consumer groups the instances will use: each one's fan-out group and, under
/// `--persist consumer`, the shared persist group.
pub fn consumer_groups(opts: &StackOptions) -> Vec<String> {
    if opts.shared_fanout_group {
        return vec![spring::SHARED_GROUP.to_string()];
    }
    let mut groups: Vec<String> = (0..opts.servers as usize)
        .map(|i| format!("{FANOUT_GROUP_PREFIX}{}", instance_id(i)))
        .collect();
    if opts.servers > 0 && opts.persist == Persist::Consumer {
        groups.push(DEFAULT_PERSIST_GROUP.to_string());
    }
    groups
}

/// Start `opts.servers` instances and wait until every one is healthy.
pub async fn start(
    reg: &Registry,
    opts: &StackOptions,
    bootstrap: &str,
    db_url: &str,
) -> Result<Vec<ServerInfo>, StackError> {
    let logs = opts.state_dir.join("logs");
    let n = opts.servers as usize;
    let jar = match opts.server_impl {
        ServerImpl::Spring if n > 0 => Some(spring::ensure_jar().await?),
        _ => None,
    };
    let ports = process::free_ports(n * 2)?;
    let mut started = Vec::with_capacity(n);
    for i in 0..n {
        let id = instance_id(i);
        let (ws, mut metrics) = (ports[2 * i], ports[2 * i + 1]);
        let log = logs.join(format!("server-{id}.log"));
        let (out, err) = process::open_log(&log)?;
        let mut cmd = match &jar {
            Some(jar) => {
                // One port for WebSocket, /healthz and /metrics.
                metrics = ws;
                spring::command(jar, opts, &id, ws, bootstrap, db_url)?
            }
            None => reference_command(opts, &id, ws, metrics, bootstrap, db_url),
        };
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let rec = reg.spawn(Role::Server, &format!("server {id}"), cmd)?;
        started.push((
            Instant::now(),
            metrics,
            ServerInfo {
                instance_id: id,
                ws_url: format!("ws://127.0.0.1:{ws}/ws-stomp"),
                metrics_url: format!("http://127.0.0.1:{metrics}/metrics"),
                pid: rec.pid,
                pid_start: rec.pid_start,
                log,
                alive: None,
            },
        ));
    }
    let timeout = match opts.server_impl {
        ServerImpl::Stompede => READY_TIMEOUT,
        ServerImpl::Spring => SPRING_READY_TIMEOUT,
    };
    let mut out = Vec::with_capacity(n);
    for (since, metrics, info) in started {
        let exited = || {
            reg.exited(info.pid)
                .map(|s| format!("the server exited with {s}"))
        };
        wait_healthy(&info, metrics, since + timeout, timeout, exited).await?;
        out.push(info);
    }
    Ok(out)
}

/// `stompede server …` for instance `id`.
fn reference_command(
    opts: &StackOptions,
    id: &str,
    ws: u16,
    metrics: u16,
    bootstrap: &str,
    db_url: &str,
) -> Command {
    let mut cmd = Command::new(&opts.server_exe);
    cmd.arg("server")
        .args(["--listen", &format!("127.0.0.1:{ws}")])
        .args(["--kafka", bootstrap])
        .args(["--db", db_url])
        .args(["--instance-id", id])
        .args(["--persist", opts.persist.as_str()])
        .args(["--topic", &opts.topic])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args([
            "--kafka-start-timeout",
            &format!("{}s", KAFKA_START_TIMEOUT.as_secs()),
        ])
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        );
    cmd
}

/// Waits until a server started again outside `start` (a fault's restart) answers its
/// health check; `info` carries its new PID.
pub async fn wait_ready(info: &ServerInfo, server_impl: ServerImpl) -> Result<(), StackError> {
    let port = info
        .metrics_url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .and_then(|hp| hp.parse::<SocketAddr>().ok())
        .map(|a| a.port())
        .ok_or_else(|| {
            StackError::part(
                &format!("server {}", info.instance_id),
                format!("cannot read a port from {}", info.metrics_url),
                &info.log,
            )
        })?;
    let timeout = match server_impl {
        ServerImpl::Stompede => READY_TIMEOUT,
        ServerImpl::Spring => SPRING_READY_TIMEOUT,
    };
    let exited = || {
        (!process::is_alive(info.pid, info.pid_start))
            .then(|| format!("the server (pid {}) exited", info.pid))
    };
    wait_healthy(info, port, Instant::now() + timeout, timeout, exited).await
}

/// Polls `GET /healthz` until it answers 200, `exited` says why the process is gone, or
/// `deadline` passes.
async fn wait_healthy(
    info: &ServerInfo,
    port: u16,
    deadline: Instant,
    timeout: Duration,
    exited: impl Fn() -> Option<String>,
) -> Result<(), StackError> {
    let part = format!("server {}", info.instance_id);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Some(why) = exited() {
            return Err(StackError::part(&part, why, &info.log));
        }
        let last = match process::http_get_status(addr, "/healthz", Duration::from_secs(2)).await {
            Ok(200) => return Ok(()),
            Ok(code) => format!("GET /healthz answered {code}"),
            Err(e) => format!("GET /healthz: {e}"),
        };
        if Instant::now() >= deadline {
            return Err(StackError::part(
                &part,
                format!("not healthy after {timeout:?} ({last})"),
                &info.log,
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
