//! Kafka as a client sees it: readiness, topic creation, topic description.
//!
//! Everything here goes through librdkafka (`rdkafka`), the same view the chat server
//! and the harness get: broker metadata (which brokers are registered, which partitions
//! have a leader and a full ISR), group coordinators (an offset fetch answered for each
//! consumer group the servers will use) and the admin API (CreateTopics,
//! DescribeConfigs). The stack uses it to decide when Kafka is ready; tests use it to
//! check what the brokers really report (partition count, replication factor,
//! `min.insync.replicas`).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::TopicPartitionList;

use super::kafka::bootstrap;
use super::process::Registry;
use super::state::BrokerInfo;
use super::StackError;

/// Topic facts as the brokers report them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    pub partitions: u32,
    pub replication_factor: u16,
    pub min_insync_replicas: u16,
    /// Every config entry the brokers return for the topic (defaults included).
    pub configs: BTreeMap<String, String>,
}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("socket.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "500")
        .set("log_level", "3");
    cfg
}

/// Why a metadata probe was not satisfied, and which broker ids the metadata listed.
struct NotReady {
    why: String,
    seen: Vec<i32>,
}

impl From<String> for NotReady {
    fn from(why: String) -> Self {
        NotReady {
            why,
            seen: Vec::new(),
        }
    }
}

/// One metadata round trip: `Ok(())` when all `brokers` are listed and, if a topic is
/// given, every partition has a leader and a full ISR; otherwise what is missing.
async fn probe(bootstrap: &str, brokers: usize, topic: Option<&str>) -> Result<(), NotReady> {
    let cfg = client_config(bootstrap);
    let topic = topic.map(str::to_string);
    let res = tokio::task::spawn_blocking(move || -> Result<(), NotReady> {
        let consumer: BaseConsumer = cfg
            .create()
            .map_err(|e| format!("cannot create a Kafka client: {e}"))?;
        let md = consumer
            .fetch_metadata(topic.as_deref(), Duration::from_secs(3))
            .map_err(|e| format!("metadata request failed: {e}"))?;
        let seen: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
        if seen.len() < brokers {
            let why = format!(
                "{} of {brokers} brokers registered (ids {seen:?})",
                seen.len()
            );
            return Err(NotReady { why, seen });
        }
        let fail = |why: String| NotReady {
            why,
            seen: seen.clone(),
        };
        let Some(name) = topic else { return Ok(()) };
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| fail(format!("topic {name} not in metadata")))?;
        if let Some(err) = t.error() {
            return Err(fail(format!("topic {name}: {err:?}")));
        }
        if t.partitions().is_empty() {
            return Err(fail(format!("topic {name} has no partitions yet")));
        }
        for p in t.partitions() {
            if p.leader() < 0 || p.error().is_some() {
                return Err(fail(format!(
                    "topic {name} partition {} has no leader",
                    p.id()
                )));
            }
            if p.isr().len() < p.replicas().len() {
                let (isr, replicas) = (p.isr(), p.replicas());
                return Err(fail(format!(
                    "topic {name} partition {} has ISR {isr:?} of replicas {replicas:?}",
                    p.id()
                )));
            }
        }
        Ok(())
    })
    .await;
    res.map_err(|e| NotReady::from(format!("metadata task failed: {e}")))?
}

