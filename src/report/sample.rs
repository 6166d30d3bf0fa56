//! A realistic example [`Summary`], for tests, documentation and renderer previews.
//!
//! It describes a 3-broker, 2-server local run of a town-hall scenario with made-up but
//! plausible figures. The latency figures come from real HdrHistograms filled with a
//! deterministic pseudo-random sample, so they exercise [`LatencyStats::from_histogram`].

use hdrhistogram::Histogram;
use serde_json::json;

use super::model::*;

/// Small deterministic generator (xorshift64*), so the sample is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (v >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal, Box-Muller.
    fn normal(&mut self) -> f64 {
        let u = self.next().max(1e-12);
        let v = self.next();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

fn latency_histograms() -> (Histogram<u64>, Histogram<u64>, Histogram<u64>) {
    let mut rng = Rng(0x5EED_CAFE_F00D_1234);
    let new =
        || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
    let (mut corrected, mut raw, mut receipt) = (new(), new(), new());
    for _ in 0..200_000 {
        // Log-normal body around 2.5 ms, a rare tail of pauses up to ~80 ms.
        let mut us = 2_500.0 * (0.45 * rng.normal()).exp();
        if rng.next() < 0.002 {
            us += 15_000.0 + 65_000.0 * rng.next();
        }
        let raw_us = us as u64;
        // Sends delayed behind a pause add the wait to the corrected figure.
        let lag = if rng.next() < 0.004 {
            (rng.next() * 20_000.0) as u64
        } else {
            0
        };
        raw.saturating_record(raw_us.max(1));
        corrected.saturating_record((raw_us + lag).max(1));
        if rng.next() < 0.05 {
            receipt.saturating_record(((1_800.0 * (0.35 * rng.normal()).exp()) as u64).max(1));
        }
    }
    (corrected, raw, receipt)
}

impl Summary {
    /// A complete, realistic summary of a local run that passed its SLOs.
    pub fn sample() -> Summary {
        let run_id = "r20250131T120000Z-7f3a".to_string();
        let (ramp, warmup, measured, grace) = (10.0, 10.0, 60.0, 5.0);
        let total = (ramp + warmup + measured + grace) as u32;
        let users = 2_000u64;
        let fanout = 40.0;
        let mut rng = Rng(42);

        let mut timeline = Vec::new();
        let mut kafka_samples: [Vec<LagSample>; 2] = [Vec::new(), Vec::new()];
        let mut rows = Vec::new();
        for s in 1..=total {
            let t = s as f64;
            let phase = if t <= ramp {
                Phase::Ramp
            } else if t <= ramp + warmup {
                Phase::Warmup
            } else if t <= ramp + warmup + measured {
                Phase::Measure
            } else {
                Phase::Grace
            };
            let sessions = if phase == Phase::Ramp {
                users * s as u64 / ramp as u64
            } else {
                users
            };
            let sending = phase != Phase::Grace;
            let sent = if sending {
                (sessions as f64 * 0.5 * (1.0 + 0.04 * rng.normal())) as u64
            } else {
                0
            };
            // A Kafka rebalance hiccup around 40 s delays deliveries and then catches up.
            let hiccup = (38.0..=41.0).contains(&t);
            let delivered = match (phase, hiccup) {
                (Phase::Grace, _) if t > ramp + warmup + measured + 1.0 => 0,
                (_, true) => (sent as f64 * fanout * 0.55) as u64,
                _ => (sent as f64 * fanout * (1.0 + 0.02 * rng.normal())) as u64,
            };
            let p50 = 2_400.0 * (1.0 + 0.05 * rng.normal()) * if hiccup { 3.0 } else { 1.0 };
            let p99 = 9_000.0 * (1.0 + 0.1 * rng.normal()) * if hiccup { 6.0 } else { 1.0 };
            let has_latency = delivered > 0;
            timeline.push(TimelinePoint {
                t_s: t,
                interval_s: 1.0,
                phase,
                sent,
                delivered,
                sessions,
                errors: u64::from(s == 39),
                p50_us: has_latency.then_some(p50 as u64),
                p99_us: has_latency.then_some(p99 as u64),
                harness_rss_bytes: Some((400 + (s % 7) as u64) * 1024 * 1024),
            });
            for (g, samples) in kafka_samples.iter_mut().enumerate() {
                let base = if hiccup {
                    2_500.0 + 400.0 * g as f64
                } else {
                    40.0
                };
                let partitions: Vec<PartitionLag> = (0..6)
                    .map(|p| PartitionLag {
                        partition: p,
                        lag: (base / 6.0 * (1.0 + 0.3 * rng.next())) as u64,
                    })
                    .collect();
                let total_lag = partitions.iter().map(|p| p.lag).sum();
                samples.push(LagSample {
                    t_s: t,
                    total_lag,
                    partitions,
                });
            }
            rows.push(RowsSample {
                t_s: t,
                rows_per_s: sent as f64 * (1.0 + 0.01 * rng.normal()),
            });
        }

        let measured_points: Vec<&TimelinePoint> = timeline
            .iter()
            .filter(|p| p.phase == Phase::Measure)
            .collect();
        let sent: u64 = measured_points.iter().map(|p| p.sent).sum();
        let delivered: u64 = measured_points.iter().map(|p| p.delivered).sum();
        let sent_all: u64 = timeline.iter().map(|p| p.sent).sum();
        let lost = 12;

        let groups: Vec<GroupLag> = kafka_samples
            .into_iter()
            .enumerate()
            .map(|(i, samples)| GroupLag {
                group: format!("stompede-server-{}", i + 1),
                max_lag: samples.iter().map(|s| s.total_lag).max().unwrap_or(0),
                final_lag: samples.last().map(|s| s.total_lag).unwrap_or(0),
                samples,
            })
            .collect();
        let max_lag = groups.iter().map(|g| g.max_lag).max().unwrap_or(0);
        let peak_rows = rows.iter().map(|r| r.rows_per_s).fold(0.0, f64::max);
        let mean_rows = rows.iter().map(|r| r.rows_per_s).sum::<f64>() / rows.len() as f64;

        let (corrected, raw, receipt) = latency_histograms();
        let corrected = LatencyStats::from_histogram(&corrected);
        let loss_ratio = lost as f64 / (delivered + lost) as f64;
        let slo = vec![
            SloVerdict::new(
                "p99_ms",
                Bound::AtMost,
                50.0,
                corrected.p99_us as f64 / 1000.0,
                "ms",
            ),
            SloVerdict::new("loss_ratio", Bound::AtMost, 0.0001, loss_ratio, "ratio"),
            SloVerdict::new(
                "max_kafka_lag",
                Bound::AtMost,
                10_000.0,
                max_lag as f64,
                "messages",
            ),
        ];
        let passed = slo.iter().all(|v| v.passed);

        Summary {
            schema_version: SCHEMA_VERSION,
            tool: ToolInfo::current(),
            run_id: run_id.clone(),
            scenario: ScenarioInfo {
                name: "town-hall".into(),
                file: Some("scenarios/town-hall.toml".into()),
                description: Some("One town-hall room of 1,000 members, group rooms of 50 and 1:1 rooms <all busy>".into()),
                definition: json!({
                    "users": users,
                    "rooms": [
                        {"kind": "town-hall", "count": 1, "members": 1000},
                        {"kind": "group", "count": 20, "members": 50},
                        {"kind": "direct", "count": 500, "members": 2}
                    ],
                    "arrival": {"model": "open", "rate_per_user_s": 0.5},
                    "message": {"bytes": 120},
                    "ramp_s": ramp, "warmup_s": warmup, "duration_s": measured, "grace_s": grace,
                    "slo": {"p99_ms": 50, "loss_ratio": 0.0001, "max_kafka_lag": 10000}
                }),
            },
            started_at: "2025-01-31T12:00:00.000Z".into(),
            finished_at: "2025-01-31T12:01:25.412Z".into(),
            phases: Phases { ramp_s: ramp, warmup_s: warmup, measured_s: measured, grace_s: grace },
            target: TargetSummary {
                kind: TargetKind::Local,
                urls: vec!["ws://127.0.0.1:41001/ws-stomp".into(), "ws://127.0.0.1:41002/ws-stomp".into()],
                stack: Some(StackSummary {
                    brokers: 3,
                    partitions: 6,
                    replication_factor: 3,
                    servers: 2,
                    persist: Persist::Producer,
                    server_impl: ServerImpl::Stompede,
                    shared_fanout_group: false,
                    kafka_version: "3.9.0".into(),
                    topic: "chat.messages".into(),
                }),
            },
            environment: Environment {
                hostname: "bench-01".into(),
                os: "linux x86_64 (Debian GNU/Linux 12)".into(),
                cpus: 16,
                memory_bytes: 64 * 1024 * 1024 * 1024,
                stompede_version: env!("CARGO_PKG_VERSION").into(),
                rustc: Some("rustc 1.85.0".into()),
            },
            throughput: Throughput {
                sent,
                delivered,
                sent_per_s: sent as f64 / measured,
                delivered_per_s: delivered as f64 / measured,
                receipts: Some(sent),
            },
            latency: LatencySummary {
                corrected,
                raw: LatencyStats::from_histogram(&raw),
                receipt: Some(LatencyStats::from_histogram(&receipt)),
            },
            integrity: Integrity { expected: delivered + lost, delivered, lost, duplicated: 3, out_of_order: 0, loss_ratio, shared_group: None },
            sessions: Sessions { planned: users, connected: users, peak: users, connect_errors: 0, errors: 1, disconnects: 0, subscribed: Some(users) },
            timeline,
            kafka: Some(KafkaSummary {
                groups,
                max_lag,
                sampling: Some(Sampling { taken: 85, failed: 0, thinned: 0, interval_s: 1.0 }),
            }),
            db: Some(DbSummary {
                rows_per_s: rows,
                peak_rows_per_s: peak_rows,
                mean_rows_per_s: mean_rows,
                audit: Some(DbAudit { rows_for_run: sent_all, sent: sent_all, receipted: Some(sent_all), missing: 0, duplicates: 0 }),
                sampling: Some(Sampling { taken: 85, failed: 0, thinned: 0, interval_s: 1.0 }),
            }),
            slo,
            passed,
            harness: Some(HarnessLoad {
                send_lag_p99_us: Some(850),
                send_lag_max_us: Some(4_100),
                loop_lag_p99_us: Some(1_200),
                loop_lag_max_us: Some(6_300),
                limit_ms: 50.0,
                bound: false,
            }),
            resources: Some(Resources {
                harness_peak_rss_bytes: 412 * 1024 * 1024,
                harness_cpu_s: Some(61.5),
                basis: Some("this run only: CPU seconds from its start to its end, peak RSS sampled once a second".into()),
                servers: vec![
                    ServerResources { instance_id: "server-1".into(), peak_rss_bytes: 180 * 1024 * 1024, cpu_s: Some(48.2), cpu_s_per_million: Some(16.07) },
                    ServerResources { instance_id: "server-2".into(), peak_rss_bytes: 176 * 1024 * 1024, cpu_s: Some(47.9), cpu_s_per_million: Some(15.97) },
                ],
                brokers: vec![
                    ServerResources { instance_id: "broker 1".into(), peak_rss_bytes: 520 * 1024 * 1024, cpu_s: Some(30.0), cpu_s_per_million: Some(10.0) },
                ],
                deliveries: Some(3_000_000),
                harness_cpu_s_per_million: Some(20.5),
            }),
            files: Files { histogram_log: Some("latency.hlog".into()), charts: Vec::new() },
            notes: vec![format!("run {run_id}: one STOMP ERROR frame during the Kafka rebalance at 39 s")],
            warnings: vec![WarningCount {
                cause: "ERROR from the server: slow consumer".into(),
                count: 1,
                first: "user 412".into(),
                first_t_s: 39.2,
            }],
            faults: None,
            shards: None,
        }
    }
}

impl Summary {
    /// [`Summary::sample`] of a run with four faults on its timeline, as the run engine
    /// reports them:
    ///
    /// 1. `kill-broker` at 20.2 s: one of the 3 brokers dies; no delivery reaches any user
    ///    for 11.8 s while the partitions it led elect new leaders, and 37 RECEIPTs time out;
    /// 2. `kill-server` of `s2` at 45.1 s: its 1,000 users lose their sessions and come back
    ///    through `s1` (12 SENDs fail on the broken sessions);
    /// 3. `pause-db` from 55.2 s to 63.2 s: no row is written, RECEIPTs wait, deliveries go on;
    /// 4. an `exec` fault whose command failed.
    ///
    /// The timeline, the database rows and the totals show the same events. No receipted
    /// message is lost or missing in the database.
    pub fn sample_with_faults() -> Summary {
        let mut s = Summary::sample();
        s.scenario.name = "town-hall-faults".into();
        s.scenario.file = Some("scenarios/town-hall-faults.toml".into());
        s.scenario.description = Some(
            "The town-hall load while a broker and a server are killed and PostgreSQL pauses"
                .into(),
        );
        let exec = "./faults/throttle.sh --iface lo 2>&1 > /tmp/throttle.log";
        s.scenario.definition["faults"] = json!([
            {"kind": "kill-broker", "at_s": 20, "broker": "leader"},
            {"kind": "kill-server", "at_s": 45, "server": 2},
            {"kind": "pause-db", "at_s": 55, "duration_s": 8},
            {"kind": "exec", "at_s": 70, "command": exec}
        ]);
        s.scenario.definition["slo"] = json!({"loss_ratio": 0.0001, "max_kafka_lag": 10000});

        // Fault 1: nothing delivered from 20.1 s to 31.9 s, then the backlog in 3 s.
        let blackout = 21.0..=31.0;
        let backlog: u64 = s
            .timeline
            .iter()
            .filter(|p| blackout.contains(&p.t_s))
            .map(|p| p.delivered)
            .sum();
        let catch_up = [
            (32.0, 0.45, 5_800_000, 11_600_000),
            (33.0, 0.40, 1_900_000, 4_200_000),
            (34.0, 0.15, 40_000, 310_000),
        ];
        // Fault 2: half the users are away for about a second and a half.
        let server_kill = [
            (46.0, 0.55, 0.70, 1_180, 180_000),
            (47.0, 0.97, 0.98, 1_990, 45_000),
        ];
        for p in &mut s.timeline {
            if blackout.contains(&p.t_s) {
                p.delivered = 0;
                p.p50_us = None;
                p.p99_us = None;
            }
            if let Some(&(_, share, p50, p99)) = catch_up.iter().find(|c| c.0 == p.t_s) {
                p.delivered += (backlog as f64 * share) as u64;
                p.p50_us = Some(p50);
                p.p99_us = Some(p99);
            }
            if let Some(&(_, delivered, sent, sessions, p99)) =
                server_kill.iter().find(|c| c.0 == p.t_s)
            {
                p.delivered = (p.delivered as f64 * delivered) as u64;
                p.sent = (p.sent as f64 * sent) as u64;
                p.sessions = sessions;
                p.p99_us = Some(p99);
            }
        }
        if let Some(k) = &mut s.kafka {
            // The killed server's group is not sampled once its instance is gone.
            if let Some(g) = k.groups.get_mut(1) {
                g.samples.retain(|x| x.t_s <= 45.0);
                g.final_lag = g.samples.last().map_or(0, |x| x.total_lag);
            }
        }
        if let Some(db) = &mut s.db {
            let mut held = 0.0;
            for r in &mut db.rows_per_s {
                // Rows wait for Kafka's acknowledgement (fault 1) and for PostgreSQL (fault 3).
                if blackout.contains(&r.t_s) || (56.0..=63.0).contains(&r.t_s) {
                    held += r.rows_per_s;
                    r.rows_per_s = 0.0;
                } else if r.t_s == 32.0 || r.t_s == 64.0 {
                    r.rows_per_s += held;
                    held = 0.0;
                }
            }
            db.peak_rows_per_s = db
                .rows_per_s
                .iter()
                .map(|r| r.rows_per_s)
                .fold(0.0, f64::max);
            db.mean_rows_per_s = db.rows_per_s.iter().map(|r| r.rows_per_s).sum::<f64>()
                / db.rows_per_s.len() as f64;
        }

        let measured = s.phases.measured_s;
        let sent: u64 = s.measured_timeline().map(|p| p.sent).sum();
        let delivered: u64 = s.measured_timeline().map(|p| p.delivered).sum();
        let sent_all: u64 = s.timeline.iter().map(|p| p.sent).sum();
        let (timeouts, send_failures) = (37, 12);
        let receipted = sent_all - timeouts - send_failures;
        s.throughput.sent = sent;
        s.throughput.delivered = delivered;
        s.throughput.sent_per_s = sent as f64 / measured;
        s.throughput.delivered_per_s = delivered as f64 / measured;
        s.throughput.receipts = Some(sent - timeouts - send_failures);
        let lost = s.integrity.lost;
        s.integrity.delivered = delivered;
        s.integrity.expected = delivered + lost;
        s.integrity.loss_ratio = lost as f64 / (delivered + lost) as f64;
        s.sessions.disconnects = 1_000;
        if let Some(audit) = s.db.as_mut().and_then(|d| d.audit.as_mut()) {
            // 30 of the SENDs whose RECEIPT timed out were written all the same.
            audit.rows_for_run = receipted + 30;
            audit.sent = sent_all;
            audit.receipted = Some(receipted);
        }
        s.slo.retain(|v| v.name != "p99_ms");
        for v in &mut s.slo {
            if v.name == "loss_ratio" {
                *v = SloVerdict::new(
                    "loss_ratio",
                    v.bound,
                    v.limit,
                    s.integrity.loss_ratio,
                    "ratio",
                );
            }
        }
        s.passed = s.slo.iter().all(|v| v.passed);

        let quiet = FaultReport {
            index: 0,
            kind: String::new(),
            target: String::new(),
            planned_s: 0.0,
            at_s: None,
            end_s: None,
            ok: true,
            error: None,
            affected: "all users".into(),
            affected_users: 2_000,
            outage: None,
            p99_before_ms: None,
            p99_recovered_s: None,
            send_failures: 0,
            receipt_timeouts: 0,
            receipt_max_ms: None,
            disconnected: 0,
            reconnected: 0,
            reconnect_ms: None,
            lost_in_window: None,
            others: None,
        };
        s.faults = Some(FaultsSummary {
            injected: vec![
                FaultReport {
                    index: 1,
                    kind: "kill-broker".into(),
                    target: "broker 2 (leader of town-hall-0's partition 1)".into(),
                    planned_s: 20.0,
                    at_s: Some(20.2),
                    outage: Some(Outage {
                        start_s: 20.1,
                        end_s: 31.9,
                        length_s: 11.8,
                        first_delivery_after_s: 11.7,
                        recovered: true,
                    }),
                    p99_before_ms: Some(9.1),
                    p99_recovered_s: Some(14.0),
                    receipt_timeouts: timeouts,
                    receipt_max_ms: Some(11_650.0),
                    lost_in_window: Some(9),
                    ..quiet.clone()
                },
                FaultReport {
                    index: 2,
                    kind: "kill-server".into(),
                    target: "s2".into(),
                    planned_s: 45.0,
                    at_s: Some(45.1),
                    affected: "users of s2".into(),
                    affected_users: 1_000,
                    outage: Some(Outage {
                        start_s: 45.11,
                        end_s: 46.53,
                        length_s: 1.42,
                        first_delivery_after_s: 1.43,
                        recovered: true,
                    }),
                    p99_before_ms: Some(8.7),
                    p99_recovered_s: Some(3.0),
                    send_failures,
                    receipt_max_ms: Some(95.0),
                    disconnected: 1_000,
                    reconnected: 1_000,
                    reconnect_ms: Some(ReconnectTimes {
                        count: 1_000,
                        p50_ms: 1_210.0,
                        p99_ms: 1_890.0,
                        max_ms: 2_340.0,
                    }),
                    lost_in_window: Some(0),
                    others: Some(Others {
                        who: "users of s1 among themselves".into(),
                        p99_before_ms: Some(8.9),
                        p99_during_ms: Some(10.2),
                    }),
                    ..quiet.clone()
                },
                FaultReport {
                    index: 3,
                    kind: "pause-db".into(),
                    target: "PostgreSQL".into(),
                    planned_s: 55.0,
                    at_s: Some(55.2),
                    end_s: Some(63.2),
                    p99_before_ms: Some(9.3),
                    p99_recovered_s: Some(1.0),
                    receipt_max_ms: Some(8_150.0),
                    lost_in_window: Some(0),
                    ..quiet.clone()
                },
                FaultReport {
                    index: 4,
                    kind: "exec".into(),
                    target: exec.into(),
                    planned_s: 70.0,
                    at_s: Some(70.0),
                    ok: false,
                    error: Some(
                        "exit status 2: RTNETLINK answers: Operation not permitted\n\
                         We have an error talking to the kernel"
                            .into(),
                    ),
                    ..quiet
                },
            ],
            durability: Durability {
                receipted,
                receipted_lost: 0,
                receipted_missing_in_db: Some(0),
            },
            missed_while_disconnected: 25_874,
            unsent_while_disconnected: 604,
            lost_in_fault_windows: Some(9),
            lost_outside_fault_windows: Some(3),
        });
        s
    }
}
