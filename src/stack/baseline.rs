//! `stompede stack baseline`: each part of the running stack measured alone with its own
//! tool, beside the reference server's own code driving the same part as fast as it can.
//!
//! - Kafka produce: Kafka's `ProducerPerformance` (acks=all, 256-byte records, no rate
//!   limit) against the server's [`Publisher`] enqueueing chat messages of the same size
//!   and awaiting every acknowledgement.
//! - Kafka end-to-end latency: Kafka's `EndToEndLatency` (one record at a time, acks=all)
//!   against the server's producer and its fan-out consumer ([`fanout::start`]): one chat
//!   message at a time, timed from the hand-over to the producer until the consumer has it.
//!   Kafka's tool prints its percentiles in whole milliseconds (rounded down) and its mean
//!   exactly; the server's pair is timed to the microsecond.
//! - PostgreSQL: `pgbench` running a 500-row `INSERT … ON CONFLICT DO NOTHING` into the
//!   history table's schema (the rows made by the database itself) against the server's
//!   database writer ([`spawn_writers`], the same connections, batch and queue) fed as
//!   each persistence mode feeds it: 500-row batches, one per server instance at a time
//!   (`--persist consumer`), and single rows from many sends in flight (`--persist
//!   producer`).
//!
//! The throughput parts run in rounds (`--rounds`, default 3), the tool and the server's code
//! taking turns to go first, and each side's median is reported beside every round's
//! figure: on a small machine the client shares the cores with the broker or the database,
//! and one run of each can differ by half.
//!
//! Everything runs on scratch names (topics `stompede.baseline.<pid>.*`, database
//! `stompede_baseline_<pid>`), removed at the end whatever happened. The figures are
//! ceilings only on a stack with nothing else running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use futures_util::stream::{FuturesUnordered, StreamExt};
use rdkafka::Message;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::kafka::{current_classpath, java};
use super::process::{log_tail, open_log};
use super::{kafka_admin, postgres, StackInfo};
use crate::chat::{ChatMessage, MessageType};
use crate::db::{spawn_writers, DbQueue, Row, WriteRequest};
use crate::server::config::Limits;
use crate::server::fanout;
use crate::server::kafka_start::KafkaStart;
use crate::server::metrics::Metrics;
use crate::server::publish::Publisher;

/// Bytes of every record (Kafka's tools) and of every chat message's JSON (the server).
pub const RECORD_BYTES: usize = 256;
/// Rows of one batch: the server's `db_batch` and pgbench's insert.
pub const BATCH_ROWS: usize = 500;
/// Most single-row writes in flight at once when feeding the writer as `--persist
/// producer` does (many sessions' sends awaiting their rows).
const SINGLE_ROWS_IN_FLIGHT: usize = 10_000;
/// Most produced messages awaiting Kafka's acknowledgement at once (the server's own
/// bound is librdkafka's queue of 200,000).
const PRODUCE_IN_FLIGHT: usize = 100_000;
/// Longest one of Kafka's tools or pgbench may run.
const TOOL_TIMEOUT: Duration = Duration::from_secs(600);

/// What to measure and how much.
#[derive(Debug, Clone)]
pub struct BaselineOptions {
    pub state_dir: PathBuf,
    /// Records each producer sends.
    pub records: u64,
    /// Round trips each latency measurement makes.
    pub messages: u32,
    /// Rows the server's writer writes in each mode.
    pub rows: u64,
    /// How long pgbench runs.
    pub pgbench_time: Duration,
    /// Rounds of each throughput measurement.
    pub rounds: u32,
}

/// Records (or rows) per second of a part's own tool and of the server's code on it:
/// the median of the rounds, and every round's figure in the order run.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub tool: f64,
    pub server: f64,
    /// `server / tool`, of the medians.
    pub ratio: f64,
    pub tool_rounds: Vec<f64>,
    pub server_rounds: Vec<f64>,
}

impl Throughput {
    fn of(tool_rounds: Vec<f64>, server_rounds: Vec<f64>) -> Self {
        let (tool, server) = (median(&tool_rounds), median(&server_rounds));
        Throughput {
            tool,
            server,
            ratio: if tool > 0.0 { server / tool } else { 0.0 },
            tool_rounds,
            server_rounds,
        }
    }
}

