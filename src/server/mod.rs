//! The reference chat server: STOMP over WebSocket in front, Kafka as the bus between
//! instances, PostgreSQL for history.
//!
//! Data flow: a session decodes a `SEND`, validates the chat JSON and hands it to the
//! [`publish::Publisher`] (Kafka, keyed by room). Under `--persist producer` the Kafka
//! acknowledgement queues the row for the [`crate::db`] writers; under `--persist
//! consumer` the [`persist`] consumer group writes it. Independently, this instance's
//! [`fanout`] consumer reads every record and [`rooms::Rooms`] queues a `MESSAGE` to each
//! local subscriber of its room.
//!
//! At start, every first contact with Kafka goes through [`kafka_start`], which retries
//! the "not ready yet" answers of a cluster that is still starting up to one deadline.
//!
//! [`run`] holds the whole lifecycle so tests start servers in-process on port 0.

pub mod config;
pub mod fanout;
pub mod kafka_start;
pub mod metrics;
pub mod persist;
pub mod publish;
pub mod rooms;
pub mod session;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, Limits, Persist, DEFAULT_PERSIST_GROUP, FANOUT_GROUP_PREFIX};
use kafka_start::KafkaStart;
use metrics::Metrics;
use publish::Publisher;
use rooms::Rooms;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot connect to PostgreSQL at {url}: {source}; is it running? (`stompede stack up` starts one)")]
    Database {
        url: String,
        source: tokio_postgres::Error,
    },
    #[error("cannot set up Kafka ({what}) at {bootstrap}: {source}; is the broker running and does topic `{topic}` exist?")]
    Kafka {
        what: String,
        bootstrap: String,
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    #[error(
        "Kafka at {bootstrap} was not ready within {timeout:?}: {step} still failed after \
         {attempts} attempts (last error: {last}); check that a broker runs at {bootstrap} \
         (`stompede stack status`) and that topic `{topic}` exists, or allow longer with \
         --kafka-start-timeout"
    )]
    KafkaNotReady {
        step: String,
        bootstrap: String,
        topic: String,
        timeout: Duration,
        attempts: u32,
        last: String,
    },
    #[error("stopped by a shutdown signal while waiting for Kafka to be ready")]
    StoppedDuringStart,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// State every session shares.
pub struct Shared {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub rooms: Arc<Rooms>,
    pub publisher: Publisher,
    /// Background completions of SENDs (Kafka ack, DB write, RECEIPT).
    pub tasks: TaskTracker,
    next_session: AtomicU64,
}

impl Shared {
    pub fn next_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Relaxed) + 1
    }
}

/// A started server's addresses.
#[derive(Debug, Clone)]
pub struct Bound {
    pub ws: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// The live counters (tests read them directly).
    pub metrics: Arc<Metrics>,
}

