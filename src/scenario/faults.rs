//! `[[faults]]` and `[users.reconnect]`: what breaks during a run, and how virtual users
//! come back.
//!
//! ```toml
//! [users.reconnect]          # absent: a user whose session breaks stays away
//! delay = "250ms"            # first retry after the break
//! max_delay = "2s"           # each retry waits twice as long, up to this
//! jitter = 0.5               # each wait is scaled by a random factor in [1 - jitter, 1]
//!
//! [[faults]]
//! at = "10s"                 # after sending starts (warm-up included)
//! kind = "kill-broker"       # SIGKILL; node = 2, or node = "leader" with room = "<room id>"
//! node = "leader"
//! room = "town-hall-0"
//! ```
//!
//! Kinds: `kill-broker`, `restart-broker` (`node`), `kill-server`, `restart-server`
//! (`server = "s2"`), `pause-db` (`duration`), the network faults `delay` (`server`,
//! `duration`, `delay`), `drop` and `partition` (`server`, `duration`) through a relay
//! in front of that server, and `exec` (`command`, run with `sh -c`). The process kinds
//! need the local stack; against an external target only the network faults and `exec`
//! apply. Servers are named `s1`, `s2`, … in the order of the target's URLs (the local
//! stack's instances are in that order too).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::text as duration_text;
use super::error::ScenarioError;
use super::raw::{DurationText, S};
use super::validate::Ctx;

/// Most `[[faults]]` entries in one scenario.
pub const MAX_FAULTS: usize = 32;
/// Longest `duration` of a fault and longest network `delay`.
pub const MAX_FAULT_DURATION: Duration = Duration::from_secs(3600);

/// `[users.reconnect]`: retry with exponential backoff, to the next server URL each time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reconnect {
    #[serde(with = "duration_text")]
    pub delay: Duration,
    #[serde(with = "duration_text")]
    pub max_delay: Duration,
    /// Each wait is scaled by a factor drawn from `[1 - jitter, 1]`.
    pub jitter: f64,
}

impl Reconnect {
    /// The wait before retry number `attempt` (0 = the first), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(20));
        self.delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// One `[[faults]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// When, after sending starts.
    #[serde(with = "duration_text")]
    pub at: Duration,
    #[serde(flatten)]
    pub action: FaultAction,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultAction {
    /// SIGKILL one Kafka node: `node`, or (`node = None`) the leader of `room`'s partition.
    KillBroker {
        node: Option<u32>,
        room: Option<String>,
    },
    /// Start a Kafka node again (killing it first if it still runs).
    RestartBroker { node: u32 },
    /// SIGKILL one chat server instance.
    KillServer { server: String },
    /// Start a server instance again (killing it first if it still runs).
    RestartServer { server: String },
    /// SIGSTOP every PostgreSQL process for `duration`, then SIGCONT.
    PauseDb {
        #[serde(with = "duration_text")]
        duration: Duration,
    },
    /// Add `delay` to every WebSocket message between `server` and its users.
    Delay {
        server: String,
        #[serde(with = "duration_text")]
        duration: Duration,
        #[serde(with = "duration_text")]
        delay: Duration,
    },
    /// Discard every WebSocket message between `server` and its users.
    Drop {
        server: String,
        #[serde(with = "duration_text")]
        duration: Duration,
    },
    /// Forward nothing between `server` and its users (TCP holds it until healed).
    Partition {
        server: String,
        #[serde(with = "duration_text")]
        duration: Duration,
    },
    /// Run a command (`sh -c`) and record its exit status.
    Exec { command: String },
}

impl FaultAction {
    pub fn kind(&self) -> &'static str {
        match self {
            FaultAction::KillBroker { .. } => "kill-broker",
            FaultAction::RestartBroker { .. } => "restart-broker",
            FaultAction::KillServer { .. } => "kill-server",
            FaultAction::RestartServer { .. } => "restart-server",
            FaultAction::PauseDb { .. } => "pause-db",
            FaultAction::Delay { .. } => "delay",
            FaultAction::Drop { .. } => "drop",
            FaultAction::Partition { .. } => "partition",
            FaultAction::Exec { .. } => "exec",
        }
    }

