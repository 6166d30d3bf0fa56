//! The CI regression gate: N runs of a scenario judged against a baseline of N runs.
//!
//! ```text
//! record: scenario ─▶ load::run × N ─▶ summaries ─▶ Baseline (figures, hash, shape, machine) ─▶ file
//! gate:   file ─▶ Baseline ─▶ precheck (scenario, machine, declared shape)
//!         scenario ─▶ load::run × N ─▶ summaries ─▶ shape check ─▶ judge ─▶ GateReport
//! ```
//!
//! [`judge`] is pure: per [`Metric`] it takes one value per run on each side, runs a
//! two-sided Mann-Whitney U test and a seeded bootstrap of the ratio of medians
//! ([`super::stats`]), and calls the metric regressed only when the test is significant
//! (p < [`ALPHA`]) *and* the whole interval lies beyond the tolerance on the bad side;
//! improved likewise on the good side; otherwise within noise. Integrity is exact and the
//! scenario's SLOs (the always-on load checks among them) must hold in every run.
//!
//! When the scenario targets the local stack and none is running, the series brings one
//! up once for all its runs and takes it down after, instead of once per run.

use std::path::Path;

use super::{scenario_hash, stats, this_machine};
use crate::load::{LoadError, RunOptions, RunOutcome};
use crate::report::gate::{
    BaselineRef, Better, Comparison, GateReport, IntegrityCheck, Metric, MetricCheck, SloCheck,
    Tolerances, Verdict,
};
use crate::report::gate_baseline::{
    Baseline, BaselineError, BaselineRun, Machine, ScenarioRef, TargetShape, BASELINE_FORMAT,
    BASELINE_SCHEMA_VERSION,
};
use crate::report::{Bound, Summary, ToolInfo};
use crate::scenario::{Scenario, TargetKind};
use crate::stack::{self, StackError};

/// Fewest runs per side: with 5 and 5 the smallest two-sided p is 2/252 = 0.008; with 3
/// and 3 it is 0.1, so no difference could ever be significant.
pub const MIN_RUNS: usize = 5;
/// Runs per side unless `--runs` says otherwise.
pub const DEFAULT_RUNS: usize = 5;
/// Runs made and discarded before each series unless `--warmup-runs` says otherwise.
pub const DEFAULT_WARMUP_RUNS: usize = 1;
/// Significance level of the Mann-Whitney test.
pub const ALPHA: f64 = 0.05;
/// Level of the bootstrap interval.
pub const CONFIDENCE: f64 = 0.95;
/// Bootstrap resamples per metric.
pub const RESAMPLES: usize = 10_000;
/// The bootstrap's seed: the same figures always give the same interval.
const SEED: u64 = 0x5354_4f4d_5045_4445;
/// Memory sizes within this fraction count as the same machine size (the kernel's
/// reservations differ a little between otherwise identical machines).
const MEMORY_SLACK: f64 = 0.10;

/// How to run a gate or record a baseline.
#[derive(Debug, Clone)]
pub struct GateOptions {
    /// Options of every run (reports, state directory, server binary, status line).
    pub run: RunOptions,
    /// Runs on this side; at least [`MIN_RUNS`].
    pub runs: usize,
    /// Runs made first and not judged: the first runs on a fresh stack are slower
    /// (Kafka's JIT, connection pools) and would widen the baseline's tail figures.
    pub warmup_runs: usize,
    pub tolerances: Tolerances,
    /// Refuse a baseline from another setup instead of flagging it.
    pub strict: bool,
}

/// Why a gate did not give a verdict.
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Baseline(#[from] BaselineError),
    #[error(
        "--strict: the baseline was recorded on another setup{}:\n  - {}\nrecord a baseline on this setup (`--record-baseline`) or drop --strict to gate with a warning",
        if *.after_runs { " (seen in the runs just made)" } else { "" },
        .flags.join("\n  - ")
    )]
    Refused {
        flags: Vec<String>,
        after_runs: bool,
    },
    #[error("{run} could not be carried out: {source}")]
    Run { run: String, source: LoadError },
    #[error("the local stack for the runs did not come up: {0}")]
    Stack(#[from] StackError),
    #[error(
        "not recorded: a baseline must hold its own SLOs and lose nothing, but\n  - {}\nfix the setup (see the runs' reports) and record again",
        .0.join("\n  - ")
    )]
    Unclean(Vec<String>),
}

