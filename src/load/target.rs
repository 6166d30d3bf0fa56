//! Resolving where a run goes: the local stack (reused when `.stompede/` says one is up,
//! otherwise brought up for the run and taken down after) or external URLs; and the
//! samplers that watch the target's Kafka and PostgreSQL while the run goes on.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::load::samplers::{
    self, Audit, DbSample, DbSampler, GroupSelector, LagSample, LagSampler,
};
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

    /// Starts the lag and DB samplers (each optional).
    pub async fn start_samplers(&self, t0: Instant, stop: CancellationToken) -> Samplers {
        let mut s = Samplers {
            lag: None,
            db: None,
            notes: self.notes.clone(),
            db_target: self.db.clone(),
            stop: stop.clone(),
        };
        if let Some((bootstrap, topic, groups)) = &self.kafka {
            match LagSampler::new(bootstrap, topic, groups.clone()) {
                Ok(sampler) => {
                    let (tx, rx) = mpsc::channel(1024);
                    let task = tokio::spawn(samplers::run_lag_sampler(
                        sampler,
                        t0,
                        Duration::from_secs(1),
                        stop.clone(),
                        tx,
                    ));
                    s.lag = Some((task, rx));
                }
                Err(e) => s.notes.push(format!("Kafka lag not sampled: {e}")),
            }
        } else {
            s.notes.push(
                "Kafka lag not sampled: the target names no Kafka bootstrap ([target.kafka])"
                    .into(),
            );
        }
        if let Some((url, table)) = &self.db {
            match DbSampler::new(url, table).await {
                Ok(sampler) => {
                    let (tx, rx) = mpsc::channel(4096);
                    let task = tokio::spawn(samplers::run_db_sampler(
                        sampler,
                        t0,
                        Duration::from_secs(1),
                        stop.clone(),
                        tx,
                    ));
                    s.db = Some((task, rx));
                }
                Err(e) => s.notes.push(format!("database not sampled: {e}")),
            }
        } else {
            s.notes
                .push("database not sampled: the target names no database ([target.db])".into());
        }
        s
    }
}

/// Running samplers.
pub struct Samplers {
    lag: Option<(
        JoinHandle<samplers::SamplerStats>,
        mpsc::Receiver<Vec<LagSample>>,
    )>,
    db: Option<(JoinHandle<samplers::SamplerStats>, mpsc::Receiver<DbSample>)>,
    db_target: Option<(String, String)>,
    notes: Vec<String>,
    stop: CancellationToken,
}

/// Everything the samplers saw.
#[derive(Default)]
pub struct Sampled {
    pub lag: Option<Vec<LagSample>>,
    pub db: Option<Vec<DbSample>>,
    pub audit: Option<Audit>,
    pub notes: Vec<String>,
}

impl Samplers {
    /// Stops the samplers, collects their samples and audits the database for `run_id`.
    pub async fn finish(mut self, run_id: &str, sent: u64) -> Sampled {
        // One last lag sample after the grace period: the final lag.
        self.stop.cancel();
        let mut out = Sampled {
            notes: std::mem::take(&mut self.notes),
            ..Sampled::default()
        };
        if let Some((task, mut rx)) = self.lag.take() {
            let _ = task.await;
            let mut all = Vec::new();
            while let Ok(batch) = rx.try_recv() {
                all.extend(batch);
            }
            out.lag = Some(all);
        }
        if let Some((task, mut rx)) = self.db.take() {
            let _ = task.await;
            let mut all = Vec::new();
            while let Ok(sample) = rx.try_recv() {
                all.push(sample);
            }
            out.db = Some(all);
        }
        if let Some((url, table)) = &self.db_target {
            // History may trail the run (`--persist consumer`): give it up to 30 s to
            // catch up before counting what is missing.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match samplers::audit(url, table, &crate::load::stamp::marker(run_id)).await {
                    Ok(audit)
                        if audit.distinct_for_run as u64 >= sent || Instant::now() >= deadline =>
                    {
                        out.audit = Some(audit);
                        break;
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    Err(e) => {
                        out.notes.push(format!("database audit failed: {e}"));
                        break;
                    }
                }
            }
        }
        out
    }
}