/// The middle value (the mean of the two middle ones for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Whether a part's own tool goes first in `round` (counted from 0): in rounds 1, 3, … as
/// printed, last in rounds 2, 4, …, so a drift of the machine favours neither side.
fn tool_first(round: u32) -> bool {
    round % 2 == 0
}

/// The database part's measurements, run in turn each round.
enum DbStep {
    Pgbench,
    Batches,
    SingleRows,
}

/// "round 2 of 3: " when there is more than one.
fn round_label(round: u32, rounds: u32) -> String {
    if rounds > 1 {
        format!("round {} of {rounds}: ", round + 1)
    } else {
        String::new()
    }
}

/// Kafka's `EndToEndLatency` as it prints it: the mean exactly, percentiles in whole
/// milliseconds rounded down.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolLatency {
    pub mean_ms: f64,
    pub p50_whole_ms: u64,
    pub p99_whole_ms: u64,
    pub p999_whole_ms: u64,
}

/// Round trips timed to the microsecond.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    fn of(mut nanos: Vec<u64>) -> Self {
        nanos.sort_unstable();
        let ms = |n: u64| n as f64 / 1e6;
        let at = |q: f64| ms(nanos[((nanos.len() as f64 * q) as usize).min(nanos.len() - 1)]);
        Latency {
            mean_ms: ms(nanos.iter().sum::<u64>()) / nanos.len() as f64,
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: ms(*nanos.last().unwrap_or(&0)),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub kafka_bootstrap: String,
    pub brokers: usize,
    pub partitions: u32,
    pub replication_factor: u16,
    pub record_bytes: usize,
    /// `ProducerPerformance` against the server's `Publisher`, records per second.
    pub produce: Throughput,
    pub produce_records: u64,
    pub latency_messages: u32,
    /// Kafka's `EndToEndLatency`.
    pub latency_tool: ToolLatency,
    /// The server's producer and fan-out consumer.
    pub latency_server: Latency,
    pub batch_rows: usize,
    pub writer_rows: u64,
    /// pgbench against the writer fed 500-row batches (`--persist consumer`), rows/s.
    pub db_batches: Throughput,
    /// pgbench against the writer fed single rows (`--persist producer`), rows/s.
    pub db_single_rows: Throughput,
}

/// Runs every measurement against the stack recorded in `opts.state_dir`.
pub async fn run(opts: &BaselineOptions) -> anyhow::Result<Baseline> {
    let info = super::status(&opts.state_dir)?.ok_or_else(|| {
        anyhow!(
            "no stack running (state dir {}); start one with: stompede stack up",
            opts.state_dir.display()
        )
    })?;
    if info.brokers.iter().any(|b| b.alive == Some(false)) || info.postgres.alive == Some(false) {
        bail!("the stack is not all running (see: stompede stack status); restart it with: stompede stack down && stompede stack up");
    }
    if opts.records == 0 || opts.messages == 0 || opts.rows == 0 || opts.rounds == 0 {
        bail!("--records, --messages, --rows and --rounds must each be at least 1");
    }
    let logs = opts.state_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
    let scratch = format!("stompede.baseline.{}", std::process::id());
    let kafka = kafka_part(opts, &info, &scratch, &logs).await;
    for topic in [format!("{scratch}.produce"), format!("{scratch}.latency")] {
        if let Err(e) = kafka_admin::delete_topic(&info.kafka_bootstrap, &topic).await {
            eprintln!("baseline: could not delete the scratch topic {topic}: {e}");
        }
    }
    let (produce, latency_tool, latency_server) = kafka?;
    let (db_batches, db_single_rows) = database_part(opts, &info, &logs).await?;
    Ok(Baseline {
        kafka_bootstrap: info.kafka_bootstrap.clone(),
        brokers: info.brokers.len(),
        partitions: info.partitions,
        replication_factor: info.replication_factor,
        record_bytes: RECORD_BYTES,
        produce,
        produce_records: opts.records,
        latency_messages: opts.messages,
        latency_tool,
        latency_server,
        batch_rows: BATCH_ROWS,
        writer_rows: opts.rows,
        db_batches,
        db_single_rows,
    })
}

