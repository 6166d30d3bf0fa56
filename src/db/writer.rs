//! The batching database writer.
//!
//! Producers of rows (the Kafka delivery callbacks under `--persist producer`, the persist
//! consumer under `--persist consumer`) send [`WriteRequest`]s into one bounded queue. A
//! few writer tasks, each with its own connection, take a request, top the batch up with
//! whatever else is already queued (up to `batch` rows), write it in one statement and one
//! transaction, then answer every request's `done`. A failed batch is retried with backoff
//! until it lands or shutdown gives up, reconnecting when PostgreSQL went away: because
//! `(cluster, topic, partition, offset)` is unique, a retry never duplicates a row.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chat::ChatMessage;
use crate::server::metrics::Metrics;

/// One chat message with the Kafka position it was stored at.
#[derive(Debug, Clone)]
pub struct Row {
    pub message: ChatMessage,
    pub sent_at: SystemTime,
    /// The Kafka cluster id: offsets restart at 0 in a new cluster.
    pub cluster: Arc<str>,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// Rows to write, and who to tell once they are committed.
pub struct WriteRequest {
    pub rows: Vec<Row>,
    pub done: Option<oneshot::Sender<()>>,
}

/// The sending side of the bounded row queue. When it is full, `send` waits: the
/// publishers slow down rather than lose or buffer rows without bound.
#[derive(Clone)]
pub struct DbQueue {
    tx: mpsc::Sender<WriteRequest>,
    metrics: Arc<Metrics>,
}

impl DbQueue {
    /// Queues a request; fails only when the writers are gone.
    pub async fn send(&self, request: WriteRequest) -> Result<(), WriteRequest> {
        self.metrics.db_queue_depth.fetch_add(1, Relaxed);
        self.tx.send(request).await.map_err(|e| {
            self.metrics.db_queue_depth.fetch_sub(1, Relaxed);
            e.0
        })
    }
}

/// Handle to the running writers: the queue's sending side and the tasks.
pub struct Writers {
    pub queue: DbQueue,
    tasks: TaskTracker,
}

impl Writers {
    /// Closes the queue and waits until every queued row is written (or shutdown gave up).
    pub async fn drain(self) {
        drop(self.queue);
        self.tasks.close();
        self.tasks.wait().await;
    }
}

const INSERT: &str = "INSERT INTO chat_messages \
    (room_id, sender, message, type, sent_at, kafka_topic, kafka_partition, kafka_offset, kafka_cluster) \
    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], \
    $6::text[], $7::int4[], $8::int8[], $9::text[]) \
    ON CONFLICT (kafka_cluster, kafka_topic, kafka_partition, kafka_offset) DO NOTHING";

/// Connects to PostgreSQL, driving the connection on a background task.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("postgres connection ended: {e}");
        }
    });
    Ok(client)
}

/// Opens `writers` connections (applying the schema once) and starts the writer tasks.
///
/// `abort` stops retries of a failing batch; a healthy writer drains the queue regardless
/// and stops when every sender is gone.
pub async fn spawn_writers(
    url: &str,
    writers: usize,
    queue_depth: usize,
    batch: usize,
    metrics: Arc<Metrics>,
    abort: CancellationToken,
) -> Result<Writers, tokio_postgres::Error> {
    let (tx, rx) = mpsc::channel::<WriteRequest>(queue_depth.max(1));
    let rx = Arc::new(Mutex::new(rx));
    let tasks = TaskTracker::new();
    let mut clients = Vec::new();
    for i in 0..writers.max(1) {
        let client = connect(url).await?;
        if i == 0 {
            client.batch_execute(super::SCHEMA).await?;
        }
        clients.push(client);
    }
    for client in clients {
        let url = url.to_string();
        let rx = rx.clone();
        let metrics = metrics.clone();
        let abort = abort.clone();
        tasks.spawn(async move { write_loop(client, url, rx, batch.max(1), metrics, abort).await });
    }
    Ok(Writers {
        queue: DbQueue { tx, metrics },
        tasks,
    })
}

/// A writer's connection and prepared insert, re-opened when PostgreSQL goes away.
struct Conn {
    url: String,
    client: Option<(Client, tokio_postgres::Statement)>,
    metrics: Arc<Metrics>,
}

impl Conn {
    async fn ready(
        &mut self,
    ) -> Result<&(Client, tokio_postgres::Statement), tokio_postgres::Error> {
        if self.client.as_ref().is_some_and(|(c, _)| c.is_closed()) {
            tracing::warn!("the database connection was lost; reconnecting");
            self.metrics.db_reconnects.fetch_add(1, Relaxed);
            self.client = None;
        }
        if self.client.is_none() {
            let client = connect(&self.url).await?;
            let statement = client.prepare(INSERT).await?;
            self.client = Some((client, statement));
        }
        Ok(self.client.as_ref().expect("connected just above"))
    }
}

