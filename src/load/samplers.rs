//! Measurement samplers that run beside the virtual users: Kafka consumer lag read from
//! the brokers, DB write throughput read from PostgreSQL's own statistics, and the
//! end-of-run audit of what reached the history table.
//!
//! Nothing here touches the data path of the system under test. The lag sampler never
//! joins a consumer group: it reads each group's committed offsets (OffsetFetch) and the
//! partitions' watermarks, so no group rebalances because of it. The DB sampler reads
//! `pg_stat_user_tables`, so it counts rows whatever wrote them.
//!
//! Flow: the load runner builds a [`LagSampler`] and a [`DbSampler`], hands them to
//! [`run_lag_sampler`] / [`run_db_sampler`] with the run's `t0`, a tick and the shutdown
//! token; each loop keeps its samples as it takes them (in a bounded [`Store`]) and
//! returns them when it stops. A failed sample is counted and reported (a lasting
//! trouble on the run's status line, every failure in the run log), and sampling goes
//! on ([`SamplerStats`]). librdkafka's own log lines go to the run log, never the
//! console. After the run, [`audit`] counts the rows whose text starts with the run's
//! marker.
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::error::KafkaResult;
use rdkafka::{Offset, TopicPartitionList};
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use crate::load::warnings::Warnings;

/// Longest any single broker request of a lag sample may take.
pub const KAFKA_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a whole lag sample (groups, metadata, offsets, watermarks) may take.
pub const LAG_SAMPLE_BUDGET: Duration = Duration::from_secs(6);
/// Longest a PostgreSQL connect or statistics query may take.
pub const DB_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the end-of-run audit query (a table scan) may take.
pub const AUDIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a sampler could not measure, naming the address or table involved.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("kafka at {bootstrap}: {what}: {detail}")]
    Kafka {
        bootstrap: String,
        what: String,
        detail: String,
    },
    #[error("postgres at {url}: {what}: {detail}")]
    Postgres {
        url: String,
        what: String,
        detail: String,
    },
    #[error("table name {table:?} is not usable: {reason}")]
    BadTable { table: String, reason: String },
    #[error("the run marker is empty, so an audit of {table} would count every row; pass the run's marker")]
    EmptyMarker { table: String },
}

fn kafka_err(bootstrap: &str, what: impl Into<String>, detail: impl ToString) -> SamplerError {
    SamplerError::Kafka {
        bootstrap: bootstrap.to_string(),
        what: what.into(),
        detail: detail.to_string(),
    }
}

fn pg_err(url: &str, what: impl Into<String>, detail: impl ToString) -> SamplerError {
    SamplerError::Postgres {
        url: redact(url),
        what: what.into(),
        detail: detail.to_string(),
    }
}

/// Which consumer groups the lag sampler reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSelector {
    /// Exactly these groups, whether or not they have committed anything yet.
    Exact(Vec<String>),
    /// Every group the brokers list whose id starts with this prefix (for example
    /// [`crate::server::FANOUT_GROUP_PREFIX`]) and that has a committed offset on at least
    /// one partition of the topic; groups without one belong to other topics on a shared
    /// stack and are skipped. Groups of stopped servers keep their offsets (7 days by
    /// default) and stay listed with a growing lag: prefer [`GroupSelector::Exact`] when
    /// the run's instances are known.
    Prefix(String),
}

/// One group's lag at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct LagSample {
    /// Seconds since the run's `t0`.
    pub t_s: f64,
    pub group: String,
    /// `(partition, lag)` by partition: high watermark − the group's committed offset.
    /// Where the group has no committed offset yet, the lag is the whole retained
    /// partition (high − low) and the partition is listed in `uncommitted`.
    pub partitions: Vec<(i32, i64)>,
    pub total: i64,
    pub max: i64,
    /// Partitions without a committed offset for this group. The reference server's
    /// fan-out group commits a partition only after its first record there.
    pub uncommitted: Vec<i32>,
}

