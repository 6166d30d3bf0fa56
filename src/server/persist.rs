//! `--persist consumer`: a consumer group shared by all server instances reads the chat
//! topic and writes it to PostgreSQL, committing Kafka offsets only after the rows of a
//! batch are committed in the database.
//!
//! A crash between the two commits re-reads the batch; the unique Kafka position makes the
//! second write a no-op, so history has neither gaps nor duplicates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::chat::ChatMessage;
use crate::db::{DbQueue, Row, WriteRequest};
use crate::server::fanout::{next_record, partitions_of, LagContext};
use crate::server::kafka_start::KafkaStart;
use crate::server::metrics::Metrics;
use crate::server::ServerError;

/// Longest a partial batch waits for more records.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// The persist consumer and the cluster id its rows are keyed by.
pub struct PersistConsumer {
    consumer: StreamConsumer<LagContext>,
    cluster: Arc<str>,
}

/// Creates the persist consumer and subscribes it; returns once the group's coordinator
/// answers (an offset fetch for every partition), retrying while Kafka is still starting.
/// History rows are keyed by `cluster`, the id the producer got from the brokers.
pub async fn start(
    kafka: &KafkaStart,
    bootstrap: &str,
    topic: &str,
    group: &str,
    instance: &str,
    cluster: Arc<str>,
    metrics: Arc<Metrics>,
) -> Result<PersistConsumer, ServerError> {
    let context = LagContext {
        group: group.to_string(),
        topic: topic.to_string(),
        metrics,
    };
    let consumer: StreamConsumer<LagContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("client.id", format!("{group}-{instance}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("statistics.interval.ms", "1000")
        // As the fan-out consumer's (see there): a waiting fetch is answered when a
        // record arrives.
        .set("fetch.wait.max.ms", "100")
        .create_with_context(context)
        .map_err(|e| kafka.failed("persist consumer: create", e))?;
    let step = format!("persist consumer: partitions of topic {topic}");
    let name = topic.to_string();
    let (consumer, partitions) = kafka
        .step(&step, consumer, move |c, timeout| {
            partitions_of(c, &name, timeout)
        })
        .await?;
    let mut all = TopicPartitionList::new();
    for partition in partitions {
        all.add_partition(topic, partition);
    }
    let step = format!("persist consumer: committed offsets of group {group}");
    let (consumer, ()) = kafka
        .step(&step, consumer, move |c, timeout| {
            let committed = c.committed_offsets(all.clone(), timeout)?;
            for e in committed.elements() {
                e.error()?;
            }
            Ok(())
        })
        .await?;
    consumer
        .subscribe(&[topic])
        .map_err(|e| kafka.failed("persist consumer: subscribe", e))?;
    Ok(PersistConsumer { consumer, cluster })
}

/// Batches records into the database until `shutdown`; the batch in hand is finished
/// and committed before returning.
pub async fn run(
    PersistConsumer { consumer, cluster }: PersistConsumer,
    db: DbQueue,
    batch: usize,
    shutdown: CancellationToken,
) {
    // Offsets of the last batch whose rows are committed, committed again synchronously
    // at the end so a clean shutdown leaves nothing to re-read.
    let mut written = TopicPartitionList::new();
    while let Some(first) = next_record(&consumer, &shutdown, "persist consumer").await {
        let mut rows = Vec::with_capacity(batch);
        let mut next: BTreeMap<(String, i32), i64> = BTreeMap::new();
        take(&first, &cluster, &mut rows, &mut next);
        drop(first);
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while rows.len() < batch {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(record)) => take(&record, &cluster, &mut rows, &mut next),
                Ok(Err(e)) => {
                    tracing::warn!("persist consumer: {e}");
                    break;
                }
                Err(_) => break,
            }
        }
        if !rows.is_empty() {
            let (done, written) = oneshot::channel();
            if db
                .send(WriteRequest {
                    rows,
                    done: Some(done),
                })
                .await
                .is_err()
                || written.await.is_err()
            {
                tracing::error!(
                    "persist consumer: the database writer stopped; offsets not committed"
                );
                break;
            }
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!("persist consumer: offset commit failed ({e}); the batch will be re-read and skipped as already written");
        }
        written = offsets;
    }
    if written.count() > 0 {
        if let Err(e) = consumer.commit(&written, CommitMode::Sync) {
            tracing::debug!("persist consumer final commit: {e}");
        }
    }
}

fn take(
    record: &BorrowedMessage<'_>,
    cluster: &Arc<str>,
    rows: &mut Vec<Row>,
    next: &mut BTreeMap<(String, i32), i64>,
) {
    next.insert(
        (record.topic().to_string(), record.partition()),
        record.offset() + 1,
    );
    let payload = record.payload().unwrap_or_default();
    let message = match serde_json::from_slice::<ChatMessage>(payload) {
        Ok(message) => message,
        Err(e) => {
            tracing::warn!(
                "persist consumer: record {}-{} is not a chat message ({e}); not written",
                record.partition(),
                record.offset()
            );
            return;
        }
    };
    let sent_at = record
        .timestamp()
        .to_millis()
        .and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms.max(0) as u64)))
        .unwrap_or_else(SystemTime::now);
    rows.push(Row {
        message,
        sent_at,
        cluster: cluster.clone(),
        topic: Arc::from(record.topic()),
        partition: record.partition(),
        offset: record.offset(),
    });
}
