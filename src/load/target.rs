//! Resolving where a run goes: the local stack (reused when `.stompede/` says one is up
//! with the scenario's shape, otherwise brought up for the run and taken down after) or
//! external URLs. A running stack of another shape is refused, never measured in place
//! of the one asked for ([`TargetError::ShapeMismatch`]); [`ShapeOverrides`] are the
//! command-line flags that reshape the scenario's ask. What the samplers watch while the
//! run goes on comes from here ([`Resolved::kafka`], [`Resolved::db`]); running them is
//! [`super::sampling`]'s job.

use std::path::PathBuf;

use crate::load::samplers::GroupSelector;
use crate::load::RunOptions;
use crate::scenario::{
    LocalStack, Persist, Scenario, ServerImpl, TargetKind, MAX_PARTITIONS, MAX_SERVERS,
};
use crate::server::FANOUT_GROUP_PREFIX;
use crate::stack::{self, StackInfo, StackOptions};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("the local stack did not come up: {0}")]
    Stack(#[from] stack::StackError),
    #[error(
        "the stack recorded in {0} has no servers; start one with `stompede stack up --servers 2`"
    )]
    NoServers(PathBuf),
    #[error(
        "the running stack (recorded in {}) is {}, but the run asks for {}; it was not measured in place of the one asked for. \
         Either reshape it: `stompede stack down --state-dir {dir} && stompede stack up --state-dir {dir} {}`, \
         or measure it as it is, with `{}` on the command line",
        .state_dir.display(), describe_shape(.running), describe_shape(.wanted),
        stack_up_flags(.wanted), stack_up_flags(.running), dir = .state_dir.display()
    )]
    ShapeMismatch {
        state_dir: PathBuf,
        wanted: LocalStack,
        running: LocalStack,
    },
}

impl TargetError {
    /// True when the error lies in what was asked (a shape the running stack does not
    /// have), not in carrying the run out.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, TargetError::ShapeMismatch { .. })
    }
}

/// `1 broker, 3 partitions, 2 servers, persist producer` (then `, spring servers` and
/// `, one shared fan-out group` where they apply).
pub fn describe_shape(s: &LocalStack) -> String {
    let mut text = format!(
        "{} broker{}, {} partition{}, {} server{}, persist {}",
        s.brokers,
        if s.brokers == 1 { "" } else { "s" },
        s.partitions,
        if s.partitions == 1 { "" } else { "s" },
        s.servers,
        if s.servers == 1 { "" } else { "s" },
        s.persist.as_str()
    );
    if s.server_impl != ServerImpl::Stompede {
        text += &format!(", {} servers", s.server_impl.as_str());
    }
    if s.shared_fanout_group {
        text += ", one shared fan-out group";
    }
    text
}

/// `--brokers 1 --partitions 3 --servers 2 --persist producer` (then
/// `--server-impl spring` and `--shared-fanout-group` where they apply).
pub fn stack_up_flags(s: &LocalStack) -> String {
    let mut text = format!(
        "--brokers {} --partitions {} --servers {} --persist {}",
        s.brokers,
        s.partitions,
        s.servers,
        s.persist.as_str()
    );
    if s.server_impl != ServerImpl::Stompede {
        text += &format!(" --server-impl {}", s.server_impl.as_str());
    }
    if s.shared_fanout_group {
        text += " --shared-fanout-group";
    }
    text
}

/// What `stack::up` needs to start the local stack `shape` asks for.
pub fn stack_options(
    shape: &LocalStack,
    state_dir: &std::path::Path,
    server_exe: &std::path::Path,
) -> StackOptions {
    StackOptions {
        brokers: shape.brokers as u8,
        partitions: shape.partitions,
        servers: shape.servers,
        persist: shape.persist,
        server_impl: shape.server_impl,
        shared_fanout_group: shape.shared_fanout_group,
        state_dir: state_dir.to_path_buf(),
        server_exe: server_exe.to_path_buf(),
        detach: false,
        ..StackOptions::default()
    }
}

/// Command-line values that replace the local target's shape (`[target]` brokers,
/// partitions, servers, persist, server_impl); `None` keeps the scenario's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShapeOverrides {
    pub brokers: Option<u32>,
    pub partitions: Option<u32>,
    pub servers: Option<u32>,
    pub persist: Option<Persist>,
    pub server_impl: Option<ServerImpl>,
    pub shared_fanout_group: Option<bool>,
}

impl ShapeOverrides {
    pub fn is_empty(&self) -> bool {
        *self == ShapeOverrides::default()
    }

