//! What the run itself cost the harness and the local servers: CPU seconds and memory,
//! read from `/proc` once a second while the run goes on.
//!
//! A stack that was already up has servers whose lifetime peak (VmHWM) says nothing
//! about this run, so figures here are the run's own: CPU time as a difference between
//! the run's start and end, and the peak of the resident set sampled once a second.

use crate::report::{Resources, ServerResources};

/// One process's CPU time and resident memory at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
    pub rss_bytes: u64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// CPU time and RSS of `pid` (this process when `None`), or `None` if it is gone.
pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let base = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    };
    let stat = std::fs::read_to_string(format!("{base}/stat")).ok()?;
    // The command name (field 2) may hold spaces: fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is index 0, so utime (14) is 11, stime (15) is 12,
    // rss (24, in pages) is 21.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let rss_pages = fields.get(21)?.parse::<u64>().ok()?;
    Some(ProcSample {
        cpu_s: ticks as f64 / clock_ticks(),
        rss_bytes: rss_pages * page_size(),
    })
}

struct Watched {
    instance_id: Option<String>,
    pid: Option<u32>,
    start: Option<ProcSample>,
    last: Option<ProcSample>,
    peak_rss: u64,
}

/// Follows the harness and the local servers through a run.
pub struct Tracker {
    watched: Vec<Watched>,
}

impl Tracker {
    /// Starts following this process and the servers `(instance id, pid)`.
    pub fn start(servers: &[(String, u32)]) -> Tracker {
        let mut watched = vec![Watched {
            instance_id: None,
            pid: None,
            start: None,
            last: None,
            peak_rss: 0,
        }];
        watched.extend(servers.iter().map(|(id, pid)| Watched {
            instance_id: Some(id.clone()),
            pid: Some(*pid),
            start: None,
            last: None,
            peak_rss: 0,
        }));
        let mut t = Tracker { watched };
        t.sample();
        t
    }

    /// Reads every process once; returns this process's RSS.
    pub fn sample(&mut self) -> Option<u64> {
        for w in &mut self.watched {
            if let Some(s) = sample(w.pid) {
                w.start.get_or_insert(s);
                w.last = Some(s);
                w.peak_rss = w.peak_rss.max(s.rss_bytes);
            }
        }
        self.watched[0].last.map(|s| s.rss_bytes)
    }

    /// The run's figures (one last sample first).
    pub fn finish(mut self) -> Resources {
        self.sample();
        let cpu = |w: &Watched| match (w.start, w.last) {
            (Some(a), Some(b)) => Some(b.cpu_s - a.cpu_s),
            _ => None,
        };
        let harness = &self.watched[0];
        Resources {
            harness_peak_rss_bytes: harness.peak_rss,
            harness_cpu_s: cpu(harness),
            basis: Some(BASIS.to_string()),
            servers: self.watched[1..]
                .iter()
                .filter(|w| w.last.is_some())
                .map(|w| ServerResources {
                    instance_id: w.instance_id.clone().unwrap_or_default(),
                    peak_rss_bytes: w.peak_rss,
                    cpu_s: cpu(w),
                })
                .collect(),
        }
    }
}

/// How [`Tracker`] figures are measured, as the report states it.
pub const BASIS: &str =
    "this run only: CPU seconds from its start to its end, peak RSS sampled once a second";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_measured() {
        let s = sample(None).expect("/proc/self/stat");
        assert!(s.rss_bytes > 0);
        let mut t = Tracker::start(&[("gone".into(), u32::MAX)]);
        // Burn a little CPU so the difference is positive.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        t.sample();
        let r = t.finish();
        assert!(r.harness_peak_rss_bytes >= s.rss_bytes / 2);
        assert!(r.harness_cpu_s.is_some_and(|c| c >= 0.0));
        assert!(
            r.servers.is_empty(),
            "a process that does not exist is left out"
        );
    }
}
