//! `stompede capacity`: the highest load at which a scenario still meets its SLOs.
//!
//! The search runs discrete constant-load steps, each a whole [`crate::load::run`] with
//! its own ramp-up and warm-up (the load never changes while it is measured). It grows
//! the load by [`GROWTH`] until a step fails, then bisects between the highest passing
//! and the lowest failing load until they are within the resolution; `--confirm N` runs
//! the final value N more times, and a failed confirmation sends the search back below
//! it. Each step is judged by [`super::step::judge`]. A harness-bound step ends the
//! search without a capacity: the figures were the harness's limit.
//!
//! A local target is brought up once (or the running stack is used) and kept for every
//! step; the search takes down only a stack it started. Output: the step reports under
//! `steps/`, and `capacity.json`, `capacity.html` and charts beside them
//! ([`crate::report::capacity`]).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::load::{LoadError, RunOptions, RunOutcome};
use crate::report::capacity::{fan_out, setting, write_capacity, CAPACITY_KIND};
use crate::report::{
    rfc3339, Capacity, CapacityStep, FirstFailure, Knee, Offered, Outcome, Over, ReportError,
    SearchSettings, StepPhase, ToolInfo,
};
use crate::scenario::{LoadModel, Overrides, RatePer, Scenario, ScenarioError, TargetKind};
use crate::stack::{self, StackError};

/// Load multiplier between steps until one fails.
pub const GROWTH: f64 = 2.0;
/// `--max` when none is given: this many times `--from`.
pub const DEFAULT_MAX_FACTOR: f64 = 1024.0;

/// How to search.
#[derive(Debug, Clone)]
pub struct CapacityOptions {
    pub over: Over,
    /// First load; the scenario's value when `None`.
    pub from: Option<f64>,
    /// Highest load tried; `from * DEFAULT_MAX_FACTOR` when `None`.
    pub max: Option<f64>,
    /// Stop bisecting when the gap is at most this share of the passing load.
    pub resolution: f64,
    /// Measured duration of each step.
    pub step: Duration,
    /// Warm-up of each step; the scenario's when `None`.
    pub warmup: Option<Duration>,
    /// Extra runs of the final value.
    pub confirm: u32,
    /// Reports land in `<out>/capacity-<scenario>-<UTC timestamp>/`.
    pub out: PathBuf,
    /// How each step runs (`out` is replaced by the step's own directory).
    pub run: RunOptions,
}

