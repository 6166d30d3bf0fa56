//! The live status line: rewritten in place on a terminal; otherwise one line every 5 s
//! and one whenever the run enters another phase.
//! It names what is going wrong right now (a broker unreachable, the database not
//! answering) and how many warnings were counted, so trouble is seen once, not scrolled.

use std::io::IsTerminal;
use std::sync::atomic::Ordering::Relaxed;

use crate::load::stats::{Interval, Totals};
use crate::load::RunContext;
use crate::report::Phase;

pub struct Progress {
    enabled: bool,
    tty: bool,
    /// The phase of the last line printed.
    last_phase: std::sync::Mutex<Option<Phase>>,
}

impl Progress {
    pub fn new(enabled: bool) -> Self {
        Progress {
            enabled,
            tty: std::io::stderr().is_terminal(),
            last_phase: std::sync::Mutex::new(None),
        }
    }

    pub fn line(
        &self,
        t_s: f64,
        phase: Phase,
        ctx: &RunContext,
        i: &Interval,
        interval_s: f64,
        totals: &Totals,
    ) {
        if !self.enabled {
            return;
        }
        let new_phase = {
            let mut last = self.last_phase.lock().unwrap_or_else(|e| e.into_inner());
            last.replace(phase) != Some(phase)
        };
        if !self.tty && !new_phase && (t_s as u64) % 5 != 0 {
            return;
        }
        let per_s = |n: u64| n as f64 / interval_s.max(1e-3);
        let p99 = if totals.corrected.is_empty() {
            "-".to_string()
        } else {
            format!(
                "{:.1} ms",
                totals.corrected.value_at_quantile(0.99) as f64 / 1000.0
            )
        };
        let mut text = format!(
            "[{:>5.0}s {:<7}] sessions {}/{}  sent {:.0}/s  delivered {:.0}/s  errors {}  p99 so far {}",
            t_s,
            phase.as_str(),
            ctx.recorder.sessions.load(Relaxed),
            ctx.plan.users.len(),
            per_s(i.sent),
            per_s(i.delivered),
            ctx.recorder.errors.load(Relaxed),
            p99
        );
        let warnings = ctx.warnings.total();
        if warnings > 0 {
            text.push_str(&format!("  warnings {warnings}"));
        }
        for trouble in ctx.warnings.troubles_now() {
            text.push_str(&format!("  | {trouble}"));
        }
        if self.tty {
            eprint!("\r\x1b[2K{text}");
        } else {
            eprintln!("{text}");
        }
    }

    pub fn done(&self) {
        if self.enabled && self.tty {
            eprintln!();
        }
    }
}
