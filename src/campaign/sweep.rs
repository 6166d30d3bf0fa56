//! `stompede sweep`: one scenario over a matrix of local stack shapes (brokers,
//! partitions, servers, persistence), each cell one run or, with `--capacity`, one
//! capacity search.
//!
//! The sweep starts its own stack in the state directory (a running one is refused: the
//! sweep would reshape it under its owner) and reshapes it between cells through
//! [`crate::stack::Stack::reshape`], restarting only what must change. Before each run
//! the shape is read back from the brokers' metadata and from each server's
//! `stompede_server_info` ([`mismatch`]); a stack that reads back differently from what
//! was asked for ends the sweep, saying how. Every run starts from an empty topic and
//! history table and freshly started servers. With one repeat the cells run in matrix order, sorted so
//! the broker count (a whole restart) changes least often; with `--repeat N` each round
//! runs every cell once in a freshly shuffled order, so drift on a shared machine spreads
//! over all cells instead of masquerading as a difference between them.
//!
//! Output `<out>/sweep-<scenario>-<UTC timestamp>/`: each run's report in its own
//! directory, `sweep.json` (rewritten after every run, so an interrupted sweep keeps what
//! it measured), `sweep.html` and charts ([`crate::report::sweep`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::load::RunOptions;
use crate::report::compare::CapacityFigures;
use crate::report::sweep::{
    write_sweep, write_sweep_json, Axis, CellRun, Execution, ObservedServer, ObservedShape, Shape,
    Sweep, SweepCell, SWEEP_KIND, SWEEP_SCHEMA_VERSION,
};
use crate::report::{rfc3339, Outcome, Persist, ReportError, ToolInfo};
use crate::scenario::{LocalStack, Scenario, TargetKind, MAX_PARTITIONS, MAX_SERVERS};
use crate::stack::{self, Reshaped, ServerImpl, StackError, StackInfo, StackOptions};

use super::capacity::{self, CapacityOptions};

/// Most cells a sweep may have.
pub const MAX_CELLS: usize = 64;
/// Most repeats per cell.
pub const MAX_REPEAT: u32 = 20;
/// The axes `--set` knows.
pub const AXES: [&str; 5] = ["brokers", "partitions", "servers", "persist", "server_impl"];

/// How to sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub axes: Vec<Axis>,
    pub repeat: u32,
    /// Seed of the shuffled order; drawn when `None`.
    pub seed: Option<u64>,
    /// `Some`: each cell is a capacity search with these settings (their `out` and
    /// `run.out` are replaced by the cell's directory).
    pub capacity: Option<CapacityOptions>,
    /// The sweep lands in `<out>/sweep-<scenario>-<UTC timestamp>/`.
    pub out: PathBuf,
    /// How each run goes (its `out` is replaced by the run's directory).
    pub run: RunOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("{0}")]
    BadInput(String),
    #[error("the local stack did not come up: {0}")]
    Stack(#[from] StackError),
    #[error("cannot write the sweep report to {}: {source}", .dir.display())]
    Report { dir: PathBuf, source: ReportError },
}

impl SweepError {
    pub fn is_bad_input(&self) -> bool {
        matches!(self, SweepError::BadInput(_))
    }
}

/// A finished (or stopped) sweep and where it was written.
pub struct SweepOutcome {
    pub sweep: Sweep,
    pub dir: PathBuf,
    /// Why the sweep's stack could not be taken down at the end, if it could not.
    pub down_error: Option<String>,
}