/// Why a search could not be carried out (as opposed to finding no capacity).
#[derive(Debug, thiserror::Error)]
pub enum CapacityError {
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    Scenario(#[from] ScenarioError),
    #[error("the local stack did not come up: {0}")]
    Stack(#[from] StackError),
    #[error("step {step} ({setting}) could not be run: {source}")]
    Step {
        step: u32,
        setting: String,
        source: LoadError,
    },
    #[error("cannot write the capacity report to {}: {source}", .dir.display())]
    Report { dir: PathBuf, source: ReportError },
}

impl CapacityError {
    /// True when the error lies in what was asked, not in carrying the search out.
    pub fn is_bad_input(&self) -> bool {
        match self {
            CapacityError::BadInput(_) | CapacityError::Scenario(_) => true,
            CapacityError::Step { source, .. } => {
                source.is_bad_input() || matches!(source, LoadError::Target(t) if t.is_bad_input())
            }
            _ => false,
        }
    }
}

/// A finished search and where its report is.
pub struct CapacityOutcome {
    pub report: Capacity,
    pub dir: PathBuf,
}

/// The scenario's own value of the setting.
pub fn scenario_value(scenario: &Scenario, over: Over) -> Option<f64> {
    match (over, &scenario.load.model) {
        (Over::Rate, LoadModel::Open { rate, .. }) => Some(*rate),
        (Over::Users, _) => Some(f64::from(scenario.users.count)),
        (Over::Rate, LoadModel::Closed { .. }) => None,
    }
}

/// The scenario at one load: the rate replaced, or the users scaled with their rooms
/// (a group of one room grows in members, a group of many rooms in number of rooms).
pub fn at_load(
    base: &Scenario,
    over: Over,
    value: f64,
    step: Duration,
    warmup: Option<Duration>,
) -> Result<Scenario, ScenarioError> {
    let mut s = base.clone();
    let mut o = Overrides {
        duration: Some(step),
        warmup,
        ..Overrides::default()
    };
    match over {
        Over::Rate => o.rate = Some(value),
        Over::Users => {
            let users = value.round().max(1.0) as u32;
            let f = f64::from(users) / f64::from(base.users.count.max(1));
            for g in &mut s.rooms {
                if g.count == 1 {
                    g.members = ((f64::from(g.members) * f).round() as u32).clamp(1, users);
                } else {
                    g.count = ((f64::from(g.count) * f).round() as u32).max(1);
                }
            }
            o.users = Some(users);
        }
    }
    s.apply_overrides(&o)?;
    Ok(s)
}

/// What a scenario offers, from its plan.
pub fn offered(s: &Scenario) -> Offered {
    let plan = s.plan();
    let second = Duration::from_secs(1);
    Offered {
        messages_per_s: plan.expected_open_messages(second),
        deliveries_per_s: plan.expected_open_deliveries(second),
        users: s.users.count,
        rooms: plan.rooms.len() as u32,
        largest_room: plan
            .rooms
            .iter()
            .map(|r| r.members.len() as u32)
            .max()
            .unwrap_or(0),
        sending_slots: plan.rooms.iter().map(|r| r.senders.len() as u32).sum(),
    }
}

/// Runs one step's scenario: [`crate::load::run`], or a stand-in in tests.
type Runner<'a> =
    dyn FnMut(Scenario, RunOptions) -> BoxFuture<'a, Result<RunOutcome, LoadError>> + Send + 'a;

struct Search<'a> {
    base: Scenario,
    opts: &'a CapacityOptions,
    dir: PathBuf,
    steps: Vec<CapacityStep>,
    on_step: &'a mut (dyn FnMut(&CapacityStep) + Send),
    runner: Box<Runner<'a>>,
}

impl Search<'_> {
    /// Runs one step at `value` and records it.
    async fn step(&mut self, value: f64, phase: StepPhase) -> Result<usize, CapacityError> {
        let index = self.steps.len() as u32 + 1;
        let scenario = at_load(
            &self.base,
            self.opts.over,
            value,
            self.opts.step,
            self.opts.warmup,
        )?;
        let offered = offered(&scenario);
        let slug = format!("{index:02}-{}-{}", self.opts.over.as_str(), value);
        let mut run = self.opts.run.clone();
        run.out = self.dir.join("steps").join(slug);
        let outcome = (self.runner)(scenario, run)
            .await
            .map_err(|source| CapacityError::Step {
                step: index,
                setting: setting(self.opts.over, value, ""),
                source,
            })?;
        let verdict = super::step::judge(&outcome.summary, &offered);
        let dir = outcome
            .dir
            .strip_prefix(&self.dir)
            .unwrap_or(&outcome.dir)
            .display()
            .to_string();
        let step = CapacityStep {
            index,
            phase,
            value,
            offered,
            verdict,
            dir,
            summary: outcome.summary,
        };
        (self.on_step)(&step);
        self.steps.push(step);
        Ok(self.steps.len() - 1)
    }

    /// The highest value that passed below `below` and never failed a confirmation.
    fn best_passing_below(&self, below: f64) -> Option<f64> {
        self.steps
            .iter()
            .filter(|s| s.verdict.passed && s.value < below)
            .map(|s| s.value)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    }
}