    /// How long the fault lasts before it is lifted (`None`: it is a single act).
    pub fn duration(&self) -> Option<Duration> {
        match self {
            FaultAction::PauseDb { duration }
            | FaultAction::Delay { duration, .. }
            | FaultAction::Drop { duration, .. }
            | FaultAction::Partition { duration, .. } => Some(*duration),
            _ => None,
        }
    }

    /// The server a fault is about (`s2`), if any.
    pub fn server(&self) -> Option<&str> {
        match self {
            FaultAction::KillServer { server }
            | FaultAction::RestartServer { server }
            | FaultAction::Delay { server, .. }
            | FaultAction::Drop { server, .. }
            | FaultAction::Partition { server, .. } => Some(server),
            _ => None,
        }
    }

    /// Whether the fault goes through a relay in front of its server.
    pub fn is_network(&self) -> bool {
        matches!(
            self,
            FaultAction::Delay { .. } | FaultAction::Drop { .. } | FaultAction::Partition { .. }
        )
    }

    /// Whether the fault acts on the local stack's processes.
    pub fn needs_local_stack(&self) -> bool {
        matches!(
            self,
            FaultAction::KillBroker { .. }
                | FaultAction::RestartBroker { .. }
                | FaultAction::KillServer { .. }
                | FaultAction::RestartServer { .. }
                | FaultAction::PauseDb { .. }
        )
    }
}