async fn kafka_part(
    opts: &BaselineOptions,
    info: &StackInfo,
    scratch: &str,
    logs: &Path,
) -> anyhow::Result<(Throughput, ToolLatency, Latency)> {
    let bootstrap = info.kafka_bootstrap.as_str();
    // Fetching the jars now would replace the directory the running brokers load
    // classes from.
    let lib = current_classpath().ok_or_else(|| {
        anyhow!("the cached Kafka jars are not the ones this stompede uses (it was updated since the stack started); restart the stack, which fetches them: stompede stack down && stompede stack up")
    })?;
    let insync = info.min_insync_replicas.to_string();
    let configs = [("min.insync.replicas", insync.as_str())];
    let produce_topic = format!("{scratch}.produce");
    let latency_topic = format!("{scratch}.latency");
    kafka_admin::create_topic(
        bootstrap,
        &produce_topic,
        info.partitions,
        info.replication_factor,
        &configs,
    )
    .await?;
    // One partition, as EndToEndLatency makes for itself.
    kafka_admin::create_topic(
        bootstrap,
        &latency_topic,
        1,
        info.replication_factor,
        &configs,
    )
    .await?;

    let shutdown = CancellationToken::new();
    let metrics = Arc::new(Metrics::new("baseline"));
    let start = KafkaStart::new(bootstrap, &produce_topic, Duration::from_secs(60), shutdown);
    let publisher = Publisher::new(&start, bootstrap, &produce_topic, None, metrics.clone())
        .await
        .map_err(|e| anyhow!("the server's producer: {e}"))?;
    let (mut tool_rounds, mut server_rounds) = (Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        let label = round_label(round, opts.rounds);
        let order = if tool_first(round) {
            [true, false]
        } else {
            [false, true]
        };
        for tool in order {
            if tool {
                eprintln!(
                    "baseline: {label}Kafka ProducerPerformance, {} records of {RECORD_BYTES} B, acks=all…",
                    opts.records
                );
                let log = logs.join(format!("baseline-producer-performance.{}.log", round + 1));
                let out = java_tool(
                    &lib,
                    "org.apache.kafka.tools.ProducerPerformance",
                    &[
                        "--topic".into(),
                        produce_topic.clone(),
                        "--num-records".into(),
                        opts.records.to_string(),
                        "--record-size".into(),
                        RECORD_BYTES.to_string(),
                        "--throughput".into(),
                        "-1".into(),
                        "--producer-props".into(),
                        format!("bootstrap.servers={bootstrap}"),
                        "acks=all".into(),
                    ],
                    &log,
                )
                .await?;
                tool_rounds.push(summary(
                    parse_producer_performance(&out),
                    "ProducerPerformance",
                    "a \"records/sec\" summary",
                    &log,
                )?);
            } else {
                eprintln!(
                    "baseline: {label}the server's producer, {} chat messages of {RECORD_BYTES} B, acks=all…",
                    opts.records
                );
                server_rounds.push(server_produce(&publisher, opts.records).await?);
            }
        }
    }
    let produce = Throughput::of(tool_rounds, server_rounds);

    eprintln!(
        "baseline: Kafka EndToEndLatency, {} records one at a time…",
        opts.messages
    );
    let log = logs.join("baseline-end-to-end-latency.log");
    let out = java_tool(
        &lib,
        "org.apache.kafka.tools.EndToEndLatency",
        &[
            bootstrap.to_string(),
            latency_topic.clone(),
            opts.messages.to_string(),
            "all".into(),
            RECORD_BYTES.to_string(),
        ],
        &log,
    )
    .await?;
    let latency_tool = summary(
        parse_end_to_end_latency(&out),
        "EndToEndLatency",
        "\"Avg latency\" and \"Percentiles\" lines",
        &log,
    )?;

    eprintln!(
        "baseline: the server's producer and fan-out consumer, {} chat messages one at a time…",
        opts.messages
    );
    let start = KafkaStart::new(
        bootstrap,
        &latency_topic,
        Duration::from_secs(60),
        CancellationToken::new(),
    );
    let publisher = Publisher::new(&start, bootstrap, &latency_topic, None, metrics.clone())
        .await
        .map_err(|e| anyhow!("the server's producer: {e}"))?;
    let group = format!("{scratch}.fanout");
    let consumer = fanout::start(&start, bootstrap, &latency_topic, &group, metrics)
        .await
        .map_err(|e| anyhow!("the server's fan-out consumer: {e}"))?;
    let mut nanos = Vec::with_capacity(opts.messages as usize);
    for i in 0..opts.messages {
        let message = chat_message(u64::from(i));
        let text = message.message.clone();
        let began = Instant::now();
        let durable = publisher.enqueue(message).await.map_err(|e| anyhow!(e))?;
        let record = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .map_err(|_| anyhow!("the fan-out consumer got nothing within 30 s of message {i}"))?
            .map_err(|e| anyhow!("the fan-out consumer: {e}"))?;
        let elapsed = began.elapsed();
        let got: ChatMessage = serde_json::from_slice(record.payload().unwrap_or_default())
            .with_context(|| format!("record {} is not the chat message sent", record.offset()))?;
        if got.message != text {
            bail!("the fan-out consumer read another message than the one sent ({i})");
        }
        drop(record);
        durable.await.map_err(|e| anyhow!(e))?;
        nanos.push(elapsed.as_nanos() as u64);
    }
    Ok((produce, latency_tool, Latency::of(nanos)))
}