/// The midpoint of two loads, kept readable: whole users, or a rate with as few
/// significant digits (three or more) as keep it strictly between them. `None` when no
/// value lies strictly between them.
fn midpoint(over: Over, lo: f64, hi: f64) -> Option<f64> {
    let mid = lo + (hi - lo) / 2.0;
    let inside = |m: f64| m > lo && m < hi;
    match over {
        Over::Users => Some(mid.round()).filter(|m| inside(*m)),
        Over::Rate => (3..=12)
            .map(|digits| {
                let scale = 10f64.powi(digits - 1 - mid.abs().log10().floor() as i32);
                (mid * scale).round() / scale
            })
            .find(|m| inside(*m)),
    }
}

/// Whether `lo` (passing) and `hi` (failing) are within the resolution.
fn close_enough(over: Over, lo: f64, hi: f64, resolution: f64) -> bool {
    hi - lo <= resolution * lo || (over == Over::Users && hi - lo <= 1.0)
}

/// Runs the search and writes its report. `on_step` sees each step as it finishes.
pub async fn search(
    scenario: Scenario,
    opts: &CapacityOptions,
    on_step: &mut (dyn FnMut(&CapacityStep) + Send),
) -> Result<CapacityOutcome, CapacityError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();
    let (from, max) = check_options(&scenario, opts)?;
    let stamp = started_at.format("%Y%m%dT%H%M%SZ");
    let dir = opts.out.join(format!("capacity-{}-{stamp}", scenario.name));
    // One stack for every step: the running one, or one brought up now.
    let owned = local_stack(&scenario, &opts.run).await?;
    let mut search = Search {
        base: scenario,
        opts,
        dir: dir.clone(),
        steps: Vec::new(),
        on_step,
        runner: Box::new(|scenario, run| {
            Box::pin(async move { crate::load::run(scenario, &run).await })
        }),
    };
    let result = run_search(&mut search, from, max).await;
    if let Some(stack) = owned {
        eprintln!("taking down the stack this search started");
        if let Err(e) = stack.down().await {
            eprintln!("warning: stack down: {e}");
        }
    }
    let (outcome, lo, hi) = result?;
    let report = build_report(search, outcome, lo, hi, from, max, started, started_at);
    write_capacity(&report, &dir).map_err(|source| CapacityError::Report {
        dir: dir.clone(),
        source,
    })?;
    Ok(CapacityOutcome { report, dir })
}

/// Checks the search settings against the scenario; returns `--from` and `--max`.
pub fn check_options(
    scenario: &Scenario,
    opts: &CapacityOptions,
) -> Result<(f64, f64), CapacityError> {
    let bad = |m: String| Err(CapacityError::BadInput(m));
    if !matches!(scenario.load.model, LoadModel::Open { .. }) {
        return bad(format!(
            "{} uses load.model = \"closed\": its load follows the server's pace, so there is no load to set and hold. \
             A capacity search needs an open-model scenario (load.model = \"open\" with a rate)",
            scenario.source.display()
        ));
    }
    let Some(own) = scenario_value(scenario, opts.over) else {
        return bad("the scenario has no value to vary".into());
    };
    let from = opts.from.unwrap_or(own);
    if !(from.is_finite() && from > 0.0) {
        return bad(format!("--from {from}: must be a positive number"));
    }
    if opts.over == Over::Users && from < 1.0 {
        return bad(format!("--from {from}: at least 1 user"));
    }
    let max = opts.max.unwrap_or(from * DEFAULT_MAX_FACTOR);
    if !(max.is_finite() && max >= from) {
        return bad(format!("--max {max}: must be at least --from ({from})"));
    }
    if !(opts.resolution > 0.0 && opts.resolution < 1.0) {
        return bad(format!(
            "--resolution {}: must be between 0 and 100 % (e.g. 5%)",
            opts.resolution * 100.0
        ));
    }
    if opts.step.is_zero() {
        return bad("--step must be longer than 0s".into());
    }
    // Both ends must make a valid scenario, so a bad value fails now, not mid-search.
    for v in [from, max] {
        at_load(scenario, opts.over, v, opts.step, opts.warmup)?;
    }
    Ok((from, max))
}

