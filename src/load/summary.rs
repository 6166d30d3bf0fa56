//! Turning a finished run into the report model (`crate::report::Summary`): figures,
//! environment, and what [`super::verdicts`], [`super::resources`] and the samplers
//! found.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::load::integrity::Tally;
use crate::load::sampling::Sampled;
use crate::load::stats::Totals;
use crate::load::target::Resolved;
use crate::load::verdicts::{self, Measured};
use crate::load::{RunContext, Schedule};
use crate::report::*;

pub struct Inputs<'a> {
    pub ctx: &'a RunContext,
    pub target: &'a Resolved,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub schedule: Schedule,
    pub ramp_end_s: f64,
    pub totals: &'a Totals,
    pub tally: Tally,
    pub timeline: Vec<TimelinePoint>,
    pub sampled: Sampled,
    /// The harness's event-loop lag over the measured phase.
    pub loop_lag: Histogram<u64>,
    pub resources: Resources,
    /// Loss explained by a shared fan-out group, when the stack has one.
    pub shared_group: Option<SharedGroupLoss>,
    /// Seconds between sampler samples.
    pub sample_interval_s: f64,
}

pub fn build(i: Inputs<'_>) -> Summary {
    let ctx = i.ctx;
    let scenario = &ctx.scenario;
    let measured_s = scenario.duration.as_secs_f64();
    let tally = i.tally;
    let loss_ratio = if tally.expected == 0 {
        0.0
    } else {
        tally.lost() as f64 / tally.expected as f64
    };
    let sampling = |st: &crate::load::samplers::SamplerStats| {
        Some(Sampling {
            taken: st.taken,
            failed: st.failed,
            thinned: st.thinned,
            interval_s: i.sample_interval_s,
        })
    };
    let kafka = i.sampled.lag.as_ref().map(|samples| KafkaSummary {
        sampling: sampling(&i.sampled.lag_stats),
        ..kafka_summary(samples)
    });
    let db = i.sampled.db.as_ref().map(|samples| {
        let rows: Vec<RowsSample> = samples
            .iter()
            .map(|s| RowsSample {
                t_s: s.t_s,
                rows_per_s: s.rows_per_s,
            })
            .collect();
        let peak = rows.iter().map(|r| r.rows_per_s).fold(0.0, f64::max);
        let active: Vec<f64> = rows
            .iter()
            .filter(|r| {
                r.t_s >= i.schedule.send_start_us as f64 / 1e6
                    && r.t_s <= i.schedule.send_end_us as f64 / 1e6
            })
            .map(|r| r.rows_per_s)
            .collect();
        let mean = if active.is_empty() {
            0.0
        } else {
            active.iter().sum::<f64>() / active.len() as f64
        };
        let audit = i.sampled.audit.as_ref().map(|a| DbAudit {
            rows_for_run: a.rows_for_run.max(0) as u64,
            sent: i.totals.sent,
            receipted: ctx.receipts.then_some(i.totals.receipts),
            missing: i
                .totals
                .sent
                .saturating_sub(a.distinct_for_run.max(0) as u64),
            duplicates: a.duplicates.max(0) as u64,
        });
        DbSummary {
            rows_per_s: rows,
            peak_rows_per_s: peak,
            mean_rows_per_s: mean,
            audit,
            sampling: sampling(&i.sampled.db_stats),
        }
    });
    let latency = LatencySummary {
        corrected: LatencyStats::from_histogram(&i.totals.corrected),
        raw: LatencyStats::from_histogram(&i.totals.raw),
        receipt: ctx
            .receipts
            .then(|| LatencyStats::from_histogram(&i.totals.receipt)),
    };
    let relaxed = std::sync::atomic::Ordering::Relaxed;
    let subscribed = ctx.recorder.subscribed.load(relaxed);
    let harness = verdicts::harness_load(&i.totals.send_lag, &i.loop_lag);
    let slo = verdicts::verdicts(
        ctx,
        &Measured {
            latency: &latency,
            loss: loss_ratio,
            duplicates: tally.duplicated,
            max_lag: kafka.as_ref().map(|k| k.max_lag),
            subscribed,
            unsent: ctx.recorder.unsent_backlog.load(relaxed),
            harness: &harness,
        },
    );
    let passed = slo.iter().all(|v| v.passed);
    let stack = i.target.stack.as_ref().map(|info| StackSummary {
        brokers: info.brokers.len() as u32,
        partitions: info.partitions,
        replication_factor: u32::from(info.replication_factor),
        servers: info.servers.len() as u32,
        persist: info.persist,
        server_impl: info.server_impl,
        shared_fanout_group: info.shared_fanout_group,
        kafka_version: info.kafka_version.clone(),
        topic: info.topic.clone(),
    });
    let mut notes = i.sampled.notes;
    if let Some(f) = &i.shared_group {
        notes.push(crate::load::shared_group::note(f));
    }
    let backlog = ctx
        .recorder
        .unsent_backlog
        .load(std::sync::atomic::Ordering::Relaxed);
    if backlog > 0 {
        notes.push(format!(
            "{backlog} open-model sends were still due when sending ended (the virtual users had fallen behind schedule); they were not sent"
        ));
    }
    let corrupt = ctx
        .recorder
        .corrupt
        .load(std::sync::atomic::Ordering::Relaxed);
    if corrupt > 0 {
        notes.push(format!("{corrupt} deliveries carried a stamp this run never issued (mangled in transit); they were ignored"));
    }
    if tally.arrivals > tally.delivered + tally.duplicated {
        notes.push(format!(
            "{} deliveries arrived outside a recipient's membership (around joins and leaves); they are timed but not counted as expected",
            tally.arrivals - tally.delivered - tally.duplicated
        ));
    }
    Summary {
        schema_version: SCHEMA_VERSION,
        tool: ToolInfo::current(),
        run_id: ctx.run_id.clone(),
        scenario: ScenarioInfo {
            name: scenario.name.clone(),
            file: Some(scenario.source.display().to_string()),
            description: (!scenario.description.is_empty()).then(|| scenario.description.clone()),
            definition: serde_json::to_value(scenario).unwrap_or(serde_json::Value::Null),
        },
        started_at: rfc3339(i.started_at),
        finished_at: rfc3339(chrono::Utc::now()),
        phases: Phases {
            ramp_s: i.ramp_end_s,
            warmup_s: scenario.warmup.as_secs_f64(),
            measured_s,
            grace_s: scenario.grace.as_secs_f64(),
        },
        target: TargetSummary {
            kind: if i.target.stack.is_some() {
                TargetKind::Local
            } else {
                TargetKind::External
            },
            urls: i.target.urls.clone(),
            stack,
        },
        environment: environment(),
        throughput: Throughput {
            sent: i.totals.sent,
            delivered: i.totals.delivered,
            sent_per_s: i.totals.measured_sent as f64 / measured_s.max(1e-9),
            delivered_per_s: i.totals.measured_delivered as f64 / measured_s.max(1e-9),
            receipts: ctx.receipts.then_some(i.totals.receipts),
        },
        latency,
        integrity: Integrity {
            expected: tally.expected,
            delivered: tally.delivered,
            lost: tally.lost(),
            duplicated: tally.duplicated,
            out_of_order: tally.out_of_order,
            loss_ratio,
            shared_group: i.shared_group.clone(),
        },
        sessions: Sessions {
            planned: ctx.plan.users.len() as u64,
            connected: ctx
                .recorder
                .connected
                .load(std::sync::atomic::Ordering::Relaxed),
            subscribed: Some(subscribed),
            peak: ctx
                .recorder
                .peak_sessions
                .load(std::sync::atomic::Ordering::Relaxed),
            connect_errors: ctx
                .recorder
                .connect_errors
                .load(std::sync::atomic::Ordering::Relaxed),
            errors: ctx
                .recorder
                .errors
                .load(std::sync::atomic::Ordering::Relaxed),
            disconnects: ctx
                .recorder
                .disconnects
                .load(std::sync::atomic::Ordering::Relaxed),
        },
        timeline: i.timeline,
        kafka,
        db,
        slo,
        passed,
        harness: Some(harness),
        resources: Some(i.resources),
        files: Files {
            histogram_log: None,
            charts: Vec::new(),
        },
        notes,
        warnings: ctx
            .warnings
            .summary()
            .into_iter()
            .map(|c| WarningCount {
                cause: c.cause,
                count: c.count,
                first: c.first,
                first_t_s: c.first_t_s,
            })
            .collect(),
        faults: None,
        shards: None,
    }
}

