//! Reshaping a running stack between the cells of a sweep, restarting only what must:
//!
//! - another broker count: the whole stack restarts (a new cluster; the servers and the
//!   database go with it, so nothing of the old cluster leaks into the new cell);
//! - another partition count: the servers stop, the chat topic is deleted and created
//!   again with the new count (Kafka can add partitions but never remove them, and a
//!   fresh topic starts every cell from the same empty state), the servers start again;
//! - another server count or persistence strategy: the servers restart.
//!
//! Kafka and PostgreSQL keep running in the last two cases. What the brokers and servers
//! then report is read back by the caller (`crate::campaign::sweep`), never assumed.
use std::time::{Duration, Instant};

use super::kafka_admin::{
    create_topic, delete_topic, topic_config, wait_coordinators_started, wait_ready_started,
};
use super::state::{self, ProcRecord, Role};
use super::{
    bring_up, process, remove_records, servers, teardown, validate, Stack, StackError,
    StackOptions, KAFKA_TIMEOUT, STOP_GRACE,
};

/// What [`Stack::reshape`] restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reshaped {
    /// The stack already had the shape.
    Unchanged,
    /// The servers restarted; the topic was recreated when `topic_recreated`.
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
            } => "topic recreated, servers restarted",
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
        let cur = &self.info;
        let same_brokers = cur.brokers.len() == usize::from(want.brokers);
        let same_partitions = cur.partitions == want.partitions;
        let same_servers =
            cur.servers.len() == want.servers as usize && cur.persist == want.persist;
        if same_brokers && same_partitions && same_servers {
            return Ok(Reshaped::Unchanged);
        }
        if !same_brokers {
            let records = self.registry.records();
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
        let t = Instant::now();
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
        self.info.servers.clear();
        let boot = self.info.kafka_bootstrap.clone();
        let topic = self.info.topic.clone();
        let deadline = Instant::now() + KAFKA_TIMEOUT;
        if !same_partitions {
            delete_topic(&boot, &topic).await?;
            let (rf, min_isr) = (self.info.replication_factor, self.info.min_insync_replicas);
            let min_isr_text = min_isr.to_string();
            let configs: Vec<(&str, &str)> = if rf >= 3 {
                vec![("min.insync.replicas", min_isr_text.as_str())]
            } else {
                Vec::new()
            };
            // Until the brokers have dropped the old partitions, the name is taken.
            loop {
                match create_topic(&boot, &topic, want.partitions, rf, &configs).await {
                    Ok(()) => break,
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
            wait_ready_started(&self.registry, &self.info.brokers, Some(&topic), deadline).await?;
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
            self.info.partitions = want.partitions;
        }
        let groups = servers::consumer_groups(&want);
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
            servers::start(&self.registry, &want, &boot, &self.info.postgres.url).await?;
        self.info.persist = want.persist;
        state::write_state(&dir, &self.info)?;
        state::remove_file_if_present(&dir.join(state::JOURNAL_FILE))?;
        let how = Reshaped::Servers {
            topic_recreated: !same_partitions,
        };
        eprintln!(
            "stack reshaped ({}) in {:.1} s",
            how.describe(),
            t.elapsed().as_secs_f64()
        );
        Ok(how)
    }
}