/// Brings a local stack up when none is running; `None` when there is one (or the
/// target is external). A running stack of another shape is refused by the first step.
async fn local_stack(
    scenario: &Scenario,
    run: &RunOptions,
) -> Result<Option<stack::Stack>, CapacityError> {
    let TargetKind::Local(shape) = &scenario.target.kind else {
        return Ok(None);
    };
    let running = stack::status(&run.state_dir)?.is_some_and(|info| {
        info.servers.iter().all(|s| s.alive != Some(false))
            && info.brokers.iter().all(|b| b.alive != Some(false))
            && info.postgres.alive != Some(false)
    });
    if running {
        return Ok(None);
    }
    eprintln!(
        "no stack running: bringing one up for every step ({})",
        crate::load::target::describe_shape(shape)
    );
    let stack = stack::up(&crate::load::target::stack_options(
        shape,
        &run.state_dir,
        &run.server_exe,
    ))
    .await?;
    Ok(Some(stack))
}

/// The search proper: `(outcome, highest passing, lowest failing)` as step indices.
async fn run_search(
    s: &mut Search<'_>,
    from: f64,
    max: f64,
) -> Result<(Outcome, Option<usize>, Option<usize>), CapacityError> {
    let over = s.opts.over;
    let mut lo: Option<usize> = None;
    let mut hi: Option<usize>;
    // Grow until a step fails.
    let mut value = from;
    loop {
        let i = s.step(value, StepPhase::Grow).await?;
        let v = &s.steps[i].verdict;
        if v.harness_bound {
            return Ok((Outcome::HarnessBound, lo, Some(i)));
        }
        if !v.passed {
            hi = Some(i);
            break;
        }
        lo = Some(i);
        if value >= max {
            return Ok((Outcome::AtLeastMax, lo, None));
        }
        value = match over {
            Over::Users => (value * GROWTH).round(),
            Over::Rate => value * GROWTH,
        }
        .min(max);
    }
    loop {
        let Some(mut l) = lo else {
            return Ok((Outcome::NoCapacity, None, hi));
        };
        // Bisect to the resolution.
        while let Some(h) = hi {
            let (lv, hv) = (s.steps[l].value, s.steps[h].value);
            if close_enough(over, lv, hv, s.opts.resolution) {
                break;
            }
            let Some(mid) = midpoint(over, lv, hv) else {
                break;
            };
            let i = s.step(mid, StepPhase::Bisect).await?;
            let v = &s.steps[i].verdict;
            if v.harness_bound {
                return Ok((Outcome::HarnessBound, lo, Some(i)));
            }
            if v.passed {
                (l, lo) = (i, Some(i));
            } else {
                hi = Some(i);
            }
        }
        // Confirm the final value.
        let value = s.steps[l].value;
        let mut failed = None;
        for _ in 0..s.opts.confirm {
            let i = s.step(value, StepPhase::Confirm).await?;
            let v = &s.steps[i].verdict;
            if v.harness_bound {
                return Ok((Outcome::HarnessBound, lo, Some(i)));
            }
            if !v.passed {
                failed = Some(i);
                break;
            }
        }
        let Some(f) = failed else {
            return Ok((Outcome::Capacity, lo, hi));
        };
        // The value does not hold every time: it counts as failing, and the search
        // goes on below it.
        hi = Some(f);
        lo = s.best_passing_below(value).and_then(|v| {
            s.steps
                .iter()
                .position(|st| st.value == v && st.verdict.passed)
        });
    }
}

/// `48,000 deliveries/s (24 msg/s into 2,000 members)`, or with the users for `--over users`.
pub fn load_phrase(over: Over, o: &Offered) -> String {
    let users = match over {
        Over::Users => format!(
            " with {} users",
            crate::report::format_count(u64::from(o.users))
        ),
        Over::Rate => String::new(),
    };
    format!(
        "{} deliveries/s{users} ({} msg/s {})",
        crate::report::format_rate(o.deliveries_per_s),
        crate::report::format_number((o.messages_per_s * 1000.0).round() / 1000.0),
        fan_out(o)
    )
}