/// `partitions=1,3,6` → an axis; names and values are checked against what the stack
/// can be.
pub fn parse_set(text: &str) -> Result<Axis, String> {
    let Some((name, values)) = text.split_once('=') else {
        return Err(format!(
            "--set {text:?}: write NAME=V1,V2,… e.g. --set partitions=1,3,6 (names: {})",
            AXES.join(", ")
        ));
    };
    let name = name.trim().to_ascii_lowercase();
    if !AXES.contains(&name.as_str()) {
        return Err(format!(
            "--set {text:?}: unknown axis {name:?}; the stack can be swept over {}",
            AXES.join(", ")
        ));
    }
    // Numbers in their plain form, so `3` and `03` are one value.
    let values: Vec<String> = values
        .split(',')
        .map(|v| v.trim().to_ascii_lowercase())
        .map(|v| v.parse::<u32>().map_or(v, |n| n.to_string()))
        .collect();
    if values.iter().any(String::is_empty) {
        return Err(format!(
            "--set {text:?}: an empty value; write e.g. {name}=1,3"
        ));
    }
    for v in &values {
        check_value(&name, v).map_err(|why| format!("--set {text:?}: {v:?} {why}"))?;
    }
    let mut unique = values.clone();
    unique.sort();
    unique.dedup();
    if unique.len() != values.len() {
        return Err(format!("--set {text:?}: a value is given twice"));
    }
    Ok(Axis { name, values })
}

fn check_value(axis: &str, v: &str) -> Result<(), String> {
    let number = |lo: u32, hi: u32| match v.parse::<u32>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(()),
        _ => Err(format!("must be a whole number from {lo} to {hi}")),
    };
    match axis {
        "brokers" => match v {
            "1" | "3" => Ok(()),
            _ => Err("must be 1 (one combined node) or 3 (a 3-voter quorum, RF 3)".into()),
        },
        "partitions" => number(1, MAX_PARTITIONS),
        "servers" => number(1, MAX_SERVERS),
        "persist" => match v {
            "producer" | "consumer" => Ok(()),
            _ => Err("must be producer or consumer".into()),
        },
        "server_impl" => match v {
            "stompede" | "spring" => Ok(()),
            _ => Err(
                "must be stompede (the reference server) or spring (the Spring Boot peer)".into(),
            ),
        },
        _ => Err("is not on a known axis".into()),
    }
}

/// Every combination of the axes over the scenario's own shape, in matrix order (the
/// first axis varies slowest).
pub fn cells(base: &LocalStack, axes: &[Axis]) -> Result<Vec<Shape>, String> {
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.name == a.name) {
            return Err(format!(
                "--set {} is given twice; list every value in one --set",
                a.name
            ));
        }
    }
    let mut shapes = vec![Shape {
        brokers: base.brokers,
        partitions: base.partitions,
        servers: base.servers,
        persist: base.persist,
        server_impl: base.server_impl,
    }];
    for a in axes {
        let mut next = Vec::with_capacity(shapes.len() * a.values.len());
        for s in &shapes {
            for v in &a.values {
                let mut s = *s;
                match a.name.as_str() {
                    "brokers" => s.brokers = v.parse().map_err(|_| format!("brokers={v}"))?,
                    "partitions" => {
                        s.partitions = v.parse().map_err(|_| format!("partitions={v}"))?
                    }
                    "servers" => s.servers = v.parse().map_err(|_| format!("servers={v}"))?,
                    "persist" => {
                        s.persist = if v == "consumer" {
                            Persist::Consumer
                        } else {
                            Persist::Producer
                        }
                    }
                    "server_impl" => {
                        s.server_impl = if v == "spring" {
                            ServerImpl::Spring
                        } else {
                            ServerImpl::Stompede
                        }
                    }
                    other => return Err(format!("unknown axis {other}")),
                }
                next.push(s);
            }
        }
        shapes = next;
        if let Some(s) = shapes
            .iter()
            .find(|s| s.server_impl == ServerImpl::Spring && s.persist == Persist::Consumer)
        {
            return Err(format!(
                "cell {} cannot be: the Spring peer persists on the producer side only; \
                 sweep persist over stompede alone, or drop persist=consumer",
                s.label()
            ));
        }
        if shapes.len() > MAX_CELLS {
            return Err(format!(
                "the --set axes make more than {MAX_CELLS} cells; sweep fewer values at a time"
            ));
        }
    }
    Ok(shapes)
}

