//! Measurement samplers that run beside the virtual users: Kafka consumer lag read from
//! the brokers, DB write throughput read from PostgreSQL's own statistics, and the
//! end-of-run audit of what reached the history table.
//!
//! Nothing here touches the system under test's data path. The lag sampler never joins
//! a consumer group: it reads each group's committed offsets (OffsetFetch) and the
//! partitions' watermarks, so the servers' groups never rebalance because of it. The DB
//! sampler reads `pg_stat_user_tables`, so it works whatever writes the rows.
//!
//! Flow: the load runner builds a [`LagSampler`] and a [`DbSampler`], hands them to
//! [`run_lag_sampler`] / [`run_db_sampler`] with the run's `t0`, a tick and the shutdown
//! token, and drains the bounded channels into the report's timelines. A sample the
//! consumer has no room for is dropped and counted ([`SamplerStats::dropped`]); a failed
//! sample is logged and counted, and sampling goes on. After the run, [`audit`] counts
//! the rows whose text starts with the run's marker.
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// Longest any single broker request of a lag sample may take.
pub const KAFKA_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a whole lag sample (groups, metadata, offsets, watermarks) may take.
pub const LAG_SAMPLE_BUDGET: Duration = Duration::from_secs(6);
/// Longest a PostgreSQL connect or statistics query of the DB sampler may take.
pub const DB_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the end-of-run audit query may take (it scans the table).
pub const AUDIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a sampler could not measure, naming the address or table involved.
#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("kafka at {bootstrap}: {what}: {detail}")]
    Kafka { bootstrap: String, what: String, detail: String },
    #[error("postgres at {url}: {what}: {detail}")]
    Postgres { url: String, what: String, detail: String },
    #[error("table name {table:?} is not usable: {reason}")]
    BadTable { table: String, reason: String },
    #[error("the run marker is empty, so an audit of {table} would count every row; pass the run's marker")]
    EmptyMarker { table: String },
}

fn kafka_err(bootstrap: &str, what: impl Into<String>, detail: impl ToString) -> SamplerError {
    SamplerError::Kafka { bootstrap: bootstrap.to_string(), what: what.into(), detail: detail.to_string() }
}

fn pg_err(url: &str, what: impl Into<String>, detail: impl ToString) -> SamplerError {
    SamplerError::Postgres { url: redact(url), what: what.into(), detail: detail.to_string() }
}

/// Which consumer groups the lag sampler reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupSelector {
    /// Exactly these groups, whether or not they have committed anything yet.
    Exact(Vec<String>),
    /// Every group the brokers list whose id starts with this prefix (for example
    /// [`crate::server::FANOUT_GROUP_PREFIX`]) and that has committed an offset for at
    /// least one partition of the topic. Groups with no offset for the topic are skipped:
    /// on a shared stack they belong to other topics' servers. Groups of stopped servers
    /// keep their offsets (7 days by default) and are still listed, with a growing lag;
    /// use [`GroupSelector::Exact`] when the instances of the run are known.
    Prefix(String),
}

/// One group's lag at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct LagSample {
    /// Seconds since the run's `t0`.
    pub t_s: f64,
    pub group: String,
    /// `(partition, lag)`, ordered by partition. Lag is the high watermark minus the
    /// group's committed offset; where the group has no committed offset for a partition
    /// yet, it is the whole retained partition (high − low) and the partition is listed
    /// in [`LagSample::uncommitted`].
    pub partitions: Vec<(i32, i64)>,
    pub total: i64,
    pub max: i64,
    /// Partitions without a committed offset for this group (lag counted as high − low).
    /// The reference server commits only after its first record on a partition.
    pub uncommitted: Vec<i32>,
}

/// Reads consumer lag of chosen groups on one topic from the brokers, without joining.
pub struct LagSampler {
    bootstrap: String,
    topic: String,
    groups: GroupSelector,
    /// Group-less client for group listing, metadata and watermarks.
    meta: BaseConsumer,
    /// One never-subscribed client per group, used only for OffsetFetch.
    committed: HashMap<String, BaseConsumer>,
}

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