/// The latency SLO a capacity is quoted at: `p99 ≤ 200 ms` (p99, else p50, else p99.9).
fn slo_phrase(s: &Scenario) -> String {
    let slo = &s.slo;
    let quote = [
        ("p99", slo.p99_ms),
        ("p50", slo.p50_ms),
        ("p99.9", slo.p999_ms),
    ]
    .into_iter()
    .find_map(|(name, limit)| {
        limit.map(|l| format!("{name} ≤ {} ms", crate::report::format_number(l)))
    });
    quote.unwrap_or_else(|| "every check passing".into())
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    search: Search<'_>,
    outcome: Outcome,
    lo: Option<usize>,
    hi: Option<usize>,
    from: f64,
    max: f64,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
) -> Capacity {
    let opts = search.opts;
    let over = opts.over;
    let steps = search.steps;
    let base = search.base;
    let knee = match outcome {
        Outcome::Capacity | Outcome::AtLeastMax => lo.map(|l| {
            let st = &steps[l];
            let s = &st.summary;
            let delivered = st
                .verdict
                .checks
                .iter()
                .find(|c| c.name == "delivered")
                .map_or(s.throughput.delivered_per_s, |c| c.measured);
            Knee {
                step: st.index,
                value: st.value,
                offered: st.offered.clone(),
                delivered_per_s: delivered,
                p50_us: s.latency.corrected.p50_us,
                p99_us: s.latency.corrected.p99_us,
                p999_us: s.latency.corrected.p999_us,
                max_kafka_lag: s.kafka.as_ref().map(|k| k.max_lag),
                db_rows_per_s: s.db.as_ref().map(|d| d.mean_rows_per_s),
                confirmed: steps
                    .iter()
                    .filter(|c| {
                        c.phase == StepPhase::Confirm && c.value == st.value && c.verdict.passed
                    })
                    .count() as u32,
            }
        }),
        Outcome::NoCapacity | Outcome::HarnessBound => None,
    };
    let first_failure = hi.map(|h| {
        let st = &steps[h];
        let first = st.verdict.first();
        FirstFailure {
            step: st.index,
            value: st.value,
            offered: st.offered.clone(),
            criterion: first.map_or("none".into(), |c| c.name.clone()),
            detail: first.map_or(String::new(), |c| c.detail.clone()),
            failed: st
                .verdict
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name.clone())
                .collect(),
        }
    });
    let failure_at = |f: &FirstFailure| {
        let at = match over {
            Over::Rate => format!(
                "{} msg/s",
                crate::report::format_number((f.offered.messages_per_s * 1000.0).round() / 1000.0)
            ),
            Over::Users => format!(
                "{} users",
                crate::report::format_count(u64::from(f.offered.users))
            ),
        };
        format!("{at}: {}", f.detail)
    };
    let answer = match (outcome, &knee, &first_failure) {
        (Outcome::Capacity, Some(k), f) => {
            let confirmed = if opts.confirm > 0 {
                format!(" (confirmed by {} more runs)", k.confirmed)
            } else {
                String::new()
            };
            let failure = f.as_ref().map_or(String::new(), |f| {
                format!("; first failure at {}", failure_at(f))
            });
            format!(
                "sustains {} at {}{confirmed}{failure}",
                load_phrase(over, &k.offered),
                slo_phrase(&base)
            )
        }
        (Outcome::AtLeastMax, Some(k), _) => format!(
            "sustains at least {} at {}: no step failed up to --max {}",
            load_phrase(over, &k.offered),
            slo_phrase(&base),
            crate::report::format_number(max)
        ),
        (Outcome::HarnessBound, _, Some(f)) => {
            let below = lo.map_or(String::new(), |l| {
                format!(
                    "; the target sustained at least {} before that",
                    load_phrase(over, &steps[l].offered)
                )
            });
            format!(
                "harness-bound at {}: {}, so this step measured the harness, not the target; no capacity is claimed{below}",
                load_phrase(over, &f.offered),
                f.detail
            )
        }
        (_, _, Some(f)) => format!("no capacity found: even --from fails at {}", failure_at(f)),
        _ => "no step ran".into(),
    };
    let finished = chrono::Utc::now();
    Capacity {
        schema_version: crate::report::CAPACITY_SCHEMA_VERSION,
        kind: CAPACITY_KIND.into(),
        tool: ToolInfo::current(),
        scenario: base.name.clone(),
        scenario_file: Some(base.source.display().to_string()),
        started_at: rfc3339(started_at),
        finished_at: rfc3339(finished),
        elapsed_s: started.elapsed().as_secs_f64(),
        search: SearchSettings {
            over,
            from,
            max,
            resolution: opts.resolution,
            growth: GROWTH,
            step_s: opts.step.as_secs_f64(),
            warmup_s: opts.warmup.unwrap_or(base.warmup).as_secs_f64(),
            confirm: opts.confirm,
        },
        steps,
        knee,
        first_failure,
        outcome,
        answer,
    }
}