/// Reads the consumer lag of chosen groups on one topic from the brokers, never joining.
pub struct LagSampler {
    bootstrap: String,
    topic: String,
    groups: GroupSelector,
    /// Group-less client for group listing, metadata and watermarks.
    meta: BaseConsumer<QuietContext>,
    /// One never-subscribed client per group, used only for OffsetFetch.
    committed: HashMap<String, BaseConsumer<QuietContext>>,
    context: QuietContext,
}

/// The sampler clients' context: librdkafka's own log and error lines go to the run log
/// (or tracing's debug level without one), never to the console, where a broker outage
/// would otherwise print one line per reconnect attempt. What a failed sample means is
/// reported once, through [`Reporter`].
#[derive(Clone, Default)]
pub struct QuietContext {
    warnings: Option<Arc<Warnings>>,
}

impl QuietContext {
    fn line(&self, line: String) {
        match &self.warnings {
            Some(w) => w.log(&line),
            None => tracing::debug!("{line}"),
        }
    }
}

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.line(format!("librdkafka {level:?} {fac}: {log_message}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.line(format!("librdkafka error {error}: {reason}"));
    }
}

impl ConsumerContext for QuietContext {}

fn client_config(bootstrap: &str) -> ClientConfig {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("client.id", "stompede-lag-sampler")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("socket.timeout.ms", "5000")
        .set("reconnect.backoff.max.ms", "500")
        .set("log_level", "3");
    cfg
}

/// Services queued client events (errors) so they never pile up.
fn drain(consumer: &BaseConsumer<QuietContext>) {
    for event in std::iter::from_fn(|| consumer.poll(Duration::ZERO)).take(64) {
        if let Err(e) = event {
            tracing::debug!("lag sampler client: {e}");
        }
    }
}

impl LagSampler {
    /// A sampler for `topic` on the cluster at `bootstrap`. Connects lazily: broker
    /// trouble shows up in [`LagSampler::sample`].
    pub fn new(bootstrap: &str, topic: &str, groups: GroupSelector) -> Result<Self, SamplerError> {
        Self::with_log(bootstrap, topic, groups, None)
    }

    /// [`LagSampler::new`], with librdkafka's log lines going to the run's log.
    pub fn with_log(
        bootstrap: &str,
        topic: &str,
        groups: GroupSelector,
        warnings: Option<Arc<Warnings>>,
    ) -> Result<Self, SamplerError> {
        let context = QuietContext { warnings };
        let meta = client_config(bootstrap)
            .create_with_context(context.clone())
            .map_err(|e| kafka_err(bootstrap, "create a Kafka client", e))?;
        Ok(LagSampler {
            bootstrap: bootstrap.into(),
            topic: topic.into(),
            groups,
            meta,
            committed: HashMap::new(),
            context,
        })
    }

