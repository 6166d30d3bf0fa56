//! Turning a finished run into the report model (`crate::report::Summary`): figures,
//! SLO verdicts, environment, resources; and the HdrHistogram interval log.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use crate::load::integrity::Tally;
use crate::load::stats::Totals;
use crate::load::target::{Resolved, Sampled};
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
    let kafka = i.sampled.lag.as_ref().map(|samples| kafka_summary(samples));
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
        }
    });
    let latency = LatencySummary {
        corrected: LatencyStats::from_histogram(&i.totals.corrected),
        raw: LatencyStats::from_histogram(&i.totals.raw),
        receipt: ctx
            .receipts
            .then(|| LatencyStats::from_histogram(&i.totals.receipt)),
    };
    let slo = verdicts(
        ctx,
        &latency,
        loss_ratio,
        tally.duplicated,
        kafka.as_ref().map(|k| k.max_lag),
    );
    let passed = slo.iter().all(|v| v.passed);
    let stack = i.target.stack.as_ref().map(|info| StackSummary {
        brokers: info.brokers.len() as u32,
        partitions: info.partitions,
        replication_factor: u32::from(info.replication_factor),
        servers: info.servers.len() as u32,
        persist: info.persist,
        kafka_version: info.kafka_version.clone(),
        topic: info.topic.clone(),
    });
    let resources = Some(Resources {
        harness_peak_rss_bytes: peak_rss(None).unwrap_or(0),
        servers: i
            .target
            .stack
            .iter()
            .flat_map(|info| info.servers.iter())
            .filter_map(|s| {
                Some(ServerResources {
                    instance_id: s.instance_id.clone(),
                    peak_rss_bytes: peak_rss(Some(s.pid))?,
                })
            })
            .collect(),
    });
    let mut notes = i.sampled.notes;
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
        },
        sessions: Sessions {
            planned: ctx.plan.users.len() as u64,
            connected: ctx
                .recorder
                .connected
                .load(std::sync::atomic::Ordering::Relaxed),
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
        resources,
        files: Files {
            histogram_log: None,
            charts: Vec::new(),
        },
        notes,
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
    KafkaSummary { groups, max_lag }
}

fn verdicts(
    ctx: &RunContext,
    latency: &LatencySummary,
    loss: f64,
    duplicates: u64,
    max_lag: Option<u64>,
) -> Vec<SloVerdict> {
    let slo = &ctx.scenario.slo;
    let ms = |us: u64| us as f64 / 1000.0;
    let mut v = Vec::new();
    if let Some(limit) = slo.p50_ms {
        v.push(SloVerdict::new(
            "p50_ms",
            Bound::AtMost,
            limit,
            ms(latency.corrected.p50_us),
            "ms",
        ));
    }
    if let Some(limit) = slo.p99_ms {
        v.push(SloVerdict::new(
            "p99_ms",
            Bound::AtMost,
            limit,
            ms(latency.corrected.p99_us),
            "ms",
        ));
    }
    if let Some(limit) = slo.p999_ms {
        v.push(SloVerdict::new(
            "p999_ms",
            Bound::AtMost,
            limit,
            ms(latency.corrected.p999_us),
            "ms",
        ));
    }
    if let Some(limit) = slo.max_loss {
        v.push(SloVerdict::new(
            "max_loss",
            Bound::AtMost,
            limit,
            loss,
            "ratio",
        ));
    }
    if let Some(limit) = slo.max_duplicates {
        v.push(SloVerdict::new(
            "max_duplicates",
            Bound::AtMost,
            limit as f64,
            duplicates as f64,
            "messages",
        ));
    }
    if let Some(limit) = slo.max_kafka_lag {
        // Without lag samples the SLO cannot be shown to hold: it fails, measured -1.
        let verdict = match max_lag {
            Some(lag) => SloVerdict::new(
                "max_kafka_lag",
                Bound::AtMost,
                limit as f64,
                lag as f64,
                "messages",
            ),
            None => {
                let mut verdict = SloVerdict::new(
                    "max_kafka_lag",
                    Bound::AtMost,
                    limit as f64,
                    -1.0,
                    "messages (not sampled)",
                );
                verdict.passed = false;
                verdict
            }
        };
        v.push(verdict);
    }
    v
}

fn environment() -> Environment {
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

/// Peak resident set size (VmHWM) of `pid`, or of this process.
pub fn peak_rss(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Writes the per-second corrected-latency histograms as an HdrHistogram interval log
/// (values in microseconds); returns the file name.
pub fn write_histogram_log(
    dir: &Path,
    intervals: &[(f64, Histogram<u64>)],
) -> std::io::Result<String> {
    std::fs::create_dir_all(dir)?;
    let name = "latency.hlog";
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    {
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment(
                "stompede end-to-end latency (corrected), microseconds, one interval per second",
            )
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut out, &mut serializer)?;
        for (start, h) in intervals {
            let start = Duration::from_secs_f64(start.max(0.0));
            writer
                .write_histogram(h, start, Duration::from_secs(1), None)
                .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        }
    }
    std::fs::write(dir.join(name), out)?;
    Ok(name.to_string())
}