/// Remaining time of the sample's budget for the next call, at most [`KAFKA_CALL_TIMEOUT`].
fn call_timeout(bootstrap: &str, deadline: Instant, what: &str) -> Result<Duration, SamplerError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(kafka_err(bootstrap, what, format!("the sample ran out of its {LAG_SAMPLE_BUDGET:?} budget")));
    }
    Ok(left.min(KAFKA_CALL_TIMEOUT))
}

/// Services queued client events (errors, stats) so they never pile up.
fn drain(consumer: &BaseConsumer) {
    for _ in 0..64 {
        match consumer.poll(Duration::ZERO) {
            None => return,
            Some(Err(e)) => tracing::debug!("lag sampler client: {e}"),
            Some(Ok(_)) => {}
        }
    }
}

impl LagSampler {
    /// A sampler for `topic` on the cluster at `bootstrap`. Connects lazily: broker
    /// trouble shows up in [`LagSampler::sample`].
    pub fn new(bootstrap: &str, topic: &str, groups: GroupSelector) -> Result<Self, SamplerError> {
        let meta =
            client_config(bootstrap).create().map_err(|e| kafka_err(bootstrap, "cannot create a Kafka client", e))?;
        Ok(LagSampler {
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
            groups,
            meta,
            committed: HashMap::new(),
        })
    }

