//! Reshaping a running stack between the cells of a sweep, restarting only what must:
//!
//! - another broker count: the whole stack restarts (a new cluster; the servers and the
//!   database go with it, so nothing of the old cluster leaks into the new cell);
//! - another partition count: the servers stop, the chat topic is deleted and created
//!   again with the new count (Kafka can add partitions but never remove them, and a
//!   fresh topic starts every cell from the same empty state), the servers start again;
//! - another server count, persistence strategy or server implementation: the servers
//!   restart, and the topic
//!   is recreated too, so no cell inherits the records of the one before.
//!
//! Whenever the topic is recreated the history table is emptied with it ([`Stack::reset`]
//! does both for two runs of the same shape). Kafka and PostgreSQL keep running in the
//! last two cases. What the brokers and servers
//! then report is read back by the caller (`crate::campaign::sweep`), never assumed.
use std::time::{Duration, Instant};

use super::kafka_admin::{
    create_topic, delete_topic, topic_config, wait_coordinators_started, wait_ready_started,
};
use super::state::{self, ProcRecord, Role};
use super::{
    bring_up, process, remove_records, servers, teardown, validate, ServerImpl, Stack, StackError,
    StackOptions, KAFKA_TIMEOUT, STOP_GRACE,
};

/// What [`Stack::reshape`] restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reshaped {
    /// The stack already had the shape.
    Unchanged,
    /// The servers restarted; the topic was recreated (and the history table emptied)
    /// when `topic_recreated`.
    Servers { topic_recreated: bool },
    /// Everything restarted (another broker count).
    Restarted,
}

impl Reshaped {
    pub fn describe(self) -> &'static str {
        match self {
            Reshaped::Unchanged => "unchanged",
            Reshaped::Servers {
                topic_recreated: true,
            } => "topic recreated, history emptied, servers restarted",
            Reshaped::Servers {
                topic_recreated: false,
            } => "servers restarted",
            Reshaped::Restarted => "whole stack restarted",
        }
    }
}

impl Stack {
    /// Gives this stack `want`'s brokers, partitions, servers and persistence (its
    /// `state_dir`, `topic` and `detach` are this stack's). `state.json` is rewritten.
    /// After an error the stack is in no defined shape: take it down.
    pub async fn reshape(&mut self, want: &StackOptions) -> Result<Reshaped, StackError> {
        let want = StackOptions {
            state_dir: self.info.state_dir.clone(),
            topic: self.info.topic.clone(),
            detach: self.detach,
            ..want.clone()
        };
        validate(&want)?;
        let dir = want.state_dir.clone();
        self.adopt_recorded();
        let cur = &self.info;
        let same_brokers = cur.brokers.len() == usize::from(want.brokers);
        let same_partitions = cur.partitions == want.partitions;
        let same_servers = cur.servers.len() == want.servers as usize
            && cur.persist == want.persist
            && cur.server_impl == want.server_impl
            && cur.shared_fanout_group == want.shared_fanout_group;
        if same_brokers && same_partitions && same_servers {
            return Ok(Reshaped::Unchanged);
        }
        if !same_brokers {
            let records = self.known_processes();
            teardown(&dir, &records).await?;
            self.registry.reap();
            for sub in ["data", "logs"] {
                let p = dir.join(sub);
                std::fs::create_dir_all(&p).map_err(|e| StackError::io("create", &p, e))?;
            }
            return match bring_up(&want, &self.registry).await {
                Ok(info) => {
                    self.info = info;
                    Ok(Reshaped::Restarted)
                }
                Err(e) => {
                    self.registry.kill_all();
                    let _ = remove_records(&dir);
                    Err(e)
                }
            };
        }
        self.restart_servers(&want, true).await
    }

    /// Brings the stack back to the state a fresh one of its shape starts in, short of
    /// restarting Kafka and PostgreSQL: the servers restart and the topic and the history
    /// table start empty. What a sweep does between two runs of the same shape.
    pub async fn reset(&mut self, server_exe: &std::path::Path) -> Result<Reshaped, StackError> {
        self.adopt_recorded();
        let want = StackOptions {
            brokers: self.info.brokers.len() as u8,
            partitions: self.info.partitions,
            servers: self.info.servers.len() as u32,
            persist: self.info.persist,
            server_impl: self.info.server_impl,
            shared_fanout_group: self.info.shared_fanout_group,
            topic: self.info.topic.clone(),
            state_dir: self.info.state_dir.clone(),
            server_exe: server_exe.to_path_buf(),
            detach: self.detach,
        };
        self.restart_servers(&want, true).await
    }

    /// Takes the processes recorded in `state.json` as this stack's: a fault that killed
    /// and restarted a broker or a server recorded the new process there (it was not
    /// started through this stack), and a reshape must stop that one, not the dead one.
    fn adopt_recorded(&mut self) {
        if let Ok(Some(info)) = state::read_state(&self.info.state_dir) {
            if info.topic == self.info.topic && info.brokers.len() == self.info.brokers.len() {
                self.info = info;
            }
        }
    }