/// Wait until metadata lists `brokers` brokers and (if given) a leader for every
/// partition of `topic`.
pub async fn wait_kafka_ready(
    bootstrap: &str,
    brokers: usize,
    topic: Option<&str>,
    timeout: Duration,
) -> Result<(), StackError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe(bootstrap, brokers, topic).await {
            Ok(()) => return Ok(()),
            Err(e) => e.why,
        };
        if Instant::now() >= deadline {
            return Err(StackError::Kafka {
                bootstrap: bootstrap.to_string(),
                what: format!("not ready after {timeout:?}"),
                detail: last,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Like [`wait_kafka_ready`], but fails at once, naming the node and its log, when one
/// of the started broker processes exits.
pub async fn wait_ready_started(
    reg: &Registry,
    brokers: &[BrokerInfo],
    topic: Option<&str>,
    deadline: Instant,
) -> Result<(), StackError> {
    let boot = bootstrap(brokers);
    loop {
        for b in brokers {
            if let Some(status) = reg.exited(b.pid) {
                return Err(StackError::part(
                    &format!("kafka broker {}", b.node_id),
                    format!("the JVM exited with {status}"),
                    &b.log,
                ));
            }
        }
        let last = match probe(&boot, brokers.len(), topic).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            // Blame the first broker missing from the metadata; if none is missing (or
            // no metadata came back at all), broker 1 is where to start reading.
            let missing = brokers
                .iter()
                .find(|b| !last.seen.is_empty() && !last.seen.contains(&(b.node_id as i32)));
            let b = missing.unwrap_or(&brokers[0]);
            let what = format!("kafka broker {}", b.node_id);
            return Err(StackError::part(
                &what,
                format!("not ready in time: {}", last.why),
                &b.log,
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One offset fetch for `group` over every partition of `topic`: answered only once the
/// group's coordinator (a `__consumer_offsets` partition leader, the topic created by the
/// first such request) is elected and loaded.
async fn probe_coordinator(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: u32,
) -> Result<(), String> {
    let mut cfg = client_config(bootstrap);
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    let topic = topic.to_string();
    let res = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let consumer: BaseConsumer = cfg
            .create()
            .map_err(|e| format!("cannot create a Kafka client: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p as i32);
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(3))
            .map_err(|e| format!("offset fetch failed: {e}"))?;
        for e in committed.elements() {
            e.error()
                .map_err(|err| format!("offset fetch of partition {}: {err}", e.partition()))?;
        }
        Ok(())
    })
    .await;
    res.map_err(|e| format!("offset fetch task failed: {e}"))?
}

/// Wait until the group coordinator of every one of `groups` answers (see
/// [`probe_coordinator`]); fails at once, naming the node and its log, when a broker
/// process exits. Servers started afterwards find their coordinators loaded.
pub async fn wait_coordinators_started(
    reg: &Registry,
    brokers: &[BrokerInfo],
    topic: &str,
    partitions: u32,
    groups: &[String],
    deadline: Instant,
) -> Result<(), StackError> {
    let boot = bootstrap(brokers);
    for group in groups {
        loop {
            for b in brokers {
                if let Some(status) = reg.exited(b.pid) {
                    return Err(StackError::part(
                        &format!("kafka broker {}", b.node_id),
                        format!("the JVM exited with {status}"),
                        &b.log,
                    ));
                }
            }
            let last = match probe_coordinator(&boot, group, topic, partitions).await {
                Ok(()) => break,
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                return Err(StackError::part(
                    &format!("kafka group coordinator of {group}"),
                    format!("no answer from {boot} in time: {last}"),
                    &brokers[0].log,
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    Ok(())
}

fn admin(bootstrap: &str) -> Result<AdminClient<DefaultClientContext>, StackError> {
    client_config(bootstrap)
        .create()
        .map_err(|e| StackError::Kafka {
            bootstrap: bootstrap.to_string(),
            what: "cannot create an admin client".into(),
            detail: e.to_string(),
        })
}

/// Create `topic` with `partitions` partitions, replication factor `replication`, and
/// the given topic configs. An existing topic is an error (its settings may differ).
pub async fn create_topic(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    replication: u16,
    configs: &[(&str, &str)],
) -> Result<(), StackError> {
    let err = |what: String, detail: String| StackError::Kafka {
        bootstrap: bootstrap.to_string(),
        what,
        detail,
    };
    let parts = i32::try_from(partitions).map_err(|_| {
        err(
            format!("create topic {topic}"),
            "too many partitions".into(),
        )
    })?;
    let mut new = NewTopic::new(
        topic,
        parts,
        TopicReplication::Fixed(i32::from(replication)),
    );
    for (k, v) in configs {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin(bootstrap)?
        .create_topics([&new], &opts)
        .await
        .map_err(|e| err(format!("create topic {topic}"), e.to_string()))?;
    for r in results {
        if let Err((name, code)) = r {
            return Err(err(
                format!("create topic {name}"),
                format!("{code:?} ({code})"),
            ));
        }
    }
    Ok(())
}

/// Delete `topic`. Returns once the controller accepted the deletion; the brokers drop
/// its partitions shortly after (creating the name again fails until they have, which
/// is why [`super::Stack::reshape`] retries the creation).
pub async fn delete_topic(bootstrap: &str, topic: &str) -> Result<(), StackError> {
    let err = |detail: String| StackError::Kafka {
        bootstrap: bootstrap.to_string(),
        what: format!("delete topic {topic}"),
        detail,
    };
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin(bootstrap)?
        .delete_topics(&[topic], &opts)
        .await
        .map_err(|e| err(e.to_string()))?;
    for r in results {
        if let Err((_, code)) = r {
            if code != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
                return Err(err(format!("{code:?} ({code})")));
            }
        }
    }
    Ok(())
}

/// The node ids of the brokers the cluster's metadata lists.
pub async fn broker_ids(bootstrap: &str) -> Result<Vec<i32>, StackError> {
    let cfg = client_config(bootstrap);
    let ids = tokio::task::spawn_blocking(move || -> Result<Vec<i32>, String> {
        let consumer: BaseConsumer = cfg.create().map_err(|e| e.to_string())?;
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let mut ids: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
        ids.sort_unstable();
        Ok(ids)
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    ids.map_err(|detail| StackError::Kafka {
        bootstrap: bootstrap.to_string(),
        what: "read the broker list".into(),
        detail,
    })
}

/// One metadata round trip for `topic` (on a blocking thread), read by `read`; an
/// error names what was missing.
async fn read_topic<T: Send + 'static>(
    bootstrap: &str,
    topic: &str,
    read: impl FnOnce(&rdkafka::metadata::MetadataTopic) -> T + Send + 'static,
) -> Result<T, String> {
    let cfg = client_config(bootstrap);
    let name = topic.to_string();
    tokio::task::spawn_blocking(move || -> Result<T, String> {
        let consumer: BaseConsumer = cfg.create().map_err(|e| e.to_string())?;
        let md = consumer
            .fetch_metadata(Some(&name), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| format!("topic {name} is not in the metadata"))?;
        if let Some(e) = t.error() {
            return Err(format!("{e:?}"));
        }
        Ok(read(t))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The node id leading each partition of `topic` (index = partition; -1: none right
/// now), as the cluster's metadata says.
pub async fn partition_leaders(bootstrap: &str, topic: &str) -> Result<Vec<i32>, StackError> {
    let leaders = read_topic(bootstrap, topic, |t| {
        let mut out = vec![-1; t.partitions().len()];
        for p in t.partitions() {
            if let Some(slot) = usize::try_from(p.id()).ok().and_then(|i| out.get_mut(i)) {
                *slot = p.leader();
            }
        }
        out
    })
    .await;
    leaders.map_err(|detail| StackError::Kafka {
        bootstrap: bootstrap.to_string(),
        what: format!("read the partition leaders of {topic}"),
        detail,
    })
}

/// Partitions, replication factor and configs of `topic`, read from the brokers.
pub async fn topic_config(bootstrap: &str, topic: &str) -> Result<TopicDescription, StackError> {
    let err = |detail: String| StackError::Kafka {
        bootstrap: bootstrap.to_string(),
        what: format!("describe topic {topic}"),
        detail,
    };
    let (partitions, rf) = read_topic(bootstrap, topic, |t| {
        let rf = t
            .partitions()
            .iter()
            .map(|p| p.replicas().len())
            .min()
            .unwrap_or(0);
        (t.partitions().len() as u32, rf as u16)
    })
    .await
    .map_err(err)?;
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin(bootstrap)?
        .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut configs = BTreeMap::new();
    for r in results {
        let resource = r.map_err(|code| err(format!("DescribeConfigs: {code:?}")))?;
        for entry in resource.entries {
            if let Some(v) = entry.value {
                configs.insert(entry.name, v);
            }
        }
    }
    let min_isr = configs
        .get("min.insync.replicas")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err("DescribeConfigs returned no min.insync.replicas".into()))?;
    Ok(TopicDescription {
        partitions,
        replication_factor: rf,
        min_insync_replicas: min_isr,
        configs,
    })
}