/// The order runs go in: one repeat in matrix order with the broker count changing
/// least often; several repeats as rounds of every cell, each round shuffled.
pub fn order(cells: &[Shape], repeat: u32, seed: u64) -> Vec<Execution> {
    let mut idx: Vec<usize> = (0..cells.len()).collect();
    if repeat <= 1 {
        idx.sort_by_key(|&i| cells[i].brokers);
        return idx
            .into_iter()
            .map(|cell| Execution { cell, repeat: 1 })
            .collect();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(cells.len() * repeat as usize);
    for r in 1..=repeat {
        idx.shuffle(&mut rng);
        out.extend(idx.iter().map(|&cell| Execution { cell, repeat: r }));
    }
    out
}

/// The local target a cell runs against.
fn local(shape: &Shape) -> LocalStack {
    LocalStack {
        brokers: shape.brokers,
        partitions: shape.partitions,
        servers: shape.servers,
        persist: shape.persist,
        server_impl: shape.server_impl,
        shared_fanout_group: false,
    }
}

fn stack_options(shape: &Shape, run: &RunOptions) -> StackOptions {
    crate::load::target::stack_options(&local(shape), &run.state_dir, &run.server_exe)
}

/// What the brokers and servers of `info` report about themselves.
pub async fn observe(info: &StackInfo) -> Result<ObservedShape, String> {
    let broker_ids = stack::broker_ids(&info.kafka_bootstrap)
        .await
        .map_err(|e| e.to_string())?;
    let topic = stack::topic_config(&info.kafka_bootstrap, &info.topic)
        .await
        .map_err(|e| e.to_string())?;
    let mut servers = Vec::with_capacity(info.servers.len());
    for s in &info.servers {
        let addr: SocketAddr = s
            .metrics_url
            .trim_start_matches("http://")
            .trim_end_matches("/metrics")
            .parse()
            .map_err(|_| {
                format!(
                    "server {}: metrics URL {} is not host:port",
                    s.instance_id, s.metrics_url
                )
            })?;
        let (code, body) = stack::http_get(addr, "/metrics", Duration::from_secs(5))
            .await
            .map_err(|e| format!("server {}: GET {}: {e}", s.instance_id, s.metrics_url))?;
        if code != 200 {
            return Err(format!(
                "server {}: GET {} answered {code}",
                s.instance_id, s.metrics_url
            ));
        }
        let labels = server_info(&body).ok_or_else(|| {
            format!(
                "server {}: {} has no stompede_server_info line (a server of an older build?)",
                s.instance_id, s.metrics_url
            )
        })?;
        let get = |k: &str| {
            labels
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        servers.push(ObservedServer {
            instance: get("instance"),
            url: s.ws_url.clone(),
            persist: get("persist"),
            topic: get("topic"),
            server_impl: get("impl"),
        });
    }
    Ok(ObservedShape {
        broker_ids,
        partitions: topic.partitions,
        replication_factor: topic.replication_factor,
        min_insync_replicas: topic.min_insync_replicas,
        servers,
    })
}

/// How the readings differ from `shape` (and from the stack's own record of its
/// servers and topic), or `None` when they match in every respect: brokers, partitions,
/// replication factor and `min.insync.replicas` for that broker count, and every
/// recorded server answering with its own instance id, the topic and the strategy.
pub fn mismatch(shape: &Shape, o: &ObservedShape, info: &StackInfo) -> Option<String> {
    let mut why = Vec::new();
    let (rf, min_isr) = if shape.brokers >= 3 { (3, 2) } else { (1, 1) };
    if o.broker_ids.len() as u32 != shape.brokers {
        why.push(format!("the metadata lists brokers {:?}", o.broker_ids));
    }
    if o.partitions != shape.partitions {
        why.push(format!(
            "topic {} has {} partitions",
            info.topic, o.partitions
        ));
    }
    if (o.replication_factor, o.min_insync_replicas) != (rf, min_isr) {
        why.push(format!(
            "the topic has replication factor {} and min.insync.replicas {} (expected {rf} and {min_isr})",
            o.replication_factor, o.min_insync_replicas
        ));
    }
    let expected: Vec<&str> = info
        .servers
        .iter()
        .map(|s| s.instance_id.as_str())
        .collect();
    let answered: Vec<&str> = o.servers.iter().map(|s| s.instance.as_str()).collect();
    if expected.len() as u32 != shape.servers || answered != expected {
        why.push(format!(
            "servers {answered:?} answered where {} were asked for",
            shape.servers
        ));
    }
    for s in &o.servers {
        if s.persist != shape.persist.as_str() || s.topic != info.topic {
            why.push(format!(
                "server {} reports persist {:?} and topic {:?}",
                s.instance, s.persist, s.topic
            ));
        }
        let observed_impl = if s.server_impl.is_empty() {
            ServerImpl::Stompede.as_str()
        } else {
            s.server_impl.as_str()
        };
        if observed_impl != shape.server_impl.as_str() {
            why.push(format!(
                "server {} reports implementation {:?}",
                s.instance, s.server_impl
            ));
        }
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// The labels of the `stompede_server_info` sample in a Prometheus text page.
pub fn server_info(page: &str) -> Option<Vec<(String, String)>> {
    stack::metrics_page::samples(page, "stompede_server_info")
        .into_iter()
        .next()
}

/// Copies each server's log into `<run_dir>/server-logs/`; a copy that fails is said on
/// the console and does not stop the sweep.
fn keep_server_logs(info: &StackInfo, run_dir: &std::path::Path) {
    let to = run_dir.join("server-logs");
    if let Err(e) = std::fs::create_dir_all(&to) {
        eprintln!(
            "warning: cannot keep the server logs in {}: {e}",
            to.display()
        );
        return;
    }
    for s in &info.servers {
        let Some(name) = s.log.file_name() else {
            continue;
        };
        if let Err(e) = std::fs::copy(&s.log, to.join(name)) {
            eprintln!("warning: cannot keep {}: {e}", s.log.display());
        }
    }
}

/// A directory name for a run: `03-1b-6p-2s-producer-r2`.
fn run_dir_name(cell: usize, shape: &Shape, repeat: u32) -> String {
    format!(
        "{:02}-{}b-{}p-{}s-{}-r{repeat}",
        cell + 1,
        shape.brokers,
        shape.partitions,
        shape.servers,
        shape.persist.as_str()
    )
}

/// Runs the sweep; `on_run` sees the sweep after each run (the run just added is the
/// last of `order`'s cell's runs).
pub async fn sweep(
    scenario: Scenario,
    opts: &SweepOptions,
    on_run: &mut (dyn FnMut(&Sweep, Execution) + Send),
) -> Result<SweepOutcome, SweepError> {
    let bad = |m: String| SweepError::BadInput(m);
    let TargetKind::Local(base) = &scenario.target.kind else {
        return Err(bad(format!(
            "{} targets an external server (target.kind = \"external\"); a sweep reshapes the local stack, \
             so it needs target.kind = \"local\". To put external runs side by side, use `stompede compare`",
            scenario.source.display()
        )));
    };
    if base.shared_fanout_group {
        return Err(bad(format!(
            "{} sets target.shared_fanout_group, which a sweep does not carry between cells; \
             measure that arrangement with `stompede run`",
            scenario.source.display()
        )));
    }
    if opts.axes.is_empty() {
        return Err(bad(
            "nothing to sweep: give at least one --set, e.g. --set partitions=1,3,6".into(),
        ));
    }
    if opts.repeat == 0 || opts.repeat > MAX_REPEAT {
        return Err(bad(format!(
            "--repeat {}: must be 1 to {MAX_REPEAT}",
            opts.repeat
        )));
    }
    let shapes = cells(base, &opts.axes).map_err(bad)?;
    if let Some(c) = &opts.capacity {
        // Checked now (every cell uses the same settings), not after the first reshape.
        capacity::check_options(&scenario, c).map_err(|e| bad(e.to_string()))?;
    }
    let recorded = stack::status(&opts.run.state_dir).map_err(|e| bad(e.to_string()))?;
    if let Some(info) = recorded.filter(|i| i.processes().iter().any(|p| p.alive())) {
        return Err(bad(format!(
            "a stack is running from {} ({} brokers, {} partitions, {} servers); a sweep starts and reshapes a stack of its own. \
             Stop it with `stompede stack down --state-dir {}`, or give the sweep another --state-dir",
            opts.run.state_dir.display(),
            info.brokers.len(),
            info.partitions,
            info.servers.len(),
            opts.run.state_dir.display()
        )));
    }
    let seed = opts.seed.unwrap_or_else(rand::random);
    let order = order(&shapes, opts.repeat, seed);
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let stamp = started_at.format("%Y%m%dT%H%M%SZ");
    let dir = opts.out.join(format!("sweep-{}-{stamp}", scenario.name));
    let mut sweep = Sweep {
        schema_version: SWEEP_SCHEMA_VERSION,
        kind: SWEEP_KIND.into(),
        tool: ToolInfo::current(),
        scenario: scenario.name.clone(),
        scenario_file: scenario.source.display().to_string(),
        started_at: rfc3339(started_at),
        finished_at: None,
        elapsed_s: 0.0,
        axes: opts.axes.clone(),
        repeat: opts.repeat,
        capacity: opts.capacity.is_some(),
        seed,
        order: Vec::new(),
        cells: shapes
            .iter()
            .map(|s| SweepCell {
                label: s.label(),
                requested: *s,
                runs: Vec::new(),
            })
            .collect(),
        stopped: None,
    };
    let report_err = |source| SweepError::Report {
        dir: dir.clone(),
        source,
    };
    write_sweep_json(&sweep, &dir).map_err(report_err)?;
    let first = &shapes[order[0].cell];
    eprintln!(
        "sweep: {} cells × {} repeat{} = {} runs; bringing up the first shape ({})",
        shapes.len(),
        opts.repeat,
        if opts.repeat == 1 { "" } else { "s" },
        order.len(),
        first.label()
    );
    let mut stack = stack::up(&stack_options(first, &opts.run)).await?;
    let mut fresh = true;
    for (k, exec) in order.iter().enumerate() {
        let shape = shapes[exec.cell];
        eprintln!(
            "sweep: run {} of {}: {} (repeat {})",
            k + 1,
            order.len(),
            shape.label(),
            exec.repeat
        );
        // Every run starts as a fresh stack of its shape would: the first on the stack
        // just started, the others after a reshape, or a reset when the shape is the same.
        let reshaped = if fresh {
            fresh = false;
            Ok("started with this shape".to_string())
        } else {
            match stack.reshape(&stack_options(&shape, &opts.run)).await {
                Ok(Reshaped::Unchanged) => stack
                    .reset(&opts.run.server_exe)
                    .await
                    .map(|how| format!("same shape: {}", how.describe())),
                Ok(how) => Ok(how.describe().to_string()),
                Err(e) => Err(e),
            }
        };
        let reshaped = match reshaped {
            Ok(how) => how,
            Err(e) => {
                sweep.stopped = Some(format!("reshaping to {} failed: {e}", shape.label()));
                break;
            }
        };
        let observed = match observe(stack.info()).await {
            Ok(o) => o,
            Err(e) => {
                sweep.stopped = Some(format!(
                    "the shape of the stack could not be read back before {}: {e}",
                    shape.label()
                ));
                break;
            }
        };
        let run_dir = dir.join(run_dir_name(exec.cell, &shape, exec.repeat));
        let mut run = CellRun {
            repeat: exec.repeat,
            reshape: reshaped,
            observed: observed.clone(),
            dir: run_dir.display().to_string(),
            summary: None,
            capacity: None,
            error: None,
        };
        if let Some(why) = mismatch(&shape, &observed, stack.info()) {
            // The stack is not what it should be: later cells would start from an
            // unknown state, so the sweep ends here.
            run.error = Some(format!("asked for {}, but {why}; not run", shape.label()));
            sweep.stopped = run.error.clone();
            sweep.cells[exec.cell].runs.push(run);
            sweep.order.push(*exec);
            on_run(&sweep, *exec);
            break;
        } else {
            let mut cell_scenario = scenario.clone();
            cell_scenario.target.kind = TargetKind::Local(local(&shape));
            let run_opts = RunOptions {
                out: run_dir.clone(),
                ..opts.run.clone()
            };
            match &opts.capacity {
                None => match crate::load::run(cell_scenario, &run_opts).await {
                    Ok(outcome) => {
                        run.dir = outcome.dir.display().to_string();
                        run.summary = Some(outcome.summary);
                    }
                    Err(e) => run.error = Some(e.to_string()),
                },
                Some(c) => {
                    let c = CapacityOptions {
                        out: run_dir.clone(),
                        run: run_opts,
                        ..c.clone()
                    };
                    match capacity::search(cell_scenario, &c, &mut |_| {}).await {
                        Ok(outcome) => {
                            run.dir = outcome.dir.display().to_string();
                            let report = outcome.report;
                            run.summary = super::compare::representative_step(&report)
                                .map(|(step, _)| step.summary.clone());
                            if report.outcome == Outcome::HarnessBound {
                                run.error = Some(format!(
                                    "the harness was the limit, not the stack: {}",
                                    report.answer
                                ));
                            }
                            run.capacity = Some(CapacityFigures {
                                outcome: report.outcome,
                                answer: report.answer.clone(),
                                knee_deliveries_per_s: report
                                    .knee
                                    .as_ref()
                                    .map(|k| k.offered.deliveries_per_s),
                            });
                        }
                        Err(e) => run.error = Some(e.to_string()),
                    }
                }
            }
        }
        // The servers' logs are started afresh by the next reshape: keep this run's.
        keep_server_logs(stack.info(), &run_dir);
        sweep.cells[exec.cell].runs.push(run);
        sweep.order.push(*exec);
        sweep.elapsed_s = started.elapsed().as_secs_f64();
        write_sweep_json(&sweep, &dir).map_err(report_err)?;
        on_run(&sweep, *exec);
    }
    eprintln!("sweep: taking down its stack");
    let down_error = stack.down().await.err().map(|e| e.to_string());
    sweep.finished_at = Some(rfc3339(chrono::Utc::now()));
    sweep.elapsed_s = started.elapsed().as_secs_f64();
    write_sweep(&sweep, &dir).map_err(report_err)?;
    Ok(SweepOutcome {
        sweep,
        dir,
        down_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> LocalStack {
        LocalStack {
            brokers: 1,
            partitions: 3,
            servers: 2,
            persist: Persist::Producer,
            ..LocalStack::default()
        }
    }

    #[test]
    fn sets_are_checked_and_name_what_is_wrong() {
        assert_eq!(
            parse_set("partitions=1,3,6").expect("valid"),
            Axis {
                name: "partitions".into(),
                values: vec!["1".into(), "3".into(), "6".into()]
            }
        );
        for (bad, says) in [
            ("partitions", "NAME=V1,V2"),
            ("shards=1,2", "unknown axis"),
            ("brokers=1,2", "must be 1"),
            ("partitions=0", "from 1 to"),
            ("servers=1,,2", "empty value"),
            ("persist=disk", "producer or consumer"),
            ("partitions=3,3", "twice"),
            ("partitions=3,03", "twice"),
        ] {
            let e = parse_set(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn cells_are_the_product_over_the_scenario_shape() {
        let axes = [
            parse_set("partitions=1,3").expect("valid"),
            parse_set("brokers=1,3").expect("valid"),
        ];
        let c = cells(&base(), &axes).expect("cells");
        let labels: Vec<String> = c.iter().map(Shape::label).collect();
        assert_eq!(
            labels,
            [
                "1b/1p/2s producer",
                "3b/1p/2s producer",
                "1b/3p/2s producer",
                "3b/3p/2s producer"
            ]
        );
        // One repeat: the brokers change once.
        let o = order(&c, 1, 7);
        let brokers: Vec<u32> = o.iter().map(|e| c[e.cell].brokers).collect();
        assert_eq!(brokers, [1, 1, 3, 3]);
        let twice = [axes[0].clone(), axes[0].clone()];
        assert!(cells(&base(), &twice).unwrap_err().contains("twice"));
    }

    #[test]
    fn the_spring_peer_is_an_axis_but_never_with_consumer_persistence() {
        let axes = [parse_set("server_impl=stompede,spring").expect("valid")];
        let c = cells(&base(), &axes).expect("cells");
        assert_eq!(c[1].server_impl, ServerImpl::Spring);
        assert_eq!(c[1].label(), "1b/3p/2s producer spring");
        let both = [
            axes[0].clone(),
            parse_set("persist=producer,consumer").expect("valid"),
        ];
        let e = cells(&base(), &both).unwrap_err();
        assert!(e.contains("1b/3p/2s consumer spring"), "{e}");
        assert!(parse_set("server_impl=quarkus")
            .unwrap_err()
            .contains("spring"));
    }

    #[test]
    fn repeats_run_every_cell_once_per_round_in_shuffled_order() {
        let axes = [parse_set("partitions=1,2,3,4,5,6").expect("valid")];
        let c = cells(&base(), &axes).expect("cells");
        let o = order(&c, 3, 42);
        assert_eq!(o.len(), 18);
        for r in 1..=3 {
            let mut round: Vec<usize> =
                o.iter().filter(|e| e.repeat == r).map(|e| e.cell).collect();
            assert_eq!(round.len(), 6);
            round.sort_unstable();
            assert_eq!(round, [0, 1, 2, 3, 4, 5]);
        }
        let rounds: Vec<Vec<usize>> = (1..=3)
            .map(|r| o.iter().filter(|e| e.repeat == r).map(|e| e.cell).collect())
            .collect();
        assert!(
            rounds[0] != rounds[1] || rounds[1] != rounds[2],
            "three rounds in the same order: {rounds:?}"
        );
        assert_eq!(order(&c, 3, 42), o, "the seed fixes the order");
    }

    #[test]
    fn the_read_back_must_match_in_every_respect() {
        use crate::report::sweep::ObservedServer;
        let info: StackInfo = serde_json::from_value(serde_json::json!({
            "kafka_bootstrap": "127.0.0.1:1", "kafka_version": "4.1.1", "brokers": [],
            "topic": "chat.messages", "partitions": 3, "replication_factor": 3,
            "min_insync_replicas": 2,
            "postgres": {"port": 1, "url": "postgres://x", "data_dir": "/d", "pid": 1, "log": "/l"},
            "servers": [
                {"instance_id": "s1", "ws_url": "ws://a", "metrics_url": "http://a", "pid": 1, "log": "/l"},
                {"instance_id": "s2", "ws_url": "ws://b", "metrics_url": "http://b", "pid": 2, "log": "/l"}
            ],
            "persist": "producer", "state_dir": "/s", "started_at": "x"
        }))
        .expect("a stack record");
        let shape = Shape {
            brokers: 3,
            partitions: 3,
            servers: 2,
            persist: Persist::Producer,
            server_impl: ServerImpl::Stompede,
        };
        let server = |id: &str| ObservedServer {
            instance: id.into(),
            url: "ws://a".into(),
            persist: "producer".into(),
            topic: "chat.messages".into(),
            server_impl: "stompede".into(),
        };
        let good = ObservedShape {
            broker_ids: vec![1, 2, 3],
            partitions: 3,
            replication_factor: 3,
            min_insync_replicas: 2,
            servers: vec![server("s1"), server("s2")],
        };
        assert_eq!(mismatch(&shape, &good, &info), None);
        let mut o = good.clone();
        o.replication_factor = 1;
        assert!(mismatch(&shape, &o, &info)
            .unwrap()
            .contains("replication factor 1"));
        let mut o = good.clone();
        o.partitions = 4;
        assert!(mismatch(&shape, &o, &info)
            .unwrap()
            .contains("4 partitions"));
        let mut o = good.clone();
        o.servers[1] = server("s1");
        assert!(mismatch(&shape, &o, &info).unwrap().contains("answered"));
        let mut o = good.clone();
        o.servers[0].topic = "other".into();
        assert!(mismatch(&shape, &o, &info)
            .unwrap()
            .contains("topic \"other\""));
        let mut o = good;
        o.broker_ids.pop();
        assert!(mismatch(&shape, &o, &info)
            .unwrap()
            .contains("brokers [1, 2]"));
    }

    #[test]
    fn server_info_labels_are_read_with_escapes() {
        let page = "# HELP x\nstompede_ready{instance=\"s1\"} 1\nstompede_server_info{instance=\"s1\",persist=\"consumer\",topic=\"a\\\"b\"} 1\n";
        let labels = server_info(page).expect("the line");
        assert_eq!(
            labels,
            [
                ("instance".to_string(), "s1".to_string()),
                ("persist".to_string(), "consumer".to_string()),
                ("topic".to_string(), "a\"b".to_string())
            ]
        );
        assert!(server_info("stompede_ready 1\n").is_none());
    }
}