    /// One sample of every selected group. Blocking (run it in `spawn_blocking`); each
    /// request waits at most [`KAFKA_CALL_TIMEOUT`], the whole sample [`LAG_SAMPLE_BUDGET`].
    /// A group whose offsets cannot be read is logged and left out; the sample fails
    /// only when no group could be read. Committed offsets are read before the
    /// watermarks, as `kafka-consumer-groups` does, so a race never makes a lag negative.
    pub fn sample(&mut self, t_s: f64) -> Result<Vec<LagSample>, SamplerError> {
        let deadline = Instant::now() + LAG_SAMPLE_BUDGET;
        let groups = self.select_groups(deadline)?;
        self.committed.retain(|g, _| groups.contains(g));
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let what = format!("metadata of topic {}", self.topic);
        let md = self.call(deadline, &what, |t| {
            self.meta.fetch_metadata(Some(&self.topic), t)
        })?;
        let mut partitions: Vec<i32> = match md.topics().iter().find(|t| t.name() == self.topic) {
            Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
            _ => Vec::new(),
        };
        if partitions.is_empty() {
            return Err(kafka_err(
                &self.bootstrap,
                what,
                "no such topic (or no partitions); check the name",
            ));
        }
        partitions.sort_unstable();
        let (mut offsets, mut first_err) = (Vec::new(), None);
        for group in groups {
            match self.committed_offsets(&group, &partitions, deadline) {
                Ok(o) => offsets.push((group, o)),
                Err(e) => {
                    self.context
                        .line(format!("kafka lag of group {group}: {e}"));
                    first_err.get_or_insert(e);
                }
            }
        }
        let mut marks = Vec::with_capacity(partitions.len());
        for p in partitions {
            let what = format!("watermarks of {} partition {p}", self.topic);
            let (low, high) = self.call(deadline, &what, |t| {
                self.meta.fetch_watermarks(&self.topic, p, t)
            })?;
            marks.push((p, low, high));
        }
        drain(&self.meta);
        self.committed.values().for_each(drain);
        let discovering = matches!(self.groups, GroupSelector::Prefix(_));
        let out: Vec<LagSample> = offsets
            .into_iter()
            .map(|(group, committed)| lag_sample(t_s, group, &marks, &committed))
            .filter(|s| !(discovering && s.uncommitted.len() == marks.len()))
            .collect();
        match first_err {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    /// The groups to sample now: the exact list, or the prefix's groups as the brokers list them.
    fn select_groups(&self, deadline: Instant) -> Result<Vec<String>, SamplerError> {
        let prefix = match &self.groups {
            GroupSelector::Exact(groups) => return Ok(groups.clone()),
            GroupSelector::Prefix(prefix) => prefix.as_str(),
        };
        let listed = self.call(deadline, "list groups", |t| {
            self.meta.fetch_group_list(None, t)
        });
        let mut groups: Vec<String> = match listed {
            Ok(list) => list
                .groups()
                .iter()
                .map(|g| g.name().to_string())
                .filter(|g| g.starts_with(prefix))
                .collect(),
            // A broker down fails the listing: keep sampling the groups found before.
            Err(e) if !self.committed.is_empty() => {
                self.context.line(format!(
                    "{e}; sampling the {} groups found before",
                    self.committed.len()
                ));
                self.committed.keys().cloned().collect()
            }
            Err(e) => return Err(e),
        };
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// Runs one broker request with what is left of the sample's budget, at most
    /// [`KAFKA_CALL_TIMEOUT`], naming `what` if it fails.
    fn call<T>(
        &self,
        deadline: Instant,
        what: &str,
        f: impl FnOnce(Duration) -> KafkaResult<T>,
    ) -> Result<T, SamplerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(kafka_err(
                &self.bootstrap,
                what,
                format!("the sample used up its {LAG_SAMPLE_BUDGET:?}"),
            ));
        }
        f(left.min(KAFKA_CALL_TIMEOUT)).map_err(|e| kafka_err(&self.bootstrap, what, e))
    }

    /// The group's committed offset per partition (`None`: nothing committed), by OffsetFetch.
    fn committed_offsets(
        &mut self,
        group: &str,
        parts: &[i32],
        deadline: Instant,
    ) -> Result<Committed, SamplerError> {
        if !self.committed.contains_key(group) {
            let what = format!("create a client for group {group}");
            let consumer = client_config(&self.bootstrap)
                .set("group.id", group)
                .create_with_context(self.context.clone());
            let consumer = consumer.map_err(|e| kafka_err(&self.bootstrap, what, e))?;
            self.committed.insert(group.to_string(), consumer);
        }
        let mut tpl = TopicPartitionList::with_capacity(parts.len());
        for &p in parts {
            tpl.add_partition(&self.topic, p);
        }
        let what = format!("committed offsets of group {group} on {}", self.topic);
        let consumer = &self.committed[group];
        let got = self.call(deadline, &what, |t| consumer.committed_offsets(tpl, t))?;
        let mut out = HashMap::with_capacity(parts.len());
        for e in got.elements_for_topic(&self.topic) {
            e.error().map_err(|err| {
                kafka_err(
                    &self.bootstrap,
                    format!("{what}, partition {}", e.partition()),
                    err,
                )
            })?;
            out.insert(
                e.partition(),
                if let Offset::Offset(o @ 0..) = e.offset() {
                    Some(o)
                } else {
                    None
                },
            );
        }
        Ok(out)
    }
}

type Committed = HashMap<i32, Option<i64>>;

fn lag_sample(
    t_s: f64,
    group: String,
    marks: &[(i32, i64, i64)],
    committed: &Committed,
) -> LagSample {
    let (mut partitions, mut uncommitted) = (Vec::with_capacity(marks.len()), Vec::new());
    for &(p, low, high) in marks {
        let lag = match committed.get(&p).copied().flatten() {
            Some(offset) => high - offset,
            None => {
                uncommitted.push(p);
                high - low
            }
        };
        partitions.push((p, lag.max(0)));
    }
    let total = partitions.iter().map(|(_, l)| l).sum();
    let max = partitions.iter().map(|(_, l)| *l).max().unwrap_or(0);
    LagSample {
        t_s,
        group,
        partitions,
        total,
        max,
        uncommitted,
    }
}

/// What a sampling loop did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SamplerStats {
    /// Samples taken successfully.
    pub taken: u64,
    /// Samples that failed (the first of a streak is a warning, every one is in the run log).
    pub failed: u64,
    /// Successful samples not kept because the store was full and thinned (see [`Store`]).
    pub thinned: u64,
}

