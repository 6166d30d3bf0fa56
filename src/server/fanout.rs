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
        // How long the broker may hold a fetch that finds nothing new. A waiting fetch is
        // answered as soon as a record arrives, so this costs no latency (400 users, 400
        // msg/s, end-to-end p50: 0.91-1.24 ms at 10 ms, 0.99-1.29 at 100, 1.06-1.16 at
        // 500); it sets how often an idle consumer asks again. An idle 1-broker stack's
        // broker spent 611 CPU ticks in 30 s on the two servers' fetches at 10 ms (a fifth
        // of a core), 219 at 100 and 100 at 500. Not longer: librdkafka keeps one fetch
        // in flight per broker, so a partition that moves to a broker after a failover
        // waits for that broker's held fetch to return before it is read.
        .set("fetch.wait.max.ms", "100")
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

/// Records queued for one fan-out worker before the consumer waits for it.
pub const WORKER_QUEUE: usize = 1024;

/// Spreads deliveries over fan-out workers, one per core, so that a busy instance pushes
/// frames on every core. A room always goes to the same worker, through a FIFO queue, so
/// each room's messages reach its subscribers in the order Kafka gave them; rooms on
/// different workers are independent. With one worker the consumer delivers itself.
pub struct Dispatcher {
    rooms: Arc<Rooms>,
    workers: Vec<tokio::sync::mpsc::Sender<(String, Arc<Delivery>)>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Dispatcher {
    pub fn new(rooms: Arc<Rooms>, workers: usize) -> Dispatcher {
        let mut senders = Vec::new();
        let mut tasks = Vec::new();
        if workers > 1 {
            for _ in 0..workers {
                let (tx, mut rx) =
                    tokio::sync::mpsc::channel::<(String, Arc<Delivery>)>(WORKER_QUEUE);
                let rooms = rooms.clone();
                tasks.push(tokio::spawn(async move {
                    while let Some((room, delivery)) = rx.recv().await {
                        rooms.deliver(&room, delivery);
                    }
                }));
                senders.push(tx);
            }
        }
        Dispatcher {
            rooms,
            workers: senders,
            tasks,
        }
    }

    /// The worker that owns `room`.
    fn worker_of(&self, room: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        room.hash(&mut h);
        (h.finish() % self.workers.len() as u64) as usize
    }

    /// Hands `delivery` to the worker of `room`, waiting while that worker's queue is full.
    pub async fn dispatch(&self, room: String, delivery: Arc<Delivery>) {
        if self.workers.is_empty() {
            self.rooms.deliver(&room, delivery);
            return;
        }
        let worker = &self.workers[self.worker_of(&room)];
        // A worker ends only when its sender is dropped, in `finish`.
        let _ = worker.send((room, delivery)).await;
    }

    /// Lets the workers deliver what they were given, then stops them.
    pub async fn finish(self) {
        drop(self.workers);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Fan-out workers for this machine: one per core the process may use.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Reads records until `shutdown`, delivering each to local subscribers through
/// `workers` fan-out workers (see [`Dispatcher`]).
pub async fn run(
    consumer: StreamConsumer<LagContext>,
    rooms: Arc<Rooms>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    workers: usize,
) {
    let dispatcher = Dispatcher::new(rooms, workers);
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
        dispatcher.dispatch(room, Arc::new(delivery)).await;
    }
    dispatcher.finish().await;
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!("fan-out final commit: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::rooms::{Outbound, SessionHandle};
    use crate::stomp::{Decoder, Item, Version};

    /// Every room's messages reach a subscriber of many rooms in the order they were
    /// dispatched, with four workers sharing the rooms.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn workers_keep_each_room_s_order() {
        let metrics = Arc::new(Metrics::new("t"));
        let rooms = Arc::new(Rooms::new(metrics));
        let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
        let handle = SessionHandle {
            id: 1,
            outbound: tx,
            kill: CancellationToken::new(),
            killed_for: Arc::new(std::sync::OnceLock::new()),
        };
        const ROOMS: usize = 16;
        const EACH: usize = 500;
        for r in 0..ROOMS {
            rooms.subscribe(&format!("r{r}"), Arc::from("s"), Version::V1_2, &handle);
        }
        let dispatcher = Dispatcher::new(rooms.clone(), 4);
        let used: std::collections::HashSet<usize> = (0..ROOMS)
            .map(|r| dispatcher.worker_of(&format!("r{r}")))
            .collect();
        assert!(used.len() > 1, "the rooms are spread over several workers");
        for seq in 0..EACH {
            for r in 0..ROOMS {
                let delivery = Delivery {
                    destination: room_destination(&format!("r{r}")),
                    message_id: format!("{r}-{seq}"),
                    body: Bytes::from_static(b"x"),
                };
                dispatcher
                    .dispatch(format!("r{r}"), Arc::new(delivery))
                    .await;
            }
        }
        dispatcher.finish().await;
        let mut next = [0usize; ROOMS];
        let mut decoder = Decoder::new(1 << 20);
        let mut received = 0;
        while let Ok(item) = rx.try_recv() {
            let Outbound::Encoded(frame) = item else {
                panic!("expected an encoded MESSAGE")
            };
            let mut buf = bytes::BytesMut::from(frame.as_bytes());
            let Ok(Some(Item::Frame(frame))) = decoder.decode(&mut buf) else {
                panic!("not a frame")
            };
            let (room, seq) = frame.get("message-id").unwrap().split_once('-').unwrap();
            let (room, seq): (usize, usize) = (room.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(seq, next[room], "room {room} out of order");
            next[room] += 1;
            received += 1;
        }
        assert_eq!(received, ROOMS * EACH, "every delivery arrived once");
    }
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