/// Runs a server on `listener` until `shutdown` fires, then stops accepting, finishes
/// in-flight sends, flushes the producer, drains the database queue and commits offsets.
///
/// `ready` is called once the server accepts and fans out (after the fan-out consumer is
/// positioned), with its bound addresses.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
    ready: impl FnOnce(Bound) + Send,
) -> Result<Arc<Metrics>, ServerError> {
    let metrics = Arc::new(Metrics::new(&config.instance_id).with_info(&[
        ("persist", config.persist.as_str()),
        ("topic", &config.topic),
        ("impl", "stompede"),
    ]));
    // Background work that must finish before the process may exit.
    let background = TaskTracker::new();
    let metrics_addr = match config.metrics_listen {
        Some(addr) => {
            let metrics_listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::MetricsListen { addr, source })?;
            let bound = metrics_listener.local_addr().ok();
            background.spawn(metrics::serve(
                metrics_listener,
                metrics.clone(),
                shutdown.clone(),
            ));
            bound
        }
        None => None,
    };
    let db_abort = CancellationToken::new();
    let writers = crate::db::spawn_writers(
        &config.db_url,
        config.limits.db_writers,
        config.limits.db_queue,
        config.limits.db_batch,
        metrics.clone(),
        db_abort.clone(),
    )
    .await
    .map_err(|source| ServerError::Database {
        url: config.db_url.clone(),
        source,
    })?;
    let producer_db = (config.persist == Persist::Producer).then(|| writers.queue.clone());
    // One deadline for every Kafka step of the start: a cluster that is still electing
    // leaders or loading group coordinators gets retried, not reported as a failure.
    let kafka = KafkaStart::new(
        &config.kafka_bootstrap,
        &config.topic,
        config.kafka_start_timeout,
        shutdown.clone(),
    )
    .counting(metrics.clone());
    let publisher = Publisher::new(
        &kafka,
        &config.kafka_bootstrap,
        &config.topic,
        producer_db,
        metrics.clone(),
    )
    .await?;
    let rooms = Arc::new(Rooms::new(metrics.clone()));
    let fanout_consumer = fanout::start(
        &kafka,
        &config.kafka_bootstrap,
        &config.topic,
        &config.fanout_group(),
        metrics.clone(),
    )
    .await?;
    let persist_consumer = if config.persist == Persist::Consumer {
        let consumer = persist::start(
            &kafka,
            &config.kafka_bootstrap,
            &config.topic,
            &config.persist_group,
            &config.instance_id,
            publisher.cluster(),
            metrics.clone(),
        )
        .await?;
        Some(consumer)
    } else {
        None
    };
    let consumers_stop = CancellationToken::new();
    let fanout_task = tokio::spawn(fanout::run(
        fanout_consumer,
        rooms.clone(),
        metrics.clone(),
        consumers_stop.clone(),
        fanout::default_workers(),
    ));
    let persist_task = persist_consumer.map(|consumer| {
        tokio::spawn(persist::run(
            consumer,
            writers.queue.clone(),
            config.limits.db_batch,
            consumers_stop.clone(),
        ))
    });

    let shared = Arc::new(Shared {
        config: config.clone(),
        metrics: metrics.clone(),
        rooms,
        publisher,
        tasks: TaskTracker::new(),
        next_session: AtomicU64::new(0),
    });
    let ws_addr = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    metrics.ready.store(true, Relaxed);
    tracing::info!(
        "server {} ready: ws://{ws_addr}{} (persist {}, topic {})",
        config.instance_id,
        session::WS_PATH,
        config.persist.as_str(),
        config.topic
    );
    ready(Bound {
        ws: ws_addr,
        metrics_addr,
        metrics: metrics.clone(),
    });

    let sessions = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if sessions.len() >= config.limits.max_connections {
            metrics.sessions_rejected.fetch_add(1, Relaxed);
            continue;
        }
        let _ = stream.set_nodelay(true);
        sessions.spawn(session::serve(stream, shared.clone(), shutdown.clone()));
    }

    // Shutdown: no new sessions; existing ones got an ERROR and close.
    metrics.ready.store(false, Relaxed);
    drop(listener);
    sessions.close();
    if tokio::time::timeout(Duration::from_secs(10), sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sessions did not close within 10 s");
    }
    // Every accepted SEND finishes: Kafka ack, then (producer persist) its row.
    shared.publisher.flush(Duration::from_secs(15));
    shared.tasks.close();
    if tokio::time::timeout(Duration::from_secs(30), shared.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some sends were still waiting for Kafka or the database after 30 s");
    }
    consumers_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), fanout_task).await;
    if let Some(task) = persist_task {
        // The persist consumer finishes its batch in hand; if the database is down, the
        // writers give up after this and the batch is re-read by the next consumer.
        if tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .is_err()
        {
            tracing::error!("the persist consumer's last batch did not reach the database within 30 s; its offsets stay uncommitted");
            db_abort.cancel();
        }
    }
    drop(shared);
    let drain = writers.drain();
    tokio::pin!(drain);
    if tokio::time::timeout(Duration::from_secs(30), &mut drain)
        .await
        .is_err()
    {
        tracing::error!("the database queue did not drain within 30 s; giving up on retries");
        db_abort.cancel();
        drain.await;
    }
    background.close();
    background.wait().await;
    tracing::info!("server {} stopped", config.instance_id);
    Ok(metrics)
}