/// Records per second from the first hand-over to the last acknowledgement.
async fn server_produce(publisher: &Publisher, records: u64) -> anyhow::Result<f64> {
    let mut pending = FuturesUnordered::new();
    let began = Instant::now();
    for i in 0..records {
        if pending.len() >= PRODUCE_IN_FLIGHT {
            if let Some(result) = pending.next().await {
                let result: Result<(), String> = result;
                result.map_err(|e| anyhow!(e))?;
            }
        }
        let durable = publisher
            .enqueue(chat_message(i))
            .await
            .map_err(|e| anyhow!(e))?;
        pending.push(durable);
    }
    while let Some(result) = pending.next().await {
        let result: Result<(), String> = result;
        result.map_err(|e| anyhow!(e))?;
    }
    Ok(records as f64 / began.elapsed().as_secs_f64())
}

/// A chat message whose JSON is [`RECORD_BYTES`] long.
fn chat_message(i: u64) -> ChatMessage {
    // {"roomId":"room-0001","sender":"user-0001","message":"","type":"TALK"}
    const BARE: usize = 70;
    ChatMessage {
        room_id: format!("room-{:04}", i % 1000),
        sender: format!("user-{:04}", i % 1000),
        message: "x".repeat(RECORD_BYTES - BARE),
        kind: MessageType::Talk,
    }
}

/// Runs one of Kafka's tools from the stack's classpath; its output goes to `log` and
/// is returned.
async fn java_tool(lib: &Path, class: &str, args: &[String], log: &Path) -> anyhow::Result<String> {
    let (out, err) = open_log(log)?;
    let classpath = format!("{}/*", lib.display());
    let mut child = tokio::process::Command::new(java())
        .arg("-cp")
        .arg(&classpath)
        .arg(class)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start java for {class}"))?;
    let status = match tokio::time::timeout(TOOL_TIMEOUT, child.wait()).await {
        Ok(status) => status.with_context(|| format!("wait for {class}"))?,
        Err(_) => {
            let _ = child.kill().await;
            bail!(
                "{class} did not finish within {} s; its log {}:\n{}",
                TOOL_TIMEOUT.as_secs(),
                log.display(),
                log_tail(log, 20)
            );
        }
    };
    if !status.success() {
        bail!(
            "{class} exited with {status}; its log {}:\n{}",
            log.display(),
            log_tail(log, 20)
        );
    }
    std::fs::read_to_string(log).with_context(|| format!("read {}", log.display()))
}