impl GateError {
    /// `stompede gate`'s exit code: 1 for an unclean baseline (a failure of the setup),
    /// 2 for usage, a bad baseline or a refusal, 3 when a run could not be carried out.
    pub fn exit_code(&self) -> u8 {
        match self {
            GateError::Unclean(_) => 1,
            GateError::Usage(_) | GateError::Baseline(_) | GateError::Refused { .. } => 2,
            GateError::Run { source, .. } if source.is_bad_input() => 2,
            GateError::Run { .. } | GateError::Stack(_) => 3,
        }
    }
}

/// The baseline of these runs of `scenario`.
pub fn baseline_from(scenario: &Scenario, summaries: &[Summary]) -> Baseline {
    let first = summaries.first();
    Baseline {
        schema_version: BASELINE_SCHEMA_VERSION,
        format: BASELINE_FORMAT.into(),
        tool: ToolInfo::current(),
        recorded_at: crate::report::rfc3339(chrono::Utc::now()),
        scenario: ScenarioRef {
            name: scenario.name.clone(),
            file: Some(scenario.source.display().to_string()),
            hash: scenario_hash(scenario),
        },
        target: first.map_or_else(
            || TargetShape {
                kind: scenario.target.kind.as_str().into(),
                stack: None,
                urls: 0,
            },
            TargetShape::of,
        ),
        machine: first.map_or_else(this_machine, Machine::of),
        runs: summaries.iter().map(BaselineRun::of).collect(),
    }
}

/// What could make the baseline's figures incomparable, known before any run: another
/// scenario, another machine size, another declared stack shape.
pub fn precheck(scenario: &Scenario, baseline: &Baseline, machine: &Machine) -> Vec<String> {
    let mut flags = Vec::new();
    let hash = scenario_hash(scenario);
    if hash != baseline.scenario.hash {
        flags.push(format!(
            "scenario: the baseline ran `{}` ({}), this gate runs `{}` ({}); their users, rooms, load or timings differ",
            baseline.scenario.name, baseline.scenario.hash, scenario.name, hash
        ));
    }
    let b = &baseline.machine;
    if b.cpus != machine.cpus {
        flags.push(format!(
            "machine: the baseline was recorded on {} CPUs, this machine has {}",
            b.cpus, machine.cpus
        ));
    }
    let (bm, m) = (b.memory_bytes as f64, machine.memory_bytes as f64);
    if (bm - m).abs() > MEMORY_SLACK * bm.max(m) {
        flags.push(format!(
            "machine: the baseline was recorded with {} of memory, this machine has {}",
            b.memory(),
            machine.memory()
        ));
    }
    let kind = scenario.target.kind.as_str();
    if kind != baseline.target.kind {
        flags.push(format!(
            "target: the baseline ran against {}, this scenario targets a {kind} target",
            baseline.target.describe()
        ));
    } else if let (TargetKind::Local(shape), Some(st)) =
        (&scenario.target.kind, &baseline.target.stack)
    {
        if (
            shape.brokers,
            shape.partitions,
            shape.servers,
            shape.persist,
            shape.server_impl,
            shape.shared_fanout_group,
        ) != (
            st.brokers,
            st.partitions,
            st.servers,
            st.persist,
            st.server_impl,
            st.shared_fanout_group,
        ) {
            flags.push(format!(
                "stack: the baseline ran on {}; this scenario asks for {}",
                baseline.target.describe(),
                crate::load::target::describe_shape(shape)
            ));
        }
    }
    flags
}

/// Whether the runs went to a target of the baseline's shape (a running stack is used as
/// it is, whatever the scenario asks for).
pub fn shape_flags(baseline: &Baseline, summaries: &[Summary]) -> Vec<String> {
    let mut shapes: Vec<TargetShape> = Vec::new();
    for s in summaries {
        let shape = TargetShape::of(s);
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
    }
    shapes
        .into_iter()
        .filter(|s| *s != baseline.target)
        .map(|s| {
            format!(
                "target: the runs went to {}; the baseline's went to {}",
                s.describe(),
                baseline.target.describe()
            )
        })
        .collect()
}

