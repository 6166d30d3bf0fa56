//! Resolving where a run goes: the local stack (reused when `.stompede/` says one is up,
//! otherwise brought up for the run and taken down after) or external URLs. What the
//! samplers watch while the run goes on comes from here ([`Resolved::kafka`],
//! [`Resolved::db`]); running them is [`super::sampling`]'s job.

use std::path::PathBuf;

use crate::load::samplers::GroupSelector;
use crate::load::RunOptions;
use crate::scenario::{Scenario, TargetKind};
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
            let mut notes = Vec::new();
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
                    eprintln!(
                        "using the running stack recorded in {}",
                        options.state_dir.display()
                    );
                    if info.brokers.len() as u32 != shape.brokers
                        || info.partitions != shape.partitions
                        || info.servers.len() as u32 != shape.servers
                        || info.persist != shape.persist
                    {
                        notes.push(format!(
                            "the scenario asks for {} broker(s), {} partitions, {} servers, persist {}; the running stack has {}, {}, {}, {} and was used as it is",
                            shape.brokers, shape.partitions, shape.servers, shape.persist.as_str(),
                            info.brokers.len(), info.partitions, info.servers.len(), info.persist.as_str()
                        ));
                    }
                    (info, None)
                }
                None => {
                    eprintln!(
                        "no stack running: bringing one up ({} broker(s), {} partitions, {} servers, persist {})",
                        shape.brokers, shape.partitions, shape.servers, shape.persist.as_str()
                    );
                    let stack = stack::up(&StackOptions {
                        brokers: shape.brokers as u8,
                        partitions: shape.partitions,
                        servers: shape.servers,
                        persist: shape.persist,
                        state_dir: options.state_dir.clone(),
                        server_exe: options.server_exe.clone(),
                        detach: false,
                        ..StackOptions::default()
                    })
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
            let groups = GroupSelector::Exact(
                info.servers
                    .iter()
                    .map(|s| format!("{FANOUT_GROUP_PREFIX}{}", s.instance_id))
                    .collect(),
            );
            let kafka = Some((info.kafka_bootstrap.clone(), info.topic.clone(), groups));
            let db = Some((info.postgres.url.clone(), crate::db::TABLE.to_string()));
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