/// A tool's parsed summary, or an error naming what was missing and where its output is.
fn summary<T>(parsed: Option<T>, tool: &str, what: &str, log: &Path) -> anyhow::Result<T> {
    parsed.ok_or_else(|| anyhow!("{tool} printed no {what}; see {}", log.display()))
}

/// The records/s of ProducerPerformance's summary line: "N records sent, R records/sec
/// (M MB/sec), …".
pub fn parse_producer_performance(out: &str) -> Option<f64> {
    out.lines()
        .rev()
        .filter(|l| l.contains(" records sent, "))
        .find_map(|l| {
            let (_, rest) = l.split_once(" records sent, ")?;
            let (rate, _) = rest.split_once(" records/sec")?;
            rate.trim().parse().ok()
        })
}

/// EndToEndLatency's "Avg latency: X ms" and "Percentiles: 50th = a, 99th = b, 99.9th = c".
pub fn parse_end_to_end_latency(out: &str) -> Option<ToolLatency> {
    let mean_ms = out.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("Avg latency:")?;
        rest.trim().strip_suffix("ms")?.trim().parse().ok()
    })?;
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Percentiles:"))?;
    let mut values = line.split(',').map(|part| {
        part.split_once('=')
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
    });
    Some(ToolLatency {
        mean_ms,
        p50_whole_ms: values.next()??,
        p99_whole_ms: values.next()??,
        p999_whole_ms: values.next()??,
    })
}

async fn database_part(
    opts: &BaselineOptions,
    info: &StackInfo,
    logs: &Path,
) -> anyhow::Result<(Throughput, Throughput)> {
    let name = format!("stompede_baseline_{}", std::process::id());
    let (base, _) = info
        .postgres
        .url
        .rsplit_once('/')
        .ok_or_else(|| anyhow!("unexpected database URL {}", info.postgres.url))?;
    let url = format!("{base}/{name}");
    let admin = crate::db::connect(&info.postgres.url)
        .await
        .with_context(|| format!("connect to {}", info.postgres.url))?;
    admin
        .batch_execute("SET client_min_messages TO warning")
        .await
        .context("set up the database connection")?;
    for statement in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        admin
            .batch_execute(&statement)
            .await
            .with_context(|| format!("create the scratch database {name}"))?;
    }
    let result = database_measurements(opts, info, logs, &url).await;
    if let Err(e) = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        eprintln!("baseline: could not drop the scratch database {name}: {e}");
    }
    result
}

async fn database_measurements(
    opts: &BaselineOptions,
    info: &StackInfo,
    logs: &Path,
    url: &str,
) -> anyhow::Result<(Throughput, Throughput)> {
    let limits = Limits::default();
    // The writer's first connection creates the history table, as in a server.
    let metrics = Arc::new(Metrics::new("baseline"));
    let writers = spawn_writers(
        url,
        limits.db_writers,
        limits.db_queue,
        limits.db_batch,
        metrics,
        CancellationToken::new(),
    )
    .await
    .context("start the server's database writer")?;
    let client = crate::db::connect(url)
        .await
        .with_context(|| format!("connect to {url}"))?;
    // Each part starts on an empty table with nothing left to flush.
    client
        .batch_execute("CREATE SEQUENCE baseline_offsets; CHECKPOINT")
        .await
        .context("create the scratch sequence")?;

    let feeders = info.servers.len().max(1) as u64;
    let (mut pgbench_rounds, mut batch_rounds, mut single_rounds) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 0..opts.rounds {
        let label = round_label(round, opts.rounds);
        let steps = if tool_first(round) {
            [DbStep::Pgbench, DbStep::Batches, DbStep::SingleRows]
        } else {
            [DbStep::Batches, DbStep::SingleRows, DbStep::Pgbench]
        };
        for step in steps {
            match step {
                DbStep::Pgbench => {
                    eprintln!(
                        "baseline: {label}pgbench, {BATCH_ROWS}-row inserts on {} connections for {} s…",
                        limits.db_writers,
                        opts.pgbench_time.as_secs()
                    );
                    let log = logs.join(format!("baseline-pgbench.{}.log", round + 1));
                    pgbench_rounds.push(
                        pgbench(url, limits.db_writers, opts.pgbench_time, logs, &log).await?,
                    );
                }
                DbStep::Batches => {
                    // `--persist consumer`: each instance's persist consumer hands over a
                    // batch and waits for its commit before reading the next.
                    eprintln!(
                        "baseline: {label}the server's database writer, {} rows in {BATCH_ROWS}-row batches from {feeders} feeder(s)…",
                        opts.rows
                    );
                    batch_rounds.push(writer_batches(&writers.queue, feeders, opts.rows).await?);
                    rows_written(&client, opts.rows, "in batches").await?;
                }
                DbStep::SingleRows => {
                    // `--persist producer`: every acknowledged send queues its own row and
                    // waits for it.
                    eprintln!(
                        "baseline: {label}the server's database writer, {} single rows, up to {SINGLE_ROWS_IN_FLIGHT} in flight…",
                        opts.rows
                    );
                    single_rounds.push(writer_single_rows(&writers.queue, opts.rows).await?);
                    rows_written(&client, opts.rows, "as single rows").await?;
                }
            }
            client
                .batch_execute("TRUNCATE chat_messages; CHECKPOINT")
                .await
                .context("empty the scratch table")?;
        }
    }
    writers.drain().await;
    Ok((
        Throughput::of(pgbench_rounds.clone(), batch_rounds),
        Throughput::of(pgbench_rounds, single_rounds),
    ))
}