/// Judges the current runs against the baseline. Pure: same inputs, same report.
pub fn judge(
    baseline: &Baseline,
    baseline_file: Option<&Path>,
    current: &[Summary],
    tolerances: &Tolerances,
    flags: Vec<String>,
) -> GateReport {
    let metrics = Metric::ALL
        .iter()
        .map(|&m| check_metric(m, baseline.values(m), current, tolerances.get(m)))
        .collect();
    let mut notes = Vec::new();
    let tool = ToolInfo::current();
    if baseline.tool.version != tool.version {
        notes.push(format!(
            "the baseline was recorded with stompede {}, this is {}",
            baseline.tool.version, tool.version
        ));
    }
    for m in Metric::ALL {
        let n = baseline.values(m).len();
        if n > 0 && n < baseline.runs.len() {
            notes.push(format!(
                "{}: the baseline measured it in {n} of its {} runs",
                m.label(),
                baseline.runs.len()
            ));
        }
    }
    let failed_runs = current
        .iter()
        .filter(|s| s.integrity.lost > 0 || s.integrity.duplicated > 0)
        .count();
    let integrity = IntegrityCheck {
        lost: current.iter().map(|s| s.integrity.lost).sum(),
        duplicated: current.iter().map(|s| s.integrity.duplicated).sum(),
        failed_runs,
        runs: current.len(),
        passed: failed_runs == 0,
    };
    let mut report = GateReport {
        scenario: current.first().map_or_else(
            || baseline.scenario.name.clone(),
            |s| s.scenario.name.clone(),
        ),
        baseline: BaselineRef {
            file: baseline_file.map(|p| p.display().to_string()),
            recorded_at: baseline.recorded_at.clone(),
            runs: baseline.runs.len(),
            tool_version: baseline.tool.version.clone(),
        },
        runs: current.len(),
        alpha: ALPHA,
        confidence: CONFIDENCE,
        metrics,
        integrity,
        slos: slo_checks(current),
        flags,
        notes,
        reports: Vec::new(),
        passed: false,
    };
    report.passed = report.all_checks_pass();
    report
}

fn check_metric(m: Metric, base: Vec<f64>, current: &[Summary], tolerance: f64) -> MetricCheck {
    let cur: Vec<f64> = current.iter().filter_map(|s| m.of(s)).collect();
    let mut check = MetricCheck {
        metric: m,
        tolerance,
        comparison: None,
        verdict: Verdict::NotMeasured,
        baseline: base,
        current: cur,
    };
    if check.baseline.is_empty() {
        return check;
    }
    if check.current.len() < current.len() || check.current.is_empty() {
        check.verdict = Verdict::Missing;
        return check;
    }
    let (Some(test), Some(interval)) = (
        stats::mann_whitney(&check.baseline, &check.current),
        stats::bootstrap_ratio(
            &check.baseline,
            &check.current,
            CONFIDENCE,
            RESAMPLES,
            SEED ^ m as u64,
        ),
    ) else {
        return check;
    };
    let comparison = Comparison {
        baseline_median: stats::median(&check.baseline).unwrap_or(0.0),
        current_median: stats::median(&check.current).unwrap_or(0.0),
        ratio: interval.ratio,
        low: interval.low,
        high: interval.high,
        p_value: test.p_value,
    };
    check.verdict = decide(m.better(), tolerance, &comparison, ALPHA);
    check.comparison = Some(comparison);
    check
}

/// Regressed: significant, and the whole interval beyond the tolerance on the bad side
/// (above `1 + tolerance` when lower is better, below `1 - tolerance` when higher is).
/// Improved: the same on the good side. Otherwise within noise.
pub fn decide(better: Better, tolerance: f64, c: &Comparison, alpha: f64) -> Verdict {
    if c.p_value >= alpha {
        return Verdict::WithinNoise;
    }
    let (up, down) = (c.low > 1.0 + tolerance, c.high < 1.0 - tolerance);
    match (better, up, down) {
        (Better::Lower, true, _) | (Better::Higher, _, true) => Verdict::Regressed,
        (Better::Lower, _, true) | (Better::Higher, true, _) => Verdict::Improved,
        _ => Verdict::WithinNoise,
    }
}

/// Each SLO over the runs, in the order the runs list them; it fails when any run failed.
fn slo_checks(current: &[Summary]) -> Vec<SloCheck> {
    let mut checks: Vec<SloCheck> = Vec::new();
    for s in current {
        for v in &s.slo {
            let i = match checks.iter().position(|c| c.name == v.name) {
                Some(i) => i,
                None => {
                    checks.push(SloCheck {
                        name: v.name.clone(),
                        bound: v.bound.symbol().into(),
                        limit: v.limit,
                        unit: v.unit.clone(),
                        worst: v.measured,
                        failed_runs: 0,
                        runs: 0,
                        passed: true,
                    });
                    checks.len() - 1
                }
            };
            let c = &mut checks[i];
            c.runs += 1;
            c.worst = match v.bound {
                Bound::AtMost => c.worst.max(v.measured),
                Bound::AtLeast => c.worst.min(v.measured),
            };
            if !v.passed {
                c.failed_runs += 1;
                c.passed = false;
            }
        }
    }
    checks
}