/// Most samples one sampler keeps: a day at one a second. Past it the store keeps every
/// other sample and then takes every second one (and so on), so it always covers the
/// whole run and never grows past this.
pub const MAX_SAMPLES: usize = 86_400;

/// The samples of one sampler, consumed as they are taken and bounded by [`MAX_SAMPLES`].
#[derive(Debug)]
pub struct Store<T> {
    items: Vec<T>,
    cap: usize,
    /// Keep one sample in `stride`.
    stride: u64,
    seen: u64,
}

impl<T> Store<T> {
    pub fn new(cap: usize) -> Store<T> {
        Store {
            items: Vec::new(),
            cap: cap.max(2),
            stride: 1,
            seen: 0,
        }
    }

    /// Adds a sample; returns false when thinning left it out.
    pub fn push(&mut self, item: T) -> bool {
        self.seen += 1;
        if (self.seen - 1) % self.stride != 0 {
            return false;
        }
        if self.items.len() >= self.cap {
            let mut i = 0;
            self.items.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride *= 2;
            if (self.seen - 1) % self.stride != 0 {
                return false;
            }
        }
        self.items.push(item);
        true
    }

    pub fn into_vec(self) -> Vec<T> {
        self.items
    }
}

/// What a sampling loop returns when it stops: its counts and every sample it kept.
#[derive(Debug)]
pub struct Collected<T> {
    pub stats: SamplerStats,
    pub samples: Vec<T>,
}

/// Where a sampling loop reports trouble: the run's [`Warnings`] (a lasting trouble on
/// the status line, every failure in the run log), or the tracing log without one.
#[derive(Clone)]
pub struct Reporter {
    pub warnings: Option<Arc<Warnings>>,
    /// The trouble's source name on the status line, e.g. `"kafka"`.
    pub source: &'static str,
}

impl Reporter {
    fn failed(&self, what: &str, t_s: f64, streak: u64, e: &SamplerError) {
        match &self.warnings {
            Some(w) => {
                w.log(&format!(
                    "{what} sample at {t_s:.1} s failed ({streak} in a row): {e}"
                ));
                w.trouble(self.source, &format!("{what} not sampled: {e}"));
            }
            None if streak.is_power_of_two() => {
                tracing::warn!("{what} sample at {t_s:.1} s failed ({streak} in a row): {e}")
            }
            None => {}
        }
    }

    fn recovered(&self, what: &str, streak: u64) {
        match &self.warnings {
            Some(w) => w.recovered(self.source),
            None => tracing::info!("{what} sampling recovered after {streak} failed samples"),
        }
    }
}