    /// Stops the servers; with `recreate`, deletes the chat topic, empties the history
    /// table and creates the topic with `want.partitions`; starts `want`'s servers.
    ///
    /// The table is emptied with the topic because history rows are keyed by Kafka
    /// position (cluster, topic, partition, offset), and a recreated topic counts its
    /// offsets from 0 again: the new rows would collide with the old ones and be dropped.
    /// A server-only change recreates the topic as well, so that no cell inherits the
    /// last one's records (a `persist = consumer` group new to the topic would otherwise
    /// begin by reading all of them).
    async fn restart_servers(
        &mut self,
        want: &StackOptions,
        recreate: bool,
    ) -> Result<Reshaped, StackError> {
        let t = Instant::now();
        let dir = want.state_dir.clone();
        let old: Vec<ProcRecord> = self
            .info
            .processes()
            .into_iter()
            .filter(|p| p.role == Role::Server)
            .collect();
        let killed = process::stop(&old, STOP_GRACE).await;
        if !killed.is_empty() {
            eprintln!(
                "stack: {} did not stop within {STOP_GRACE:?} and got SIGKILL",
                killed.join(", ")
            );
        }
        self.registry.reap();
        let survivors: Vec<String> = old
            .iter()
            .filter(|p| p.alive())
            .map(|p| format!("{} pid {}", p.label, p.pid))
            .collect();
        if !survivors.is_empty() {
            return Err(StackError::StopFailed(survivors.join(", ")));
        }
        self.info.servers.clear();
        let boot = self.info.kafka_bootstrap.clone();
        let topic = self.info.topic.clone();
        let deadline = Instant::now() + KAFKA_TIMEOUT;
        if recreate {
            delete_topic(&boot, &topic).await?;
            empty_history(&self.info.postgres.url).await?;
            let (rf, min_isr) = (self.info.replication_factor, self.info.min_insync_replicas);
            let min_isr_text = min_isr.to_string();
            let configs: Vec<(&str, &str)> = if rf >= 3 {
                vec![("min.insync.replicas", min_isr_text.as_str())]
            } else {
                Vec::new()
            };
            // Until the brokers have dropped the old partitions, the name is taken; any
            // other refusal is final.
            loop {
                match create_topic(&boot, &topic, want.partitions, rf, &configs).await {
                    Ok(()) => break,
                    Err(e) if !e.to_string().contains("TopicAlreadyExists") => return Err(e),
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
            // The new partition count first, then leaders and in-sync replicas for it.
            loop {
                let last = match topic_config(&boot, &topic).await {
                    Ok(d) if d.partitions == want.partitions => break,
                    Ok(d) => format!("the metadata lists {} partitions", d.partitions),
                    Err(e) => e.to_string(),
                };
                if Instant::now() >= deadline {
                    return Err(StackError::Kafka {
                        bootstrap: boot,
                        what: format!("recreate topic {topic} with {} partitions", want.partitions),
                        detail: last,
                    });
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            wait_ready_started(&self.registry, &self.info.brokers, Some(&topic), deadline).await?;
            self.info.partitions = want.partitions;
        }
        let groups = servers::consumer_groups(want);
        wait_coordinators_started(
            &self.registry,
            &self.info.brokers,
            &topic,
            want.partitions,
            &groups,
            deadline,
        )
        .await?;
        self.info.servers =
            servers::start(&self.registry, want, &boot, &self.info.postgres.url).await?;
        self.info.persist = want.persist;
        self.info.server_impl = want.server_impl;
        self.info.shared_fanout_group = want.shared_fanout_group;
        state::write_state(&dir, &self.info)?;
        state::remove_file_if_present(&dir.join(state::JOURNAL_FILE))?;
        let how = Reshaped::Servers {
            topic_recreated: recreate,
        };
        eprintln!(
            "stack reshaped ({}) in {:.1} s",
            how.describe(),
            t.elapsed().as_secs_f64()
        );
        Ok(how)
    }
}

/// `TRUNCATE` the chat history tables of every server implementation (the Spring
/// peer's exists only once a Spring instance has started).
async fn empty_history(url: &str) -> Result<(), StackError> {
    let tables = [ServerImpl::Stompede, ServerImpl::Spring].map(ServerImpl::history_table);
    let err = |detail: String| StackError::Part {
        part: "postgres".into(),
        reason: format!("cannot empty {}: {detail}", tables.join(", ")),
        log: None,
        tail: String::new(),
    };
    let client = crate::db::connect(url)
        .await
        .map_err(|e| err(e.to_string()))?;
    for table in tables {
        client
            .batch_execute(&format!(
                "DO $$ BEGIN IF to_regclass('{table}') IS NOT NULL THEN TRUNCATE {table}; END IF; END $$"
            ))
            .await
            .map_err(|e| err(e.to_string()))?;
    }
    Ok(())
}