/// A row of the scratch table, as the server makes it from a record at `offset`.
fn scratch_row(offset: u64) -> Row {
    static NAME: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    let name = NAME.get_or_init(|| Arc::from("baseline"));
    Row {
        message: chat_message(offset),
        sent_at: SystemTime::now(),
        cluster: name.clone(),
        topic: name.clone(),
        partition: 0,
        offset: offset as i64,
    }
}

/// Rows per second of the writer fed `rows` rows in batches, one batch in hand per feeder.
async fn writer_batches(queue: &DbQueue, feeders: u64, rows: u64) -> anyhow::Result<f64> {
    let began = Instant::now();
    let mut tasks = Vec::new();
    for f in 0..feeders {
        let queue = queue.clone();
        tasks.push(async move {
            let mut next = f * BATCH_ROWS as u64;
            while next < rows {
                let end = (next + BATCH_ROWS as u64).min(rows);
                let (done, written) = tokio::sync::oneshot::channel();
                let request = WriteRequest {
                    rows: (next..end).map(scratch_row).collect(),
                    done: Some(done),
                };
                if queue.send(request).await.is_err() || written.await.is_err() {
                    return Err(anyhow!("the database writer stopped"));
                }
                next += feeders * BATCH_ROWS as u64;
            }
            Ok(())
        });
    }
    for result in futures_util::future::join_all(tasks).await {
        result?;
    }
    Ok(rows as f64 / began.elapsed().as_secs_f64())
}

/// Rows per second of the writer fed `rows` single rows, each awaited, many in flight.
async fn writer_single_rows(queue: &DbQueue, rows: u64) -> anyhow::Result<f64> {
    let began = Instant::now();
    let mut pending = FuturesUnordered::new();
    for offset in 0..rows {
        if pending.len() >= SINGLE_ROWS_IN_FLIGHT {
            if let Some(result) = pending.next().await {
                result?;
            }
        }
        let queue = queue.clone();
        let row = scratch_row(offset);
        pending.push(async move {
            let (done, written) = tokio::sync::oneshot::channel();
            let request = WriteRequest {
                rows: vec![row],
                done: Some(done),
            };
            if queue.send(request).await.is_err() || written.await.is_err() {
                return Err(anyhow!("the database writer stopped"));
            }
            Ok::<(), anyhow::Error>(())
        });
    }
    while let Some(result) = pending.next().await {
        result?;
    }
    Ok(rows as f64 / began.elapsed().as_secs_f64())
}

