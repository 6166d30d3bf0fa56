//! What the run itself cost the harness and the local stack's servers and brokers: CPU
//! seconds and memory, read from `/proc` once a second while the run goes on, and the
//! CPU seconds per million deliveries, so a reader sees at once which side was the
//! expensive one.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Harness,
    Server,
    Broker,
}

struct Watched {
    kind: Kind,
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
    /// Starts following this process, the servers and the brokers, each given as
    /// `(name, pid)`.
    pub fn start(servers: &[(String, u32)], brokers: &[(String, u32)]) -> Tracker {
        let mut watched = vec![Watched {
            kind: Kind::Harness,
            instance_id: None,
            pid: None,
            start: None,
            last: None,
            peak_rss: 0,
        }];
        let others = servers
            .iter()
            .map(|s| (Kind::Server, s))
            .chain(brokers.iter().map(|b| (Kind::Broker, b)));
        watched.extend(others.map(|(kind, (id, pid))| Watched {
            kind,
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

    /// The run's figures (one last sample first); `deliveries` is every delivery of
    /// the run, what the per-million figures divide by.
    pub fn finish(mut self, deliveries: u64) -> Resources {
        self.sample();
        let cpu = |w: &Watched| match (w.start, w.last) {
            (Some(a), Some(b)) => Some(b.cpu_s - a.cpu_s),
            _ => None,
        };
        let per_million = |c: Option<f64>| {
            c.filter(|_| deliveries > 0)
                .map(|c| c * 1e6 / deliveries as f64)
        };
        let of = |kind: Kind| -> Vec<ServerResources> {
            self.watched
                .iter()
                .filter(|w| w.kind == kind && w.last.is_some())
                .map(|w| ServerResources {
                    instance_id: w.instance_id.clone().unwrap_or_default(),
                    peak_rss_bytes: w.peak_rss,
                    cpu_s: cpu(w),
                    cpu_s_per_million: per_million(cpu(w)),
                })
                .collect()
        };
        let harness = &self.watched[0];
        Resources {
            harness_peak_rss_bytes: harness.peak_rss,
            harness_cpu_s: cpu(harness),
            basis: Some(BASIS.to_string()),
            servers: of(Kind::Server),
            brokers: of(Kind::Broker),
            deliveries: Some(deliveries),
            harness_cpu_s_per_million: per_million(cpu(harness)),
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
        let me = std::process::id();
        let mut t = Tracker::start(&[("gone".into(), u32::MAX)], &[("broker 1".into(), me)]);
        // Burn CPU until the kernel has counted a few ticks of it (bounded by a minute
        // of wall time, far more than a few ticks need on any machine).
        let (from, until) = (
            sample(None).expect("/proc/self/stat").cpu_s,
            std::time::Instant::now() + std::time::Duration::from_secs(60),
        );
        let mut x = 0u64;
        while sample(None).expect("/proc/self/stat").cpu_s < from + 0.05
            && std::time::Instant::now() < until
        {
            for i in 0..1_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        t.sample();
        let r = t.finish(2_000_000);
        assert!(r.harness_peak_rss_bytes >= s.rss_bytes / 2);
        let cpu = r.harness_cpu_s.expect("the harness's CPU");
        assert!(cpu > 0.0, "{cpu}");
        assert_eq!(r.deliveries, Some(2_000_000));
        assert_eq!(r.harness_cpu_s_per_million, Some(cpu / 2.0));
        assert!(
            r.servers.is_empty(),
            "a process that does not exist is left out"
        );
        // This process stands in for a broker: measured like the harness.
        assert_eq!(r.brokers.len(), 1);
        assert_eq!(r.brokers[0].instance_id, "broker 1");
        let b = r.brokers[0].cpu_s.expect("the broker's CPU");
        assert_eq!(r.brokers[0].cpu_s_per_million, Some(b / 2.0));
        // No deliveries: no per-million figure rather than an infinite one.
        let none = Tracker::start(&[], &[]).finish(0);
        assert_eq!(none.harness_cpu_s_per_million, None);
    }
}