/// `per room` or `per sender`, for the setting's unit.
pub fn rate_per(s: &Scenario) -> &'static str {
    match &s.load.model {
        LoadModel::Open {
            per: RatePer::Room, ..
        } => " per room",
        LoadModel::Open {
            per: RatePer::Sender,
            ..
        } => " per sender",
        LoadModel::Closed { .. } => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn midpoints_stay_readable_and_strictly_inside() {
        assert_eq!(midpoint(Over::Rate, 28.0, 56.0), Some(42.0));
        assert_eq!(midpoint(Over::Rate, 35.0, 38.0), Some(36.5));
        assert_eq!(midpoint(Over::Rate, 1.234, 1.236), Some(1.235));
        assert_eq!(midpoint(Over::Users, 10.0, 11.0), None);
        assert_eq!(midpoint(Over::Users, 10.0, 13.0), Some(12.0));
    }

    #[test]
    fn more_users_grow_a_lone_room_in_members_and_a_group_in_rooms() {
        let base = Scenario::from_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/smoke.toml"
        )))
        .expect("smoke.toml");
        let s = at_load(&base, Over::Users, 120.0, Duration::from_secs(5), None).unwrap();
        assert_eq!(s.users.count, 120);
        let shape: Vec<(u32, u32)> = s.rooms.iter().map(|g| (g.count, g.members)).collect();
        assert_eq!(shape, [(40, 2), (4, 10)]);
        assert_eq!(s.duration, Duration::from_secs(5));
        let hall = Scenario::from_file(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/town-hall.toml"
        )))
        .expect("town-hall.toml");
        let s = at_load(&hall, Over::Users, 3000.0, Duration::from_secs(5), None).unwrap();
        assert_eq!((s.rooms[0].count, s.rooms[0].members), (1, 3000));
        let o = offered(&s);
        assert_eq!((o.users, o.largest_room, o.sending_slots), (3000, 3000, 4));
        assert!((o.deliveries_per_s - 2.0 * 3000.0).abs() < 1e-6, "{o:?}");
        // The rate is the scenario's unit: per room here.
        let s = at_load(&hall, Over::Rate, 24.0, Duration::from_secs(5), None).unwrap();
        assert!((offered(&s).deliveries_per_s - 48_000.0).abs() < 1e-6);
    }

    #[test]
    fn resolution_is_relative_to_the_passing_load() {
        assert!(close_enough(Over::Rate, 100.0, 105.0, 0.05));
        assert!(!close_enough(Over::Rate, 100.0, 105.1, 0.05));
        assert!(close_enough(Over::Users, 10.0, 11.0, 0.01));
    }
}

#[cfg(test)]
#[path = "capacity_search_tests.rs"]
mod search_tests;