/// Fails unless the scratch table holds exactly the `given` rows the writer was given.
async fn rows_written(
    client: &tokio_postgres::Client,
    given: u64,
    how: &str,
) -> anyhow::Result<()> {
    let written: i64 = client
        .query_one("SELECT count(*) FROM chat_messages", &[])
        .await
        .context("count the rows written")?
        .get(0);
    if written as u64 != given {
        bail!("the server's writer was given {given} rows {how} but {written} are in the table");
    }
    Ok(())
}

/// Rows per second of pgbench's multi-row insert.
async fn pgbench(
    url: &str,
    clients: usize,
    time: Duration,
    logs: &Path,
    log: &Path,
) -> anyhow::Result<f64> {
    let script = logs.join("baseline-pgbench.sql");
    let text = "x".repeat(RECORD_BYTES - 60);
    std::fs::write(
        &script,
        format!(
            "INSERT INTO chat_messages (room_id, sender, message, type, sent_at, kafka_topic, \
             kafka_partition, kafka_offset, kafka_cluster) \
             SELECT 'room-' || lpad((g % 1000)::text, 4, '0'), 'user-' || lpad((g % 1000)::text, 4, '0'), \
             '{text}', 'TALK', now(), 'baseline', 0, nextval('baseline_offsets'), 'pgbench' \
             FROM generate_series(1, {BATCH_ROWS}) AS g \
             ON CONFLICT (kafka_cluster, kafka_topic, kafka_partition, kafka_offset) DO NOTHING;\n"
        ),
    )
    .with_context(|| format!("write {}", script.display()))?;
    let bin = postgres::find_bindir()?.join("pgbench");
    let (out, err) = open_log(log)?;
    let status = tokio::time::timeout(
        TOOL_TIMEOUT,
        tokio::process::Command::new(&bin)
            .args(["-n", "-M", "prepared", "-c"])
            .arg(clients.to_string())
            .arg("-j")
            .arg(clients.to_string())
            .arg("-T")
            .arg(time.as_secs().max(1).to_string())
            .arg("-f")
            .arg(&script)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .status(),
    )
    .await
    .map_err(|_| anyhow!("pgbench did not finish within {} s", TOOL_TIMEOUT.as_secs()))?
    .with_context(|| format!("start {}", bin.display()))?;
    let out = std::fs::read_to_string(log).unwrap_or_default();
    if !status.success() {
        bail!(
            "pgbench exited with {status}; its log {}:\n{}",
            log.display(),
            log_tail(log, 20)
        );
    }
    let tps = summary(parse_pgbench_tps(&out), "pgbench", "\"tps = \" line", log)?;
    Ok(tps * BATCH_ROWS as f64)
}