/// `options.runs` runs of `scenario`, one after the other. A local scenario with no
/// stack running gets one stack for the whole series.
pub async fn run_series(
    scenario: &Scenario,
    options: &GateOptions,
    what: &str,
) -> Result<Vec<RunOutcome>, GateError> {
    if options.runs < MIN_RUNS {
        return Err(GateError::Usage(format!(
            "--runs {}: at least {MIN_RUNS} runs per side (with fewer, no difference can be significant at α = {ALPHA})",
            options.runs
        )));
    }
    let held = hold_stack(scenario, &options.run).await?;
    let mut outcomes = Vec::with_capacity(options.runs);
    let mut failure = None;
    for i in 0..options.warmup_runs + options.runs {
        let warm = i < options.warmup_runs;
        let label = if warm {
            format!(
                "warm-up run {} of {} (not judged)",
                i + 1,
                options.warmup_runs
            )
        } else {
            format!("run {} of {}", i + 1 - options.warmup_runs, options.runs)
        };
        eprintln!("{what}: {label}");
        match crate::load::run(scenario.clone(), &options.run).await {
            Ok(outcome) => {
                eprintln!(
                    "{what}: {label}: {} — report {}",
                    one_line(&outcome.summary),
                    outcome.dir.display()
                );
                if !warm {
                    outcomes.push(outcome);
                }
            }
            Err(source) => {
                failure = Some(GateError::Run { run: label, source });
                break;
            }
        }
    }
    if let Some(stack) = held {
        eprintln!("taking down the stack the series started");
        if let Err(e) = stack.down().await {
            eprintln!("warning: stack down: {e}");
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(outcomes),
    }
}

/// A run's gated figures on one line.
fn one_line(s: &Summary) -> String {
    let mut parts: Vec<String> = Metric::ALL
        .iter()
        .filter_map(|m| m.of(s).map(|v| format!("{} {}", m.key(), m.show(v))))
        .collect();
    parts.push(format!(
        "lost {}, duplicated {}",
        s.integrity.lost, s.integrity.duplicated
    ));
    if !s.passed {
        parts.push("SLO failed".into());
    }
    parts.join(", ")
}

/// Brings up the scenario's local stack when none is recorded; `None` when the runs can
/// use what is there (or need no stack).
async fn hold_stack(
    scenario: &Scenario,
    options: &RunOptions,
) -> Result<Option<stack::Stack>, GateError> {
    let TargetKind::Local(shape) = &scenario.target.kind else {
        return Ok(None);
    };
    if stack::status(&options.state_dir).ok().flatten().is_some() {
        return Ok(None);
    }
    eprintln!(
        "no stack running: bringing one up for the series ({})",
        crate::load::target::describe_shape(shape)
    );
    let stack = stack::up(&crate::load::target::stack_options(
        shape,
        &options.state_dir,
        &options.server_exe,
    ))
    .await?;
    Ok(Some(stack))
}

/// Records a baseline: the series, refused unless every run held its SLOs and lost and
/// duplicated nothing. Returns the runs' summaries too.
pub async fn record(
    scenario: &Scenario,
    options: &GateOptions,
) -> Result<(Baseline, Vec<Summary>), GateError> {
    let summaries: Vec<Summary> = run_series(scenario, options, "baseline")
        .await?
        .into_iter()
        .map(|o| o.summary)
        .collect();
    let problems: Vec<String> = summaries
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let mut what = Vec::new();
            if s.integrity.lost > 0 || s.integrity.duplicated > 0 {
                what.push(format!(
                    "{} lost and {} duplicated deliveries",
                    s.integrity.lost, s.integrity.duplicated
                ));
            }
            for v in s.slo.iter().filter(|v| !v.passed) {
                what.push(format!(
                    "SLO {} failed ({} {}, limit {} {})",
                    v.name,
                    v.measured,
                    v.unit,
                    v.bound.symbol(),
                    v.limit
                ));
            }
            (!what.is_empty()).then(|| format!("run {} ({}): {}", i + 1, s.run_id, what.join("; ")))
        })
        .collect();
    if !problems.is_empty() {
        return Err(GateError::Unclean(problems));
    }
    Ok((baseline_from(scenario, &summaries), summaries))
}