async fn write_loop(
    client: Client,
    url: String,
    rx: Arc<Mutex<mpsc::Receiver<WriteRequest>>>,
    batch: usize,
    metrics: Arc<Metrics>,
    abort: CancellationToken,
) {
    let statement = client.prepare(INSERT).await.ok();
    let mut conn = Conn {
        url,
        client: statement.map(|s| (client, s)),
        metrics: metrics.clone(),
    };
    loop {
        let mut requests = Vec::new();
        let mut rows = 0usize;
        {
            let mut rx = tokio::select! {
                _ = abort.cancelled() => return,
                rx = rx.lock() => rx,
            };
            let first = tokio::select! {
                _ = abort.cancelled() => return,
                first = rx.recv() => first,
            };
            let Some(first) = first else { return };
            rows += first.rows.len();
            requests.push(first);
            while rows < batch {
                match rx.try_recv() {
                    Ok(more) => {
                        rows += more.rows.len();
                        requests.push(more);
                    }
                    Err(_) => break,
                }
            }
        }
        metrics
            .db_queue_depth
            .fetch_sub(requests.len() as i64, Relaxed);
        let columns = Columns::from(&requests);
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            // A paused or unreachable database must not hold shutdown forever.
            let outcome = tokio::select! {
                _ = abort.cancelled() => {
                    tracing::error!("shutdown while the database is failing; {rows} rows not written");
                    return;
                }
                outcome = async {
                    let (client, statement) = conn.ready().await?;
                    write_batch(client, statement, &columns).await
                } => outcome,
            };
            match outcome {
                Ok(()) => {
                    metrics.db_rows.fetch_add(rows as u64, Relaxed);
                    metrics.db_batches.fetch_add(1, Relaxed);
                    metrics.db_batch_size.observe(rows as f64);
                    metrics.db_batch_latency.observe_duration(started.elapsed());
                    break;
                }
                Err(e) => {
                    metrics.db_errors.fetch_add(1, Relaxed);
                    attempt += 1;
                    if attempt == 1 || attempt.is_power_of_two() {
                        tracing::warn!("database batch of {rows} rows failed (attempt {attempt}), retrying: {e}");
                    }
                    let backoff = Duration::from_millis(50 * u64::from(attempt.min(40)));
                    tokio::select! {
                        _ = abort.cancelled() => {
                            tracing::error!("shutdown while the database is failing; {rows} rows not written");
                            return;
                        }
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
        }
        for request in requests {
            if let Some(done) = request.done {
                let _ = done.send(());
            }
        }
    }
}

/// A batch laid out column by column for `UNNEST`, borrowing the requests' rows.
struct Columns<'a> {
    room: Vec<&'a str>,
    sender: Vec<&'a str>,
    text: Vec<&'a str>,
    kind: Vec<&'static str>,
    sent_at: Vec<SystemTime>,
    topic: Vec<&'a str>,
    cluster: Vec<&'a str>,
    partition: Vec<i32>,
    offset: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn from(requests: &'a [WriteRequest]) -> Self {
        let n: usize = requests.iter().map(|r| r.rows.len()).sum();
        let mut c = Columns {
            room: Vec::with_capacity(n),
            sender: Vec::with_capacity(n),
            text: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            sent_at: Vec::with_capacity(n),
            topic: Vec::with_capacity(n),
            cluster: Vec::with_capacity(n),
            partition: Vec::with_capacity(n),
            offset: Vec::with_capacity(n),
        };
        for row in requests.iter().flat_map(|r| &r.rows) {
            c.room.push(&row.message.room_id);
            c.sender.push(&row.message.sender);
            c.text.push(&row.message.message);
            c.kind.push(row.message.kind.as_str());
            c.sent_at.push(row.sent_at);
            c.topic.push(&row.topic);
            c.cluster.push(&row.cluster);
            c.partition.push(row.partition);
            c.offset.push(row.offset);
        }
        c
    }
}

async fn write_batch(
    client: &Client,
    statement: &tokio_postgres::Statement,
    c: &Columns<'_>,
) -> Result<(), tokio_postgres::Error> {
    if c.room.is_empty() {
        return Ok(());
    }
    client
        .execute(
            statement,
            &[
                &c.room,
                &c.sender,
                &c.text,
                &c.kind,
                &c.sent_at,
                &c.topic,
                &c.partition,
                &c.offset,
                &c.cluster,
            ],
        )
        .await?;
    Ok(())
}