    /// One sample of every selected group; blocking (run it in `spawn_blocking`), at most
    /// [`LAG_SAMPLE_BUDGET`]. A group whose offsets cannot be read is logged and left
    /// out; the sample fails only when no group could be read. Committed offsets are read
    /// before the watermarks, as `kafka-consumer-groups` does, so a lag is never negative.
    pub fn sample(&mut self, t_s: f64) -> Result<Vec<LagSample>, SamplerError> {
        let deadline = Instant::now() + LAG_SAMPLE_BUDGET;
        let groups = self.select_groups(deadline)?;
        self.committed.retain(|g, _| groups.contains(g));
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let partitions = self.partitions(deadline)?;
        let mut offsets = Vec::new();
        let mut first_err = None;
        for group in groups {
            match self.committed_offsets(&group, &partitions, deadline) {
                Ok(o) => offsets.push((group, o)),
                Err(e) => {
                    tracing::warn!("kafka lag of group {group}: {e}");
                    first_err.get_or_insert(e);
                }
            }
        }
        let mut marks = Vec::with_capacity(partitions.len());
        for &p in &partitions {
            let what = format!("watermarks of {} partition {p}", self.topic);
            let timeout = call_timeout(&self.bootstrap, deadline, &what)?;
            let (low, high) =
                self.meta.fetch_watermarks(&self.topic, p, timeout).map_err(|e| kafka_err(&self.bootstrap, what, e))?;
            marks.push((p, low, high));
        }
        drain(&self.meta);
        self.committed.values().for_each(drain);
        let discovering = matches!(self.groups, GroupSelector::Prefix(_));
        let mut out = Vec::new();
        for (group, committed) in offsets {
            let sample = lag_sample(t_s, group, &marks, &committed);
            if !(discovering && sample.uncommitted.len() == marks.len()) {
                out.push(sample);
            }
        }
        match first_err {
            Some(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }

    fn select_groups(&self, deadline: Instant) -> Result<Vec<String>, SamplerError> {
        let prefix = match &self.groups {
            GroupSelector::Exact(groups) => return Ok(groups.clone()),
            GroupSelector::Prefix(prefix) => prefix,
        };
        let what = format!("list consumer groups (prefix {prefix:?})");
        let timeout = call_timeout(&self.bootstrap, deadline, &what)?;
        let list = self.meta.fetch_group_list(None, timeout).map_err(|e| kafka_err(&self.bootstrap, what, e))?;
        let mut groups: Vec<String> =
            list.groups().iter().map(|g| g.name().to_string()).filter(|g| g.starts_with(prefix.as_str())).collect();
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    fn partitions(&self, deadline: Instant) -> Result<Vec<i32>, SamplerError> {
        let what = format!("metadata of topic {}", self.topic);
        let timeout = call_timeout(&self.bootstrap, deadline, &what)?;
        let md =
            self.meta.fetch_metadata(Some(&self.topic), timeout).map_err(|e| kafka_err(&self.bootstrap, &what, e))?;
        let topic = md.topics().iter().find(|t| t.name() == self.topic);
        let mut ids: Vec<i32> = match topic {
            Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
            Some(t) => return Err(kafka_err(&self.bootstrap, what, format!("{:?}; check the topic name", t.error()))),
            None => return Err(kafka_err(&self.bootstrap, what, "the topic does not exist; check the topic name")),
        };
        if ids.is_empty() {
            return Err(kafka_err(&self.bootstrap, what, "the topic has no partitions; check the topic name"));
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Committed offset per partition (`None`: nothing committed) via OffsetFetch.
    fn committed_offsets(
        &mut self,
        group: &str,
        partitions: &[i32],
        deadline: Instant,
    ) -> Result<HashMap<i32, Option<i64>>, SamplerError> {
        let bootstrap = &self.bootstrap;
        let consumer = match self.committed.entry(group.to_string()) {
            Entry::Occupied(cached) => cached.into_mut(),
            Entry::Vacant(slot) => slot.insert(
                client_config(bootstrap)
                    .set("group.id", group)
                    .create()
                    .map_err(|e| kafka_err(bootstrap, format!("cannot create a client for group {group}"), e))?,
            ),
        };
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for &p in partitions {
            tpl.add_partition(&self.topic, p);
        }
        let what = format!("committed offsets of group {group} on {}", self.topic);
        let timeout = call_timeout(bootstrap, deadline, &what)?;
        let got = consumer.committed_offsets(tpl, timeout).map_err(|e| kafka_err(bootstrap, &what, e))?;
        let mut out = HashMap::with_capacity(partitions.len());
        for e in got.elements_for_topic(&self.topic) {
            if let Err(err) = e.error() {
                return Err(kafka_err(bootstrap, format!("{what}, partition {}", e.partition()), err));
            }
            let committed = match e.offset() {
                Offset::Offset(o) if o >= 0 => Some(o),
                _ => None,
            };
            out.insert(e.partition(), committed);
        }
        Ok(out)
    }
}

fn lag_sample(t_s: f64, group: String, marks: &[(i32, i64, i64)], committed: &HashMap<i32, Option<i64>>) -> LagSample {
    let mut partitions = Vec::with_capacity(marks.len());
    let mut uncommitted = Vec::new();
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
    LagSample { t_s, group, partitions, total, max, uncommitted }
}

/// What a sampling loop did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SamplerStats {
    /// Samples taken successfully (delivered or dropped).
    pub taken: u64,
    /// Samples that failed (logged as warnings).
    pub failed: u64,
    /// Samples dropped because the output channel was full.
    pub dropped: u64,
}

/// Hands `value` on without waiting; `false` once the receiver is gone.
fn deliver<T>(out: &mpsc::Sender<T>, value: T, stats: &mut SamplerStats, what: &str) -> bool {
    match out.try_send(value) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            stats.dropped += 1;
            if stats.dropped.is_power_of_two() {
                tracing::warn!("{what} samples dropped: their consumer is behind ({} so far)", stats.dropped);
            }
            true
        }
        Err(TrySendError::Closed(_)) => false,
    }
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// Samples lag every `every` until `stop` (or until `out` is closed). Each sample runs
/// in `spawn_blocking`; on `stop` a sample in flight is left to finish on its own.
pub async fn run_lag_sampler(
    mut sampler: LagSampler,
    t0: Instant,
    every: Duration,
    stop: CancellationToken,
    out: mpsc::Sender<Vec<LagSample>>,
) -> SamplerStats {
    let mut stats = SamplerStats::default();
    let mut tick = ticker(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let t_s = t0.elapsed().as_secs_f64();
        let job = tokio::task::spawn_blocking(move || {
            let result = sampler.sample(t_s);
            (sampler, result)
        });
        let (back, result) = tokio::select! {
            _ = stop.cancelled() => break,
            joined = job => match joined {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!("kafka lag sampler stopped: its sample task failed: {e}");
                    break;
                }
            },
        };
        sampler = back;
        match result {
            Ok(samples) => {
                stats.taken += 1;
                if !deliver(&out, samples, &mut stats, "kafka lag") {
                    break;
                }
            }
            Err(e) => {
                stats.failed += 1;
                tracing::warn!("kafka lag sample at {t_s:.1} s failed: {e}");
            }
        }
    }
    stats
}

/// A table name as `name` or `schema.name`, limited to `[A-Za-z0-9_]` parts.
#[derive(Debug, Clone)]
struct TableName {
    schema: Option<String>,
    name: String,
}

impl TableName {
    fn parse(table: &str) -> Result<TableName, SamplerError> {
        let bad = |reason: &str| SamplerError::BadTable { table: table.to_string(), reason: reason.to_string() };
        if !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            return Err(bad("only ASCII letters, digits, '_' and one '.' between schema and table are allowed"));
        }
        let (schema, name) = match table.split_once('.') {
            Some((s, n)) => (Some(s), n),
            None => (None, table),
        };
        if name.is_empty() || name.contains('.') || schema.is_some_and(str::is_empty) {
            return Err(bad("expected `table` or `schema.table`"));
        }
        Ok(TableName { schema: schema.map(str::to_string), name: name.to_string() })
    }

    /// Quoted for SQL; names match exactly (case-sensitively), as in `pg_stat_user_tables`.
    fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("\"{s}\".\"{}\"", self.name),
            None => format!("\"{}\"", self.name),
        }
    }
}