/// Gates `scenario` against `baseline`: the precheck, the series, the shape check, the
/// verdicts. With `options.strict` any flag is a refusal instead.
pub async fn gate(
    scenario: &Scenario,
    baseline: &Baseline,
    baseline_file: Option<&Path>,
    options: &GateOptions,
) -> Result<GateReport, GateError> {
    let mut flags = precheck(scenario, baseline, &this_machine());
    if options.strict && !flags.is_empty() {
        return Err(GateError::Refused {
            flags,
            after_runs: false,
        });
    }
    let outcomes = run_series(scenario, options, "gate").await?;
    let summaries: Vec<Summary> = outcomes.iter().map(|o| o.summary.clone()).collect();
    let shape_already_flagged = flags
        .iter()
        .any(|f| f.starts_with("stack:") || f.starts_with("target:"));
    let after = if shape_already_flagged {
        Vec::new()
    } else {
        shape_flags(baseline, &summaries)
    };
    if options.strict && !after.is_empty() {
        return Err(GateError::Refused {
            flags: after,
            after_runs: true,
        });
    }
    flags.extend(after);
    let mut report = judge(
        baseline,
        baseline_file,
        &summaries,
        &options.tolerances,
        flags,
    );
    report.reports = outcomes
        .iter()
        .map(|o| o.dir.display().to_string())
        .collect();
    Ok(report)
}

/// What `stompede gate` was asked, flags as given.
#[derive(Debug, Clone)]
pub struct CliRequest {
    pub scenario: std::path::PathBuf,
    pub baseline: Option<std::path::PathBuf>,
    pub record_baseline: Option<std::path::PathBuf>,
    pub runs: usize,
    pub warmup_runs: usize,
    pub tolerance: Option<String>,
    pub junit: Option<std::path::PathBuf>,
    pub markdown: Option<std::path::PathBuf>,
    pub strict: bool,
    pub overrides: crate::scenario::Overrides,
}

/// `stompede gate`: records a baseline or gates against one, prints the console table,
/// writes the JUnit XML and markdown asked for (and the step summary on GitHub
/// Actions), and returns the exit code: 0 pass, 1 regression or SLO failure, 2 usage or
/// bad baseline, 3 could not run.
pub async fn cli(req: CliRequest, run: RunOptions) -> u8 {
    let scenario_name = req
        .scenario
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    match cli_inner(&req, run).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(path) = &req.junit {
                let xml = crate::report::junit::junit_error(&scenario_name, &e.to_string());
                if let Err(w) =
                    crate::report::gate_files::write_gate_files(Some((path, &xml)), None, None)
                {
                    eprintln!("error: {w}");
                }
            }
            e.exit_code()
        }
    }
}

async fn cli_inner(req: &CliRequest, run: RunOptions) -> Result<u8, GateError> {
    let mut scenario =
        Scenario::from_file(&req.scenario).map_err(|e| GateError::Usage(e.to_string()))?;
    scenario
        .apply_overrides(&req.overrides)
        .map_err(|e| GateError::Usage(e.to_string()))?;
    let tolerances = match &req.tolerance {
        Some(text) => Tolerances::parse(text)
            .map_err(|e| GateError::Usage(format!("--tolerance {text}: {e}")))?,
        None => Tolerances::default(),
    };
    if req.runs < MIN_RUNS {
        return Err(GateError::Usage(format!(
            "--runs {}: at least {MIN_RUNS} runs per side (with 3 and 3 the smallest possible p-value is 0.1, so nothing could ever be significant at α = {ALPHA})",
            req.runs
        )));
    }
    let options = GateOptions {
        run,
        runs: req.runs,
        warmup_runs: req.warmup_runs,
        tolerances,
        strict: req.strict,
    };
    if let Some(path) = &req.record_baseline {
        let (baseline, _) = record(&scenario, &options).await?;
        baseline.save(path)?;
        print!("{}", baseline.describe());
        println!("baseline recorded: {}", path.display());
        return Ok(0);
    }
    let Some(path) = &req.baseline else {
        return Err(GateError::Usage(
            "give --baseline FILE to gate, or --record-baseline FILE to record one".into(),
        ));
    };
    let baseline = Baseline::load(path, MIN_RUNS)?;
    let report = gate(&scenario, &baseline, Some(path), &options).await?;
    print!("{}", crate::report::gate_text::gate_console(&report));
    let junit = req
        .junit
        .as_ref()
        .map(|p| (p, crate::report::junit::junit(&report)));
    let markdown_text = crate::report::gate_text::gate_markdown(&report);
    let step = crate::report::gate_files::step_summary_path();
    match crate::report::gate_files::write_gate_files(
        junit.as_ref().map(|(p, x)| (p.as_path(), x.as_str())),
        req.markdown.as_deref().map(|p| (p, markdown_text.as_str())),
        step.as_deref().map(|p| (p, markdown_text.as_str())),
    ) {
        Ok(files) => {
            for f in files {
                println!("wrote {}", f.display());
            }
        }
        // The verdict stands; CI sees the exit code and this message.
        Err(e) => eprintln!("error: {e}"),
    }
    Ok(if report.passed { 0 } else { 1 })
}