fn kafka_summary(samples: &[crate::load::samplers::LagSample]) -> KafkaSummary {
    let mut groups: BTreeMap<String, Vec<&crate::load::samplers::LagSample>> = BTreeMap::new();
    for s in samples {
        groups.entry(s.group.clone()).or_default().push(s);
    }
    let groups: Vec<GroupLag> = groups
        .into_iter()
        .map(|(group, samples)| GroupLag {
            max_lag: samples
                .iter()
                .map(|s| s.max.max(0) as u64)
                .max()
                .unwrap_or(0),
            final_lag: samples.last().map_or(0, |s| s.total.max(0) as u64),
            samples: samples
                .iter()
                .map(|s| LagSample {
                    t_s: s.t_s,
                    total_lag: s.total.max(0) as u64,
                    partitions: s
                        .partitions
                        .iter()
                        .map(|(p, lag)| PartitionLag {
                            partition: *p,
                            lag: (*lag).max(0) as u64,
                        })
                        .collect(),
                })
                .collect(),
            group,
        })
        .collect();
    let max_lag = groups.iter().map(|g| g.max_lag).max().unwrap_or(0);
    KafkaSummary {
        groups,
        max_lag,
        sampling: None,
    }
}

/// This machine as a run's summary describes it.
pub fn environment() -> Environment {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let memory_bytes = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| {
            l.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string());
    Environment {
        hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
        os,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_bytes,
        stompede_version: env!("CARGO_PKG_VERSION").to_string(),
        rustc: None,
    }
}
