//! Server metrics in the Prometheus text format, and the tiny HTTP endpoint that serves
//! them (`/metrics`) next to the readiness probe (`/healthz`).
//!
//! Every figure is an atomic updated on the hot path; histograms have fixed buckets so an
//! observation is one atomic add. Consumer lag arrives from librdkafka's statistics
//! callback, once a second per consumer, and is kept per (group, partition).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A fixed-bucket histogram (seconds or counts), Prometheus style.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

const LATENCY_BOUNDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SIZE_BOUNDS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one value (seconds for latency histograms, a count for size histograms).
    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_micros.fetch_add((value * 1e6) as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let total = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {total}");
    }
}

/// Everything one server instance counts.
pub struct Metrics {
    pub instance_id: String,
    pub ready: AtomicBool,
    pub sessions_open: AtomicI64,
    pub sessions_total: AtomicU64,
    pub sessions_rejected: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub errors_sent: AtomicU64,
    pub heartbeat_timeouts: AtomicU64,
    pub published: AtomicU64,
    pub publish_failures: AtomicU64,
    /// Kafka answers of "not ready yet" retried while the server started.
    pub kafka_start_retries: AtomicU64,
    pub produce_latency: Histogram,
    pub fanout_messages: AtomicU64,
    pub fanout_deliveries: AtomicU64,
    pub fanout_drops: AtomicU64,
    pub slow_consumer_disconnects: AtomicU64,
    pub db_rows: AtomicU64,
    pub db_batches: AtomicU64,
    pub db_errors: AtomicU64,
    pub db_reconnects: AtomicU64,
    pub db_batch_size: Histogram,
    pub db_batch_latency: Histogram,
    pub db_queue_depth: AtomicI64,
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// Labels of `stompede_server_info`: how this instance was started.
    info: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new(instance_id: &str) -> Self {
        Metrics {
            instance_id: instance_id.to_string(),
            ready: AtomicBool::new(false),
            sessions_open: AtomicI64::new(0),
            sessions_total: AtomicU64::new(0),
            sessions_rejected: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            errors_sent: AtomicU64::new(0),
            heartbeat_timeouts: AtomicU64::new(0),
            published: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            kafka_start_retries: AtomicU64::new(0),
            produce_latency: Histogram::new(LATENCY_BOUNDS),
            fanout_messages: AtomicU64::new(0),
            fanout_deliveries: AtomicU64::new(0),
            fanout_drops: AtomicU64::new(0),
            slow_consumer_disconnects: AtomicU64::new(0),
            db_rows: AtomicU64::new(0),
            db_batches: AtomicU64::new(0),
            db_errors: AtomicU64::new(0),
            db_reconnects: AtomicU64::new(0),
            info: Vec::new(),
            db_batch_size: Histogram::new(SIZE_BOUNDS),
            db_batch_latency: Histogram::new(LATENCY_BOUNDS),
            db_queue_depth: AtomicI64::new(0),
            lag: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds labels to the `stompede_server_info` gauge (persistence strategy, topic):
    /// what a reader of `/metrics` needs to know how the instance runs.
    pub fn with_info(mut self, labels: &[(&'static str, &str)]) -> Self {
        self.info = labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
        self
    }

    /// Stores the consumer lag librdkafka reported for a partition of `group`.
    pub fn set_lag(&self, group: &str, partition: i32, lag: i64) {
        if let Ok(mut map) = self.lag.lock() {
            map.insert((group.to_string(), partition), lag);
        }
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let inst = &self.instance_id;
        let counters: [(&str, &str, u64); 18] = [
            (
                "stompede_sessions_total",
                "WebSocket sessions accepted",
                self.sessions_total.load(Relaxed),
            ),
            (
                "stompede_sessions_rejected_total",
                "connections refused at the connection limit",
                self.sessions_rejected.load(Relaxed),
            ),
            (
                "stompede_frames_in_total",
                "STOMP frames received",
                self.frames_in.load(Relaxed),
            ),
            (
                "stompede_frames_out_total",
                "STOMP frames sent",
                self.frames_out.load(Relaxed),
            ),
            (
                "stompede_errors_sent_total",
                "STOMP ERROR frames sent",
                self.errors_sent.load(Relaxed),
            ),
            (
                "stompede_heartbeat_timeouts_total",
                "sessions dropped for missing heart-beats",
                self.heartbeat_timeouts.load(Relaxed),
            ),
            (
                "stompede_published_total",
                "chat messages acknowledged by Kafka",
                self.published.load(Relaxed),
            ),
            (
                "stompede_publish_failures_total",
                "chat messages Kafka did not take",
                self.publish_failures.load(Relaxed),
            ),
            (
                "stompede_kafka_start_retries_total",
                "Kafka steps retried at start because the cluster was not ready yet",
                self.kafka_start_retries.load(Relaxed),
            ),
            (
                "stompede_fanout_messages_total",
                "records read by the fan-out consumer",
                self.fanout_messages.load(Relaxed),
            ),
            (
                "stompede_fanout_deliveries_total",
                "MESSAGE frames queued to local subscribers",
                self.fanout_deliveries.load(Relaxed),
            ),
            (
                "stompede_fanout_drops_total",
                "deliveries dropped because a subscriber queue was full",
                self.fanout_drops.load(Relaxed),
            ),
            (
                "stompede_slow_consumer_disconnects_total",
                "sessions disconnected for not keeping up",
                self.slow_consumer_disconnects.load(Relaxed),
            ),
            (
                "stompede_db_rows_total",
                "chat rows written to PostgreSQL",
                self.db_rows.load(Relaxed),
            ),
            (
                "stompede_db_batches_total",
                "database batches committed",
                self.db_batches.load(Relaxed),
            ),
            (
                "stompede_db_errors_total",
                "database batch attempts that failed (and were retried)",
                self.db_errors.load(Relaxed),
            ),
            (
                "stompede_db_reconnects_total",
                "database connections re-opened after being lost",
                self.db_reconnects.load(Relaxed),
            ),
            (
                "stompede_ready",
                "1 once the server accepts and fans out",
                self.ready.load(Relaxed) as u64,
            ),
        ];
        for (name, help, value) in counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{instance=\"{inst}\"}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP stompede_sessions_open open WebSocket sessions\n# TYPE stompede_sessions_open gauge\nstompede_sessions_open{{instance=\"{inst}\"}} {}",
            self.sessions_open.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP stompede_db_queue_depth rows waiting for the database writer\n# TYPE stompede_db_queue_depth gauge\nstompede_db_queue_depth{{instance=\"{inst}\"}} {}",
            self.db_queue_depth.load(Relaxed)
        );
        self.produce_latency.render(
            &mut out,
            "stompede_produce_latency_seconds",
            "time from SEND to Kafka acknowledgement",
        );
        self.db_batch_size.render(
            &mut out,
            "stompede_db_batch_rows",
            "rows per database batch",
        );
        self.db_batch_latency.render(
            &mut out,
            "stompede_db_batch_latency_seconds",
            "time to write and commit one batch",
        );
        let mut labels = format!("instance=\"{inst}\"");
        for (k, v) in &self.info {
            let v = v.replace('\\', "\\\\").replace('"', "\\\"");
            let _ = write!(labels, ",{k}=\"{v}\"");
        }
        let _ = writeln!(
            out,
            "# HELP stompede_server_info how this instance runs (labels); always 1\n# TYPE stompede_server_info gauge\nstompede_server_info{{{labels}}} 1"
        );
        let _ = writeln!(out, "# HELP stompede_consumer_lag messages behind the high watermark, per consumer group and partition (librdkafka statistics)\n# TYPE stompede_consumer_lag gauge");
        if let Ok(map) = self.lag.lock() {
            for ((group, partition), lag) in map.iter() {
                let _ = writeln!(out, "stompede_consumer_lag{{instance=\"{inst}\",group=\"{group}\",partition=\"{partition}\"}} {lag}");
            }
        }
        out
    }
}

/// Largest HTTP request head the metrics endpoint reads.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Serves `/metrics` and `/healthz` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    metrics: std::sync::Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                if tracker.len() >= 64 {
                    continue; // bounded: drop the connection rather than pile up handlers
                }
                let metrics = metrics.clone();
                tracker.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &metrics)).await;
                });
            }
        }
    }
    tracker.close();
    tracker.wait().await;
}

async fn answer(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || head.len() + n > MAX_REQUEST_HEAD {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
        ("GET", "/healthz") if metrics.ready.load(Relaxed) => {
            ("200 OK", "text/plain", "ok\n".to_string())
        }
        ("GET", "/healthz") => (
            "503 Service Unavailable",
            "text/plain",
            "starting\n".to_string(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}
