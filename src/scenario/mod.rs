//! Scenarios: the TOML files in `scenarios/` that say who connects, which rooms exist,
//! how fast people talk, what must hold (SLOs) and which server to hit.
//!
//! Data flows one way:
//!
//! ```text
//! file text ──toml+serde──▶ raw.rs (spanned, all optional, unknown keys rejected)
//!           ──validate.rs─▶ model.rs Scenario (defaults filled)  ──check.rs─▶ valid
//!           ──plan.rs────▶ Plan (concrete rooms, members, senders, per-sender rates)
//! ```
//!
//! Every failure is a [`ScenarioError`] naming the file, the key path, the value, what is
//! allowed and, when known, the line and column. The format itself is documented for
//! users in `scenarios/README.md`.

mod check;
mod duration;
mod error;
mod faults;
mod locate;
mod model;
mod plan;
mod raw;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_faults;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
mod tests_plan;

use std::path::Path;
use std::time::Duration;

pub use check::{
    MAX_DURATION, MAX_HEARTBEAT, MAX_LEAVES_PER_SECOND, MAX_MEMBERSHIPS, MAX_PARTITIONS, MAX_PHASE,
    MAX_RAMP_UP, MAX_RATE, MAX_SERVERS, MAX_USERS, MIN_RATE,
};
pub use duration::{format_duration, parse_duration};
pub use error::{Pos, ScenarioError};
pub use model::*;
pub use plan::{user_id, Plan, RoomPlan, UserPlan};
pub use validate::{DEFAULT_DB_TABLE, DEFAULT_SEND, DEFAULT_SUBSCRIBE};

/// Command-line values that replace the file's; `None` keeps the file's value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub duration: Option<Duration>,
    /// `load.rate`; only for open-model scenarios.
    pub rate: Option<f64>,
    /// `users.count`.
    pub users: Option<u32>,
    pub warmup: Option<Duration>,
}

impl Overrides {
    /// The overridden keys and values, e.g. `users.count = 10`, for messages and reports.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = self.duration {
            out.push(format!("duration = \"{}\"", format_duration(d)));
        }
        if let Some(r) = self.rate {
            out.push(format!("load.rate = {r}"));
        }
        if let Some(u) = self.users {
            out.push(format!("users.count = {u}"));
        }
        if let Some(w) = self.warmup {
            out.push(format!("warmup = \"{}\"", format_duration(w)));
        }
        out
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Scenario::from_str(&text, path)
    }

    /// Parses and validates scenario text; `path` names it in errors, gives the default
    /// `name` (its stem) and becomes [`Scenario::source`].
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let raw: raw::RawScenario = toml::from_str(text).map_err(|e| {
            let key = e.span().and_then(|span| locate::key_path_at(text, span));
            error::from_toml(path, text, &e, key)
        })?;
        let mut ctx = validate::Ctx::new(path, Some(text));
        let scenario = validate::build(raw, &mut ctx)?;
        check::check(&scenario, &ctx)?;
        Ok(scenario)
    }

    /// Applies command-line overrides and checks the result again; on error `self` is
    /// left unchanged and the message says which values were overridden.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<(), ScenarioError> {
        let described = o.describe();
        if described.is_empty() {
            return Ok(());
        }
        let ctx = validate::Ctx::new(&self.source, None).with_note(format!(
            "after command-line overrides: {}",
            described.join(", ")
        ));
        let mut next = self.clone();
        if let Some(d) = o.duration {
            next.duration = d;
        }
        if let Some(w) = o.warmup {
            next.warmup = w;
        }
        if let Some(u) = o.users {
            next.users.count = u;
        }
        if let Some(r) = o.rate {
            match &mut next.load.model {
                LoadModel::Open { rate, .. } => *rate = r,
                LoadModel::Closed { .. } => {
                    return Err(ctx.err(
                        "load.rate",
                        Some(r.to_string()),
                        "cannot be overridden: this scenario uses load.model = \"closed\", whose pace is \
                         set by load.think_time; drop the rate override or use an open-model scenario",
                    ))
                }
            }
        }
        check::check(&next, &ctx)?;
        *self = next;
        Ok(())
    }

    /// The concrete rooms and users (see [`Plan`]).
    pub fn plan(&self) -> Plan {
        Plan::new(self)
    }

    /// Total room memberships: the sum of `count * members` over the room groups
    /// (saturating, so an absurd file is refused by the limit rather than wrapping).
    pub fn memberships(&self) -> u64 {
        self.rooms.iter().fold(0u64, |total, g| {
            total.saturating_add(u64::from(g.count) * u64::from(g.members))
        })
    }

    /// Whether SENDs should carry a `receipt` header: asked for by `load.receipts` and
    /// answered by the target (`target.receipts`).
    pub fn receipts_expected(&self) -> bool {
        let gives = match &self.target.kind {
            TargetKind::Local(shape) => shape.server_impl.gives_receipts(),
            TargetKind::External { .. } => true,
        };
        self.load.receipts && self.target.receipts && gives
    }

    /// Total run time without connection ramp-up: warmup + duration + grace.
    pub fn run_time(&self) -> Duration {
        self.warmup
            .saturating_add(self.duration)
            .saturating_add(self.grace)
    }

    /// Time to open every session at `users.connect_rate`: at most [`MAX_RAMP_UP`] for
    /// a checked scenario. Never panics; a rate no run could use gives `Duration::MAX`.
    pub fn ramp_up(&self) -> Duration {
        self.connect_at(self.users.count)
    }

    /// When user `index` opens its session, counted from the start of ramp-up:
    /// `index / users.connect_rate` seconds, at most [`Scenario::ramp_up`]. Never
    /// panics; a rate no run could use gives `Duration::MAX`.
    pub fn connect_at(&self, index: u32) -> Duration {
        if index == 0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(f64::from(index) / self.users.connect_rate)
            .unwrap_or(Duration::MAX)
    }
}