/// pgbench's "tps = X (without initial connection time)".
pub fn parse_pgbench_tps(out: &str) -> Option<f64> {
    out.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("tps = ")?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The figures for people.
pub fn describe(b: &Baseline) -> String {
    let n = |v: f64| crate::report::format::count(v.round() as u64);
    let plural =
        |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
    let mut out = String::new();
    out += &format!(
        "Kafka {}: {}, {}, replication factor {}; {} B records, acks=all\n",
        b.kafka_bootstrap,
        plural(b.brokers, "broker", "brokers"),
        plural(b.partitions as usize, "partition", "partitions"),
        b.replication_factor,
        b.record_bytes
    );
    let rounds = |v: &[f64]| {
        if v.len() > 1 {
            let all: Vec<String> = v.iter().map(|&x| n(x)).collect();
            format!("   ({})", all.join("  "))
        } else {
            String::new()
        }
    };
    let median_of = if b.produce.tool_rounds.len() > 1 {
        format!(
            ", the median of {} rounds (each round)",
            b.produce.tool_rounds.len()
        )
    } else {
        String::new()
    };
    out += &format!("  produce, records/s{median_of}\n");
    out += &format!(
        "    {:<40} {:>9}{}\n",
        "ProducerPerformance",
        n(b.produce.tool),
        rounds(&b.produce.tool_rounds)
    );
    out += &format!(
        "    {:<40} {:>9}{}   {:.0} % of ProducerPerformance\n",
        "server's producer",
        n(b.produce.server),
        rounds(&b.produce.server_rounds),
        b.produce.ratio * 100.0
    );
    out += &format!(
        "  end to end, {} records one at a time\n",
        crate::report::format::count(u64::from(b.latency_messages))
    );
    let t = &b.latency_tool;
    out += &format!(
        "    {:<40} mean {:.3} ms   p50 {} ms   p99 {} ms   (whole ms, rounded down)\n",
        "EndToEndLatency", t.mean_ms, t.p50_whole_ms, t.p99_whole_ms
    );
    let l = &b.latency_server;
    out += &format!(
        "    {:<40} mean {:.3} ms   p50 {:.3} ms   p99 {:.3} ms   max {:.3} ms\n",
        "server's producer and fan-out consumer", l.mean_ms, l.p50_ms, l.p99_ms, l.max_ms
    );
    out += &format!(
        "PostgreSQL, {}-row inserts, rows/s{median_of}\n",
        b.batch_rows
    );
    out += &format!(
        "    {:<40} {:>9}{}\n",
        "pgbench",
        n(b.db_batches.tool),
        rounds(&b.db_batches.tool_rounds)
    );
    for (what, t) in [
        (
            format!("server's writer, {}-row batches", b.batch_rows),
            &b.db_batches,
        ),
        (
            "server's writer, single rows".to_string(),
            &b.db_single_rows,
        ),
    ] {
        out += &format!(
            "    {:<40} {:>9}{}   {:.0} % of pgbench\n",
            what,
            n(t.server),
            rounds(&t.server_rounds),
            t.ratio * 100.0
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kafka_and_pgbench_summaries() {
        let pp = "100000 records sent, 98765.4 records/sec (24.11 MB/sec), 3.1 ms avg latency\n\
                  500000 records sent, 120802.1 records/sec (29.49 MB/sec), 668.52 ms avg latency, 958.00 ms max latency, 703 ms 50th, 898 ms 95th, 929 ms 99th, 950 ms 99.9th.\n";
        assert_eq!(parse_producer_performance(pp), Some(120802.1));
        assert_eq!(parse_producer_performance("nothing here"), None);

        let e2e = "0\t40.1\n1000\t1.249492\nAvg latency: 2.2418 ms\nPercentiles: 50th = 1, 99th = 10, 99.9th = 40\n";
        assert_eq!(
            parse_end_to_end_latency(e2e),
            Some(ToolLatency {
                mean_ms: 2.2418,
                p50_whole_ms: 1,
                p99_whole_ms: 10,
                p999_whole_ms: 40
            })
        );
        assert_eq!(parse_end_to_end_latency("Avg latency: 2.2418 ms\n"), None);

        let pg = "number of failed transactions: 0 (0.000%)\nlatency average = 6.9 ms\ntps = 289.219000 (without initial connection time)\n";
        assert_eq!(parse_pgbench_tps(pg), Some(289.219));
    }

    #[test]
    fn chat_messages_are_record_sized() {
        for i in [0, 7, 999, 123_456] {
            let json = serde_json::to_vec(&chat_message(i)).unwrap();
            assert_eq!(json.len(), RECORD_BYTES);
        }
    }

    #[test]
    fn medians_of_rounds() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[5.0]), 5.0);
        assert_eq!(median(&[9.0, 1.0, 4.0]), 4.0);
        assert_eq!(median(&[9.0, 1.0, 4.0, 2.0]), 3.0);
        let t = Throughput::of(vec![100.0, 300.0, 200.0], vec![150.0, 90.0, 160.0]);
        assert_eq!((t.tool, t.server), (200.0, 150.0));
        assert!((t.ratio - 0.75).abs() < 1e-12);
        assert_eq!(
            t.server_rounds,
            vec![150.0, 90.0, 160.0],
            "rounds kept in order"
        );
    }

    #[test]
    fn latency_percentiles() {
        let l = Latency::of((1..=100).map(|ms| ms * 1_000_000).collect());
        assert_eq!(l.p50_ms, 51.0);
        assert_eq!(l.p99_ms, 100.0);
        assert_eq!(l.max_ms, 100.0);
        assert!((l.mean_ms - 50.5).abs() < 1e-9);
    }
}