    /// Applies the overrides to a local-target scenario. Errors name the flag, the value
    /// and what is allowed; an external target cannot be reshaped.
    pub fn apply(&self, scenario: &mut Scenario) -> Result<(), String> {
        if self.is_empty() {
            return Ok(());
        }
        let TargetKind::Local(shape) = &mut scenario.target.kind else {
            return Err(format!(
                "--brokers, --partitions, --servers, --persist, --server-impl and --shared-fanout-group reshape the local stack, but {} targets an external server \
                 (target.kind = \"external\"); drop them, or use a scenario with target.kind = \"local\"",
                scenario.source.display()
            ));
        };
        if let Some(b) = self.brokers {
            if b != 1 && b != 3 {
                return Err(format!("--brokers {b}: must be 1 (one combined KRaft node) or 3 (a 3-voter quorum, replication factor 3)"));
            }
            shape.brokers = b;
        }
        if let Some(p) = self.partitions {
            if p == 0 || p > MAX_PARTITIONS {
                return Err(format!("--partitions {p}: must be 1 to {MAX_PARTITIONS}"));
            }
            shape.partitions = p;
        }
        if let Some(n) = self.servers {
            if n == 0 || n > MAX_SERVERS {
                return Err(format!(
                    "--servers {n}: must be 1 to {MAX_SERVERS} server instances"
                ));
            }
            shape.servers = n;
        }
        if let Some(p) = self.persist {
            shape.persist = p;
        }
        if let Some(i) = self.server_impl {
            shape.server_impl = i;
            if i != ServerImpl::Spring {
                shape.shared_fanout_group = false;
            }
        }
        if let Some(shared) = self.shared_fanout_group {
            shape.shared_fanout_group = shared;
        }
        if shape.shared_fanout_group && shape.server_impl != ServerImpl::Spring {
            return Err(
                "--shared-fanout-group is a switch of the Spring peer; add --server-impl spring"
                    .to_string(),
            );
        }
        if shape.server_impl == ServerImpl::Spring && shape.persist != Persist::Producer {
            return Err(
                "the Spring peer persists on the producer side only (it saves each message once Kafka acknowledged it); use --persist producer with --server-impl spring"
                    .to_string(),
            );
        }
        Ok(())
    }
}

/// A target ready to be loaded.
pub struct Resolved {
    pub urls: Vec<String>,
    /// The local stack's record (for the report and resource figures).
    pub stack: Option<StackInfo>,
    /// Whether this run started the stack (and so stops it).
    owned: Option<stack::Stack>,
    pub kafka: Option<(String, String, GroupSelector)>,
    pub db: Option<(String, String)>,
    pub notes: Vec<String>,
}

pub async fn resolve(scenario: &Scenario, options: &RunOptions) -> Result<Resolved, TargetError> {
    match &scenario.target.kind {
        TargetKind::External { urls } => {
            let kafka = scenario.target.kafka.as_ref().map(|k| {
                let groups = GroupSelector::Prefix(
                    k.group_prefix
                        .clone()
                        .unwrap_or_else(|| FANOUT_GROUP_PREFIX.to_string()),
                );
                (k.bootstrap.clone(), k.topic.clone(), groups)
            });
            let db = scenario
                .target
                .db
                .as_ref()
                .map(|d| (d.url.clone(), d.table.clone()));
            Ok(Resolved {
                urls: urls.clone(),
                stack: None,
                owned: None,
                kafka,
                db,
                notes: Vec::new(),
            })
        }
        TargetKind::Local(shape) => {
            let notes = Vec::new();
            let running = stack::status(&options.state_dir)
                .ok()
                .flatten()
                .filter(|info| {
                    info.servers.iter().all(|s| s.alive != Some(false))
                        && info.brokers.iter().all(|b| b.alive != Some(false))
                        && info.postgres.alive != Some(false)
                });
            let (info, owned) = match running {
                Some(info) => {
                    let running = LocalStack {
                        brokers: info.brokers.len() as u32,
                        partitions: info.partitions,
                        servers: info.servers.len() as u32,
                        persist: info.persist,
                        server_impl: info.server_impl,
                        shared_fanout_group: info.shared_fanout_group,
                    };
                    if running != *shape {
                        return Err(TargetError::ShapeMismatch {
                            state_dir: options.state_dir.clone(),
                            wanted: shape.clone(),
                            running,
                        });
                    }
                    eprintln!(
                        "using the running stack recorded in {}",
                        options.state_dir.display()
                    );
                    (info, None)
                }
                None => {
                    eprintln!(
                        "no stack running: bringing one up ({})",
                        describe_shape(shape)
                    );
                    let stack = stack::up(&stack_options(
                        shape,
                        &options.state_dir,
                        &options.server_exe,
                    ))
                    .await?;
                    (stack.info().clone(), Some(stack))
                }
            };
            if info.servers.is_empty() {
                if let Some(stack) = owned {
                    let _ = stack.down().await;
                }
                return Err(TargetError::NoServers(options.state_dir.clone()));
            }
            let urls = info.servers.iter().map(|s| s.ws_url.clone()).collect();
            let groups = GroupSelector::Exact(info.fanout_groups());
            let kafka = Some((info.kafka_bootstrap.clone(), info.topic.clone(), groups));
            let db = Some((info.postgres.url.clone(), info.history_table().to_string()));
            Ok(Resolved {
                urls,
                stack: Some(info),
                owned,
                kafka,
                db,
                notes,
            })
        }
    }
}

impl Resolved {
    /// The stack, when this run brought it up.
    pub fn owned_stack(&self) -> Option<&stack::Stack> {
        self.owned.as_ref()
    }

    /// Takes the stack down if this run brought it up.
    pub async fn release(&mut self) {
        if let Some(stack) = self.owned.take() {
            eprintln!("taking down the stack this run started");
            if let Err(e) = stack.down().await {
                eprintln!("warning: stack down: {e}");
            }
        }
    }
}