/// The loop both samplers share: one sample per tick until `stop`, each kept in a
/// bounded [`Store`] as it is taken. `take` hands the sampler back with its result, or
/// `None` if it was lost.
async fn run_loop<S, T, F, Fut>(
    what: &str,
    mut sampler: S,
    (t0, every): (Instant, Duration),
    stop: CancellationToken,
    reporter: Reporter,
    mut take: F,
) -> Collected<T>
where
    F: FnMut(S, f64) -> Fut,
    Fut: Future<Output = Option<(S, Result<T, SamplerError>)>>,
{
    let (mut stats, mut streak) = (SamplerStats::default(), 0u64);
    let mut store = Store::new(MAX_SAMPLES);
    let mut tick = tokio::time::interval(every.max(MIN_SAMPLE_INTERVAL));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let t_s = t0.elapsed().as_secs_f64();
        let (back, result) = tokio::select! {
            _ = stop.cancelled() => break,
            taken = take(sampler, t_s) => match taken {
                Some(taken) => taken,
                None => break,
            },
        };
        sampler = back;
        match result {
            Ok(sample) => {
                if streak > 0 {
                    reporter.recovered(what, streak);
                    streak = 0;
                }
                stats.taken += 1;
                if !store.push(sample) {
                    stats.thinned += 1;
                }
            }
            Err(e) => {
                (stats.failed, streak) = (stats.failed + 1, streak + 1);
                reporter.failed(what, t_s, streak, &e);
            }
        }
    }
    Collected {
        stats,
        samples: store.into_vec(),
    }
}

/// The shortest sampling interval a loop accepts.
pub const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(1);

/// Samples lag every `every` until `stop`. Each sample runs in `spawn_blocking`; on
/// `stop` a sample in flight is left to finish on its own.
pub async fn run_lag_sampler(
    sampler: LagSampler,
    t0: Instant,
    every: Duration,
    stop: CancellationToken,
    reporter: Reporter,
) -> Collected<Vec<LagSample>> {
    run_loop(
        "kafka lag",
        sampler,
        (t0, every),
        stop,
        reporter,
        |mut sampler, t_s| async move {
            let job = tokio::task::spawn_blocking(move || {
                let result = sampler.sample(t_s);
                (sampler, result)
            });
            job.await
                .map_err(|e| {
                    tracing::error!("kafka lag sampler stopped: its sample task failed: {e}")
                })
                .ok()
        },
    )
    .await
}

/// Samples DB throughput every `every` until `stop`.
pub async fn run_db_sampler(
    sampler: DbSampler,
    t0: Instant,
    every: Duration,
    stop: CancellationToken,
    reporter: Reporter,
) -> Collected<DbSample> {
    run_loop(
        "db throughput",
        sampler,
        (t0, every),
        stop,
        reporter,
        |mut sampler, t_s| async move {
            let result = sampler.sample(t_s).await;
            Some((sampler, result))
        },
    )
    .await
}

/// Streams the stamp of every row of the run in `table` to `visit` (rows whose text
/// does not carry a readable stamp are skipped); returns how many rows were read. Only
/// the start of each text is fetched, so memory stays flat however many rows there are.
pub async fn stored_stamps(
    url: &str,
    table: &str,
    run_marker: &str,
    mut visit: impl FnMut(crate::load::stamp::Stamp),
) -> Result<u64, SamplerError> {
    use futures_util::{pin_mut, TryStreamExt};
    let (name, client) = open_for_run(url, table, run_marker).await?;
    let sql = format!(
        "SELECT left(message, 96) FROM {} WHERE starts_with(message, $1::text)",
        name.quoted()
    );
    let what = format!("read the stamps of run {run_marker:?} in {}", name.quoted());
    let read = async {
        let rows = client.query_raw(&sql, [run_marker]).await?;
        pin_mut!(rows);
        let mut n = 0u64;
        while let Some(row) = rows.try_next().await? {
            n += 1;
            let text: &str = row.try_get(0)?;
            if let Some(stamp) = crate::load::stamp::Stamp::find_marked(text.as_bytes(), run_marker)
            {
                visit(stamp);
            }
        }
        Ok::<u64, tokio_postgres::Error>(n)
    };
    within(url, &what, AUDIT_TIMEOUT, read).await
}