/// `s3` → index 2.
pub fn server_index(name: &str) -> Option<usize> {
    let n: usize = name.strip_prefix('s')?.parse().ok()?;
    n.checked_sub(1)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawReconnect {
    pub delay: S<DurationText>,
    pub max_delay: S<DurationText>,
    pub jitter: S<f64>,
}

/// `node` is a number or `"leader"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum RawNode {
    Id(u32),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFault {
    pub at: S<DurationText>,
    pub kind: S<String>,
    pub node: S<RawNode>,
    pub room: S<String>,
    pub server: S<String>,
    pub duration: S<DurationText>,
    pub delay: S<DurationText>,
    pub command: S<String>,
}

const KINDS: &str = "kill-broker, restart-broker, kill-server, restart-server, pause-db, delay, drop, partition, exec";

pub(crate) fn build_reconnect(r: RawReconnect, ctx: &mut Ctx) -> Result<Reconnect, ScenarioError> {
    let delay = ctx
        .duration("users.reconnect.delay", r.delay)?
        .unwrap_or(Duration::from_millis(250));
    let max_delay = ctx
        .duration("users.reconnect.max_delay", r.max_delay)?
        .unwrap_or(Duration::from_secs(5).max(delay));
    let jitter = ctx.take("users.reconnect.jitter", r.jitter).unwrap_or(0.5);
    Ok(Reconnect {
        delay,
        max_delay,
        jitter,
    })
}

pub(crate) fn build_fault(i: usize, f: RawFault, ctx: &mut Ctx) -> Result<Fault, ScenarioError> {
    let key = |k: &str| format!("faults[{i}].{k}");
    let at = ctx
        .duration(&key("at"), f.at)?
        .ok_or_else(|| ctx.missing(&key("at"), "at = \"10s\" (after sending starts)"))?;
    let kind = ctx
        .take(&key("kind"), f.kind)
        .ok_or_else(|| ctx.missing(&key("kind"), "kind = \"kill-server\""))?;
    let node = ctx.take(&key("node"), f.node);
    let room = ctx.take(&key("room"), f.room);
    let server = ctx.take(&key("server"), f.server);
    let duration = ctx.duration(&key("duration"), f.duration)?;
    let delay = ctx.duration(&key("delay"), f.delay)?;
    let command = ctx.take(&key("command"), f.command);
    // Which keys the kind takes; any other present key is an error naming the kind.
    let takes: &[&str] = match kind.as_str() {
        "kill-broker" => &["node", "room"],
        "restart-broker" => &["node"],
        "kill-server" | "restart-server" => &["server"],
        "pause-db" => &["duration"],
        "delay" => &["server", "duration", "delay"],
        "drop" | "partition" => &["server", "duration"],
        "exec" => &["command"],
        other => {
            return Err(ctx.err(
                &key("kind"),
                Some(format!("{other:?}")),
                format!("is not a fault kind; use one of {KINDS}"),
            ))
        }
    };
    let present = [
        ("node", node.is_some()),
        ("room", room.is_some()),
        ("server", server.is_some()),
        ("duration", duration.is_some()),
        ("delay", delay.is_some()),
        ("command", command.is_some()),
    ];
    for (k, here) in present {
        if here && !takes.contains(&k) {
            return Err(ctx.err(
                &key(k),
                None,
                format!(
                    "does not apply to kind = {kind:?} (it takes {})",
                    takes.join(", ")
                ),
            ));
        }
    }
    let need_server = |ctx: &Ctx, server: Option<String>| {
        server.ok_or_else(|| ctx.missing(&key("server"), "server = \"s1\""))
    };
    let need_duration = |ctx: &Ctx, d: Option<Duration>| {
        d.ok_or_else(|| ctx.missing(&key("duration"), "duration = \"5s\""))
    };
    let action = match kind.as_str() {
        "kill-broker" => {
            match node {
                Some(RawNode::Id(n)) => {
                    if room.is_some() {
                        return Err(ctx.err(
                        &key("room"),
                        None,
                        "only goes with node = \"leader\" (kill the leader of that room's partition)",
                    ));
                    }
                    FaultAction::KillBroker {
                        node: Some(n),
                        room: None,
                    }
                }
                Some(RawNode::Word(w)) if w == "leader" => {
                    let room = room.ok_or_else(|| {
                        ctx.missing(
                            &key("room"),
                            "room = \"town-hall-0\" (whose partition's leader to kill)",
                        )
                    })?;
                    FaultAction::KillBroker {
                        node: None,
                        room: Some(room),
                    }
                }
                Some(RawNode::Word(w)) => return Err(ctx.err(
                    &key("node"),
                    Some(format!("{w:?}")),
                    "must be a node id (1, 2, 3) or \"leader\" together with room = \"<room id>\"",
                )),
                None => {
                    return Err(ctx.missing(
                        &key("node"),
                        "node = 2, or node = \"leader\" with room = \"town-hall-0\"",
                    ))
                }
            }
        }
        "restart-broker" => match node {
            Some(RawNode::Id(n)) => FaultAction::RestartBroker { node: n },
            Some(RawNode::Word(w)) => {
                return Err(ctx.err(
                    &key("node"),
                    Some(format!("{w:?}")),
                    "must be a node id (1, 2, 3)",
                ))
            }
            None => return Err(ctx.missing(&key("node"), "node = 2")),
        },
        "kill-server" => FaultAction::KillServer {
            server: need_server(ctx, server)?,
        },
        "restart-server" => FaultAction::RestartServer {
            server: need_server(ctx, server)?,
        },
        "pause-db" => FaultAction::PauseDb {
            duration: need_duration(ctx, duration)?,
        },
        "delay" => FaultAction::Delay {
            server: need_server(ctx, server)?,
            duration: need_duration(ctx, duration)?,
            delay: delay.ok_or_else(|| ctx.missing(&key("delay"), "delay = \"200ms\""))?,
        },
        "drop" => FaultAction::Drop {
            server: need_server(ctx, server)?,
            duration: need_duration(ctx, duration)?,
        },
        "partition" => FaultAction::Partition {
            server: need_server(ctx, server)?,
            duration: need_duration(ctx, duration)?,
        },
        "exec" => FaultAction::Exec {
            command: command.filter(|c| !c.trim().is_empty()).ok_or_else(|| {
                ctx.missing(
                    &key("command"),
                    "command = \"systemctl stop kafka\" (run with sh -c)",
                )
            })?,
        },
        _ => unreachable!("kinds are matched above"),
    };
    Ok(Fault { at, action })
}

/// Cross-key checks of the faults and the reconnect settings against the rest of the
/// scenario (run again after command-line overrides, like every check).
pub(crate) fn check_faults(s: &super::Scenario, ctx: &Ctx) -> Result<(), ScenarioError> {
    use super::duration::format_duration;
    use super::TargetKind;
    let d = |d: Duration| Some(format!("\"{}\"", format_duration(d)));
    if let Some(r) = &s.users.reconnect {
        if r.delay.is_zero() || r.delay > MAX_FAULT_DURATION {
            return Err(ctx.err(
                "users.reconnect.delay",
                d(r.delay),
                "must be longer than 0s and at most 1h (the wait before the first retry)",
            ));
        }
        if r.max_delay < r.delay || r.max_delay > MAX_FAULT_DURATION {
            return Err(ctx.err(
                "users.reconnect.max_delay",
                d(r.max_delay),
                format!(
                    "must be at least delay ({}) and at most 1h",
                    format_duration(r.delay)
                ),
            ));
        }
        if !(0.0..=1.0).contains(&r.jitter) {
            return Err(ctx.err(
                "users.reconnect.jitter",
                Some(r.jitter.to_string()),
                "must be 0 to 1 (each wait is scaled by a random factor in [1 - jitter, 1])",
            ));
        }
    }
    if s.faults.len() > MAX_FAULTS {
        return Err(ctx.err(
            "faults",
            Some(s.faults.len().to_string()),
            format!("at most {MAX_FAULTS} faults per scenario"),
        ));
    }
    let sending = s.warmup + s.duration;
    let (servers, brokers, local) = match &s.target.kind {
        TargetKind::Local(l) => (l.servers as usize, Some(l.brokers), true),
        TargetKind::External { urls } => (urls.len(), None, false),
    };
    for (i, f) in s.faults.iter().enumerate() {
        let key = |k: &str| format!("faults[{i}].{k}");
        let kind = f.action.kind();
        if f.at >= sending {
            return Err(ctx.err(
                &key("at"),
                d(f.at),
                format!(
                    "is not inside the sending phase: it counts from the start of sending and \
                     sending lasts {} (warmup + duration)",
                    format_duration(sending)
                ),
            ));
        }
        if !local && f.action.needs_local_stack() {
            return Err(ctx.err(
                &key("kind"),
                Some(format!("{kind:?}")),
                "acts on the local stack's processes, but the target is external; against an \
                 external target use kind = \"exec\" with your own command (e.g. one that stops \
                 a broker), or a network fault (delay, drop, partition)",
            ));
        }
        if let Some(len) = f.action.duration() {
            if len.is_zero() || len > MAX_FAULT_DURATION {
                return Err(ctx.err(
                    &key("duration"),
                    d(len),
                    "must be longer than 0s and at most 1h",
                ));
            }
            if f.at + len > sending {
                return Err(ctx.err(
                    &key("duration"),
                    d(len),
                    format!(
                        "the fault would still be on when sending ends (at {} + {} > {}); \
                         it must be lifted while messages flow, or its recovery cannot be seen",
                        format_duration(f.at),
                        format_duration(len),
                        format_duration(sending)
                    ),
                ));
            }
        }
        if let FaultAction::Delay { delay, .. } = &f.action {
            if delay.is_zero() || *delay > Duration::from_secs(60) {
                return Err(ctx.err(
                    &key("delay"),
                    d(*delay),
                    "must be longer than 0s and at most 60s",
                ));
            }
        }
        if let Some(server) = f.action.server() {
            if server_index(server).is_none_or(|i| i >= servers) {
                return Err(ctx.err(
                    &key("server"),
                    Some(format!("{server:?}")),
                    format!(
                        "must name one of the target's {servers} server(s): s1 to s{servers} \
                         (in the order of the target's URLs, or the local stack's instances)"
                    ),
                ));
            }
        }
        let node = match &f.action {
            FaultAction::KillBroker { node: Some(n), .. }
            | FaultAction::RestartBroker { node: n } => Some(*n),
            _ => None,
        };
        if let (Some(n), Some(brokers)) = (node, brokers) {
            if n == 0 || n > brokers {
                return Err(ctx.err(
                    &key("node"),
                    Some(n.to_string()),
                    format!("the local stack has brokers 1 to {brokers}"),
                ));
            }
        }
        if let FaultAction::KillBroker {
            room: Some(room), ..
        } = &f.action
        {
            let known = s
                .rooms
                .iter()
                .any(|g| (0..g.count).any(|k| g.room_id(k) == *room));
            if !known {
                let first = s.rooms.first().map(|g| g.room_id(0)).unwrap_or_default();
                return Err(ctx.err(
                    &key("room"),
                    Some(format!("{room:?}")),
                    format!("is not a room of this scenario (room ids are <group name>-<index>, e.g. {first:?})"),
                ));
            }
        }
    }
    Ok(())
}