/// `url` with any password replaced by `***`, fit for error messages.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((cred, host)) = rest.rsplit_once('@') {
            if let Some((user, _)) = cred.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
        return url.to_string();
    }
    let parts: Vec<&str> =
        url.split_whitespace().map(|kv| if kv.starts_with("password=") { "password=***" } else { kv }).collect();
    parts.join(" ")
}

async fn connect(url: &str, timeout: Duration) -> Result<Client, SamplerError> {
    match tokio::time::timeout(timeout, crate::db::connect(url)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(pg_err(url, "cannot connect", e)),
        Err(_) => Err(pg_err(url, "cannot connect", format!("no answer within {timeout:?}"))),
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

const STATS_QUALIFIED: &str = "SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = $1 AND schemaname = $2";
/// The first table named `$1` on the search path, as an unqualified name resolves.
const STATS_IN_SEARCH_PATH: &str = "SELECT n_tup_ins FROM pg_stat_user_tables \
     WHERE relname = $1 AND schemaname = ANY (current_schemas(false)) \
     ORDER BY array_position(current_schemas(false), schemaname) LIMIT 1";

/// Reads a table's insert counter (`pg_stat_user_tables.n_tup_ins`).
///
/// The counter comes from PostgreSQL's cumulative statistics, so it counts what any
/// backend inserted, including rows of transactions that later rolled back, and not rows
/// skipped by `ON CONFLICT DO NOTHING`. PostgreSQL 15 publishes a backend's counts
/// lazily: at transaction end at most once a second, and an idle backend within about a
/// second after its last transaction. The curve therefore trails the writers by up to
/// ~1 s and is stepped at sub-second ticks; sample every 1 s or slower. A statistics reset
/// is absorbed (counting resumes from the reset value).
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
        let mut sampler =
            DbSampler { url: url.to_string(), table, client: None, last_raw: 0, last_at: Instant::now(), total: 0 };
        sampler.last_raw = sampler.read().await?;
        sampler.last_at = Instant::now();
        Ok(sampler)
    }

    /// One reading, at most [`DB_TIMEOUT`] for the query (plus a reconnect if the
    /// connection was lost).
    pub async fn sample(&mut self, t_s: f64) -> Result<DbSample, SamplerError> {
        let raw = self.read().await?;
        let now = Instant::now();
        let delta = if raw >= self.last_raw { raw - self.last_raw } else { raw };
        let dt = now.duration_since(self.last_at).as_secs_f64();
        self.total += delta;
        self.last_raw = raw;
        self.last_at = now;
        let rows_per_s = if dt > 0.0 { delta as f64 / dt } else { 0.0 };
        Ok(DbSample { t_s, inserted_total: self.total, rows_per_s })
    }

    async fn read(&mut self) -> Result<i64, SamplerError> {
        let client = match self.client.take() {
            Some(c) if !c.is_closed() => c,
            _ => connect(&self.url, DB_TIMEOUT).await?,
        };
        let table = self.table.quoted();
        let (sql, params): (&str, Vec<&(dyn ToSql + Sync)>) = match &self.table.schema {
            Some(schema) => (STATS_QUALIFIED, vec![&self.table.name, schema]),
            None => (STATS_IN_SEARCH_PATH, vec![&self.table.name]),
        };
        let what = format!("read insert statistics of {table}");
        let row = match tokio::time::timeout(DB_TIMEOUT, client.query_opt(sql, &params)).await {
            Ok(Ok(row)) => row,
            // Returning drops the connection, so a late answer is never read as the next
            // one; the next sample reconnects.
            Ok(Err(e)) => return Err(pg_err(&self.url, what, e)),
            Err(_) => return Err(pg_err(&self.url, what, format!("no answer within {DB_TIMEOUT:?}"))),
        };
        let Some(row) = row else {
            return Err(pg_err(&self.url, what, "no such table in pg_stat_user_tables; check the name and the schema"));
        };
        let raw: Option<i64> = row.try_get(0).map_err(|e| pg_err(&self.url, &what, e))?;
        self.client = Some(client);
        Ok(raw.unwrap_or(0))
    }
}