/// A table name, `table` or `schema.table`, of `[A-Za-z0-9_]` parts.
struct TableName {
    schema: Option<String>,
    name: String,
}

impl TableName {
    fn parse(table: &str) -> Result<TableName, SamplerError> {
        let bad = |reason: &str| SamplerError::BadTable {
            table: table.to_string(),
            reason: reason.to_string(),
        };
        if !table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            return Err(bad(
                "only ASCII letters, digits, '_' and one '.' between schema and table are allowed",
            ));
        }
        let (schema, name) = table
            .split_once('.')
            .map_or((None, table), |(s, n)| (Some(s), n));
        if name.is_empty() || name.contains('.') || schema.is_some_and(str::is_empty) {
            return Err(bad("expected `table` or `schema.table`"));
        }
        Ok(TableName {
            schema: schema.map(String::from),
            name: name.to_string(),
        })
    }

    /// Quoted for SQL, so it matches exactly (case-sensitively), as `pg_stat_user_tables` does.
    fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("\"{s}\".\"{}\"", self.name),
            None => format!("\"{}\"", self.name),
        }
    }
}

/// `url` with any password replaced by `***`, fit for an error message.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url
            .split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***"
                } else {
                    kv
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    match rest
        .rsplit_once('@')
        .and_then(|(cred, host)| Some((cred.split_once(':')?.0, host)))
    {
        Some((user, host)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Awaits a PostgreSQL step for at most `limit`.
async fn within<T, E: ToString>(
    url: &str,
    what: &str,
    limit: Duration,
    step: impl Future<Output = Result<T, E>>,
) -> Result<T, SamplerError> {
    match tokio::time::timeout(limit, step).await {
        Ok(done) => done.map_err(|e| pg_err(url, what, e)),
        Err(_) => Err(pg_err(url, what, format!("no answer within {limit:?}"))),
    }
}

/// DB write throughput at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct DbSample {
    /// Seconds since the run's `t0`.
    pub t_s: f64,
    /// Rows inserted into the table since the sampler was created.
    pub inserted_total: i64,
    /// Rows per second since the previous successful reading.
    pub rows_per_s: f64,
}

/// An unqualified name is looked up in `current_schema()`, where an unqualified `CREATE TABLE` puts it.
const STATS_SQL: &str = "SELECT n_tup_ins FROM pg_stat_user_tables \
     WHERE relname = $1 AND schemaname = coalesce($2::text, current_schema())";

/// Reads a table's insert counter, `pg_stat_user_tables.n_tup_ins`.
///
/// The counter is PostgreSQL's cumulative statistics: it counts what every backend
/// inserted, including rows of transactions that later rolled back, and not rows skipped
/// by `ON CONFLICT DO NOTHING`. PostgreSQL 15 publishes a backend's counts lazily (measured
/// on the local stack): a busy writer's counts appear about a second late, since a backend
/// flushes at most once a second; counts left pending when a writer goes idle appear
/// about 10 s later (its idle flush); a closing connection flushes at once. So sample
/// every second or slower, expect stair steps, and read the final total at least 10 s
/// after the load stops (or use [`audit`]). A statistics reset is absorbed (counting
/// resumes from the reset); a lost connection is reopened on the next sample.
pub struct DbSampler {
    url: String,
    table: TableName,
    client: Option<Client>,
    last_raw: i64,
    last_at: Instant,
    total: i64,
}

impl DbSampler {
    /// Connects and takes the baseline reading; fails if the table is unknown.
    pub async fn new(url: &str, table: &str) -> Result<Self, SamplerError> {
        let table = TableName::parse(table)?;
        let mut sampler = DbSampler {
            url: url.into(),
            table,
            client: None,
            last_raw: 0,
            last_at: Instant::now(),
            total: 0,
        };
        sampler.last_raw = sampler.read().await?;
        sampler.last_at = Instant::now();
        Ok(sampler)
    }

    /// One reading; the query waits at most [`DB_TIMEOUT`] (plus a reconnect, if needed).
    pub async fn sample(&mut self, t_s: f64) -> Result<DbSample, SamplerError> {
        let raw = self.read().await?;
        let now = Instant::now();
        let delta = if raw >= self.last_raw {
            raw - self.last_raw
        } else {
            raw
        };
        let dt = now.duration_since(self.last_at).as_secs_f64();
        (self.total, self.last_raw, self.last_at) = (self.total + delta, raw, now);
        Ok(DbSample {
            t_s,
            inserted_total: self.total,
            rows_per_s: if dt > 0.0 { delta as f64 / dt } else { 0.0 },
        })
    }

    async fn read(&mut self) -> Result<i64, SamplerError> {
        let client = match self.client.take() {
            Some(c) if !c.is_closed() => c,
            _ => {
                within(
                    &self.url,
                    "cannot connect",
                    DB_TIMEOUT,
                    crate::db::connect(&self.url),
                )
                .await?
            }
        };
        let what = format!("read the insert statistics of {}", self.table.quoted());
        // On failure the connection is dropped, so a late answer is never taken for the
        // next one; the next sample reconnects.
        let row = within(
            &self.url,
            &what,
            DB_TIMEOUT,
            client.query_opt(STATS_SQL, &[&self.table.name, &self.table.schema]),
        )
        .await?;
        let Some(row) = row else {
            return Err(pg_err(
                &self.url,
                what,
                "no such table in pg_stat_user_tables; check the name and schema",
            ));
        };
        let raw: Option<i64> = row.try_get(0).map_err(|e| pg_err(&self.url, &what, e))?;
        self.client = Some(client);
        Ok(raw.unwrap_or(0))
    }
}

/// What reached the history table for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// Rows whose `message` starts with the run marker.
    pub rows_for_run: i64,
    /// Distinct `message` texts among them.
    pub distinct_for_run: i64,
    /// `rows_for_run - distinct_for_run`: texts stored more than once.
    pub duplicates: i64,
}

/// Checks the table name and the marker (an empty one would match every row), then
/// connects: the start of every query about one run's rows.
async fn open_for_run(
    url: &str,
    table: &str,
    run_marker: &str,
) -> Result<(TableName, tokio_postgres::Client), SamplerError> {
    let name = TableName::parse(table)?;
    if run_marker.is_empty() {
        return Err(SamplerError::EmptyMarker {
            table: table.to_string(),
        });
    }
    let client = within(url, "cannot connect", DB_TIMEOUT, crate::db::connect(url)).await?;
    Ok((name, client))
}

/// Counts the run's rows in `table`, at most [`AUDIT_TIMEOUT`]. The marker is matched
/// literally as a prefix of `message` (`%` and `_` are ordinary characters).
pub async fn audit(url: &str, table: &str, run_marker: &str) -> Result<Audit, SamplerError> {
    let (name, client) = open_for_run(url, table, run_marker).await?;
    let sql = format!(
        "SELECT count(*), count(DISTINCT message) FROM {} WHERE starts_with(message, $1::text)",
        name.quoted()
    );
    let what = format!("audit the rows of run {run_marker:?} in {}", name.quoted());
    let row = within(
        url,
        &what,
        AUDIT_TIMEOUT,
        client.query_one(&sql, &[&run_marker]),
    )
    .await?;
    let rows_for_run: i64 = row.try_get(0).map_err(|e| pg_err(url, &what, e))?;
    let distinct_for_run: i64 = row.try_get(1).map_err(|e| pg_err(url, &what, e))?;
    Ok(Audit {
        rows_for_run,
        distinct_for_run,
        duplicates: rows_for_run - distinct_for_run,
    })
}
