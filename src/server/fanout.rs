//! The fan-out consumer: every instance reads every chat record, through a consumer group
//! of its own, and pushes a STOMP `MESSAGE` to its local subscribers of the record's room.
//!
//! The consumer is assigned every partition explicitly, at the high watermark read when
//! it starts ("latest"), so it is positioned before the server reports ready and no group
//! rebalance can delay it. Offsets are committed to the instance's group once a second,
//! which is what the harness reads to measure this instance's lag.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::chat::ChatMessage;
use crate::server::kafka_start::KafkaStart;
use crate::server::metrics::Metrics;
use crate::server::rooms::{Delivery, Rooms};
use crate::server::ServerError;

/// Passes librdkafka's per-partition consumer lag to the metrics.
pub struct LagContext {
    pub group: String,
    pub topic: String,
    pub metrics: Arc<Metrics>,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(topic) = statistics.topics.get(&self.topic) {
            for (partition, stats) in &topic.partitions {
                if *partition >= 0 && stats.consumer_lag >= 0 {
                    self.metrics
                        .set_lag(&self.group, *partition, stats.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for LagContext {}

/// The STOMP destination subscribers of `room` listen on.
pub fn room_destination(room: &str) -> String {
    format!("/topic/room/{room}")
}

/// Creates the fan-out consumer and assigns it every partition at the current end. Each
/// Kafka step is retried while the cluster is still starting (see [`KafkaStart`]).
pub async fn start(
    kafka: &KafkaStart,
    bootstrap: &str,
    topic: &str,
    group: &str,
    metrics: Arc<Metrics>,
) -> Result<StreamConsumer<LagContext>, ServerError> {
    let context = LagContext {
        group: group.to_string(),
        topic: topic.to_string(),
        metrics,
    };
    let consumer: StreamConsumer<LagContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("auto.offset.reset", "latest")
        .set("statistics.interval.ms", "1000")
        .set("fetch.wait.max.ms", "10")
        // Failover: after a leader dies, retry the fetch and reconnect soon (librdkafka's
        // defaults back off to 500 ms and 10 s).
        .set("fetch.error.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "1000")
        .create_with_context(context)
        .map_err(|e| kafka.failed("fan-out consumer: create", e))?;
    let step = format!("fan-out consumer: partitions of topic {topic}");
    let name = topic.to_string();
    let (consumer, partitions) = kafka
        .step(&step, consumer, move |c, timeout| {
            partitions_of(c, &name, timeout)
        })
        .await?;
    let step = format!("fan-out consumer: end offsets of topic {topic}");
    let name = topic.to_string();
    let (consumer, assignment) = kafka
        .step(&step, consumer, move |c, timeout| {
            let mut assignment = TopicPartitionList::new();
            for &partition in &partitions {
                let (_, high) = c.fetch_watermarks(&name, partition, timeout)?;
                assignment.add_partition_offset(&name, partition, Offset::Offset(high))?;
            }
            Ok(assignment)
        })
        .await?;
    consumer
        .assign(&assignment)
        .map_err(|e| kafka.failed("fan-out consumer: assign", e))?;
    // Commit the starting positions at once, so the group's lag reads 0 rather than the
    // topic's whole history until the first record of each partition arrives. This is
    // the group's first contact with its coordinator, which a new cluster may still be
    // electing or loading.
    let step = format!("fan-out consumer: first offset commit of group {group}");
    let (consumer, ()) = kafka
        .step(&step, consumer, move |c, _| {
            c.commit(&assignment, CommitMode::Sync)
        })
        .await?;
    Ok(consumer)
}

/// The partition ids of `topic`; an unknown topic or one without partitions yet is the
/// retriable `UnknownTopicOrPartition`.
pub fn partitions_of<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    };
    if let Some(e) = t.error() {
        return Err(KafkaError::MetadataFetch(e.into()));
    }
    let partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    if partitions.is_empty() {
        return Err(KafkaError::MetadataFetch(
            RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    Ok(partitions)
}

/// The next record, or `None` once `shutdown` fires. Errors (a broker away, a
/// rebalance) are logged and retried after a short pause.
pub async fn next_record<'c>(
    consumer: &'c StreamConsumer<LagContext>,
    shutdown: &CancellationToken,
    what: &str,
) -> Option<BorrowedMessage<'c>> {
    loop {
        let record = tokio::select! {
            _ = shutdown.cancelled() => return None,
            record = consumer.recv() => record,
        };
        match record {
            Ok(record) => return Some(record),
            Err(e) => {
                tracing::warn!("{what}: {e}");
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
    }
}

/// The room a chat record is for: its key (the servers key every record by its room),
/// or the body's `roomId` for a record without one. `None` for a record that is neither.
pub fn room_of(key: Option<&[u8]>, payload: &[u8]) -> Option<String> {
    if let Some(room) = key.and_then(|k| std::str::from_utf8(k).ok()) {
        if !room.is_empty() {
            return Some(room.to_string());
        }
    }
    serde_json::from_slice::<ChatMessage>(payload)
        .ok()
        .map(|m| m.room_id)
}

/// Reads records until `shutdown`, delivering each to local subscribers.
pub async fn run(
    consumer: StreamConsumer<LagContext>,
    rooms: Arc<Rooms>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    while let Some(record) = next_record(&consumer, &shutdown, "fan-out consumer").await {
        metrics.fanout_messages.fetch_add(1, Relaxed);
        let payload = record.payload().unwrap_or_default();
        let Some(room) = room_of(record.key(), payload) else {
            tracing::warn!(
                "fan-out: record {}-{} is not a chat message; skipped",
                record.partition(),
                record.offset()
            );
            continue;
        };
        let delivery = Delivery {
            destination: room_destination(&room),
            message_id: format!("{}-{}", record.partition(), record.offset()),
            body: Bytes::copy_from_slice(payload),
        };
        rooms.deliver(&room, Arc::new(delivery));
    }
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!("fan-out final commit: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

    /// librdkafka's in-process mock broker answers the group's first offset commits the
    /// way a coordinator that is still loading does. Real brokers do so only now and then
    /// (tests/server_start.rs meets them for real); this pins the exact answers down.
    fn loading_coordinator() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
        let cluster = MockCluster::new(1).expect("a mock cluster");
        cluster
            .create_topic("chat", 3, 1)
            .expect("create the mock topic");
        cluster.request_errors(
            RDKafkaApiKey::OffsetCommit,
            &[
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
            ],
        );
        cluster
    }

    #[test]
    fn the_room_is_the_key_or_else_the_body_s() {
        let body = br#"{"roomId":"r-7","sender":"u","message":"m","type":"TALK"}"#;
        assert_eq!(room_of(Some(b"r-7"), body).as_deref(), Some("r-7"));
        assert_eq!(room_of(None, body).as_deref(), Some("r-7"));
        assert_eq!(room_of(Some(b""), body).as_deref(), Some("r-7"));
        assert_eq!(room_of(None, b"not json"), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_first_commit_is_retried_while_the_coordinator_loads() {
        let cluster = loading_coordinator();
        let boot = cluster.bootstrap_servers();
        let metrics = Arc::new(Metrics::new("t"));
        let kafka = KafkaStart::new(
            &boot,
            "chat",
            Duration::from_secs(30),
            CancellationToken::new(),
        )
        .counting(metrics.clone());
        let consumer = start(&kafka, &boot, "chat", "stompede-fanout-t", metrics.clone())
            .await
            .unwrap_or_else(|e| panic!("the fan-out consumer did not start: {e}"));
        assert_eq!(consumer.assignment().expect("assignment").count(), 3);
        assert!(metrics.kafka_start_retries.load(Relaxed) >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_time_to_retry_the_loading_coordinator_is_named() {
        let cluster = loading_coordinator();
        let boot = cluster.bootstrap_servers();
        let metrics = Arc::new(Metrics::new("t"));
        let kafka = KafkaStart::new(&boot, "chat", Duration::ZERO, CancellationToken::new());
        let err = match start(&kafka, &boot, "chat", "stompede-fanout-t", metrics).await {
            Err(e) => e,
            Ok(_) => panic!("the first commit succeeded although the coordinator was loading"),
        };
        let text = err.to_string();
        assert!(text.contains("first offset commit"), "{text}");
        assert!(text.contains("CoordinatorLoadInProgress"), "{text}");
        assert!(text.contains(&boot), "{text}");
    }
}
