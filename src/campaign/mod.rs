//! Campaigns: several runs as one job. Each calls [`crate::load::run`] once per run and
//! builds its own report model (in [`crate::report`]) from the runs' summaries; the
//! single-run driver knows nothing of campaigns.
//!
//! - [`capacity`]: the highest load that meets a scenario's SLOs, by constant-load steps
//!   judged in [`step`];
//! - [`compare`]: existing `summary.json` / `capacity.json` files side by side.

pub mod capacity;
pub mod compare;
pub mod step;