/// Samples DB throughput every `every` until `stop` (or until `out` is closed).
pub async fn run_db_sampler(
    mut sampler: DbSampler,
    t0: Instant,
    every: Duration,
    stop: CancellationToken,
    out: mpsc::Sender<DbSample>,
) -> SamplerStats {
    let mut stats = SamplerStats::default();
    let mut tick = ticker(every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let t_s = t0.elapsed().as_secs_f64();
        let result = tokio::select! {
            _ = stop.cancelled() => break,
            r = sampler.sample(t_s) => r,
        };
        match result {
            Ok(sample) => {
                stats.taken += 1;
                if !deliver(&out, sample, &mut stats, "db throughput") {
                    break;
                }
            }
            Err(e) => {
                stats.failed += 1;
                tracing::warn!("db throughput sample at {t_s:.1} s failed: {e}");
            }
        }
    }
    stats
}

/// What reached the history table for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// Rows whose `message` starts with the run marker.
    pub rows_for_run: i64,
    /// Distinct `message` texts among them.
    pub distinct_for_run: i64,
    /// `rows_for_run - distinct_for_run`: the same text stored more than once.
    pub duplicates: i64,
}

/// Counts the run's rows in `table` (a scan; at most [`AUDIT_TIMEOUT`]). The marker is
/// matched literally as a prefix of `message` (`%` and `_` have no special meaning).
pub async fn audit(url: &str, table: &str, run_marker: &str) -> Result<Audit, SamplerError> {
    let name = TableName::parse(table)?;
    if run_marker.is_empty() {
        return Err(SamplerError::EmptyMarker { table: table.to_string() });
    }
    let client = connect(url, DB_TIMEOUT).await?;
    let sql =
        format!("SELECT count(*), count(DISTINCT message) FROM {} WHERE starts_with(message, $1::text)", name.quoted());
    let what = format!("audit rows of run {run_marker:?} in {}", name.quoted());
    let row = match tokio::time::timeout(AUDIT_TIMEOUT, client.query_one(&sql, &[&run_marker])).await {
        Ok(Ok(row)) => row,
        Ok(Err(e)) => return Err(pg_err(url, what, e)),
        Err(_) => return Err(pg_err(url, what, format!("no answer within {AUDIT_TIMEOUT:?}"))),
    };
    let rows_for_run: i64 = row.try_get(0).map_err(|e| pg_err(url, &what, e))?;
    let distinct_for_run: i64 = row.try_get(1).map_err(|e| pg_err(url, &what, e))?;
    Ok(Audit { rows_for_run, distinct_for_run, duplicates: rows_for_run - distinct_for_run })
}
