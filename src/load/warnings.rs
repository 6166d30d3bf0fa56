//! What went wrong during a run, said once: repeated warnings counted by cause, and the
//! run's log file for everything too detailed (or too frequent) for the console.
//!
//! Virtual users and samplers report trouble here instead of logging each occurrence.
//! The first occurrence of each cause is printed at once (so a user watching a run sees
//! it when it happens); later ones are only counted, and every occurrence goes to
//! `run.log` in the report directory. At the end [`Warnings::summary`] gives one line per
//! cause with its count and first example, for the console and the report's notes.
//! Health problems that last (a broker unreachable) are [`Trouble`]: set while they
//! last, named on the status line with how long they have lasted.
//!
//! Limits: at most [`MAX_CAUSES`] distinct causes are kept (later new causes are counted
//! together under one "other" line); the log file stops growing at [`MAX_LOG_BYTES`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

/// Distinct warning causes kept with their own line.
pub const MAX_CAUSES: usize = 64;
/// The run log stops growing at this size (a last line says so).
pub const MAX_LOG_BYTES: u64 = 64 * 1024 * 1024;

struct Cause {
    count: u64,
    first: String,
    first_t_s: f64,
    order: usize,
}

struct Inner {
    causes: HashMap<String, Cause>,
    other: u64,
    log: Option<BufWriter<File>>,
    log_bytes: u64,
    troubles: HashMap<&'static str, (Instant, String)>,
}

/// Repeated warnings by cause, the run log, and lasting troubles; shared by the run.
pub struct Warnings {
    t0: Instant,
    print: bool,
    inner: Mutex<Inner>,
    /// Told of each cause's first occurrence (a shard passes them to its coordinator).
    on_first: Option<FirstHook>,
}

/// What [`Warnings::forwarding`] calls with `(cause, detail)`.
pub type FirstHook = Box<dyn Fn(&str, &str) + Send + Sync>;

/// One line of the end-of-run summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CauseCount {
    pub cause: String,
    pub count: u64,
    /// What differed in the first occurrence (which user…); may be empty.
    pub first: String,
    pub first_t_s: f64,
}

impl Warnings {
    /// `print`: whether first occurrences go to the console (stderr).
    pub fn new(t0: Instant, print: bool) -> Warnings {
        Warnings {
            t0,
            print,
            inner: Mutex::new(Inner {
                causes: HashMap::new(),
                other: 0,
                log: None,
                log_bytes: 0,
                troubles: HashMap::new(),
            }),
            on_first: None,
        }
    }

    /// Like [`Warnings::new`], and `on_first(cause, detail)` is called on each cause's
    /// first occurrence.
    pub fn forwarding(t0: Instant, on_first: FirstHook) -> Warnings {
        Warnings {
            on_first: Some(on_first),
            ..Warnings::new(t0, false)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens `path` as the run log; lines written before are not kept.
    pub fn open_log(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::create(path)?;
        self.lock().log = Some(BufWriter::new(file));
        Ok(())
    }

    fn t_s(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// Writes one line to the run log (only there).
    pub fn log(&self, line: &str) {
        let t_s = self.t_s();
        let mut inner = self.lock();
        write_log(&mut inner, t_s, line);
    }

    /// A warning of `cause` (the same text for every repeat, no user index or counter in
    /// it); `detail` adds what differs between occurrences (e.g. `"user 17"`).
    pub fn warn(&self, cause: &str, detail: &str) {
        let t_s = self.t_s();
        let mut inner = self.lock();
        let full = if detail.is_empty() {
            cause.to_string()
        } else {
            format!("{detail}: {cause}")
        };
        write_log(&mut inner, t_s, &format!("warning: {full}"));
        let detail = detail.to_string();
        let order = inner.causes.len();
        let first = match inner.causes.get_mut(cause) {
            Some(c) => {
                c.count += 1;
                false
            }
            None if order < MAX_CAUSES => {
                inner.causes.insert(
                    cause.to_string(),
                    Cause {
                        count: 1,
                        first: detail,
                        first_t_s: t_s,
                        order,
                    },
                );
                true
            }
            None => {
                inner.other += 1;
                false
            }
        };
        drop(inner);
        if first && self.print {
            eprintln!("warning: {full} (repeats are counted; summary at the end)");
        }
        if let (true, Some(f)) = (first, &self.on_first) {
            f(cause, &detail_of(&full, cause));
        }
    }

    /// Adds warnings counted elsewhere (a shard of the run): `c.count` of `c.cause`,
    /// whose first occurrence is prefixed with `from`.
    pub fn add(&self, c: &CauseCount, from: &str) {
        let first = if c.first.is_empty() {
            from.to_string()
        } else {
            format!("{from}: {}", c.first)
        };
        let mut inner = self.lock();
        let order = inner.causes.len();
        match inner.causes.get_mut(&c.cause) {
            Some(mine) => {
                mine.count += c.count;
                if c.first_t_s < mine.first_t_s {
                    mine.first = first;
                    mine.first_t_s = c.first_t_s;
                }
            }
            None if order < MAX_CAUSES => {
                inner.causes.insert(
                    c.cause.clone(),
                    Cause {
                        count: c.count,
                        first,
                        first_t_s: c.first_t_s,
                        order,
                    },
                );
            }
            None => inner.other += c.count,
        }
        let line = format!(
            "warning x{} from {from}: {} ({})",
            c.count, c.cause, c.first
        );
        write_log(&mut inner, c.first_t_s, &line);
    }

    /// Shows the first occurrence of a cause counted elsewhere (a shard of the run, whose
    /// counts arrive at the end through [`Warnings::add`]): printed and logged, not
    /// counted here.
    pub fn first_elsewhere(&self, cause: &str, detail: &str) {
        let line = format!("{detail}: {cause}");
        self.log(&format!("warning: {line}"));
        if self.print {
            eprintln!("warning: {line} (repeats are counted; summary at the end)");
        }
    }

    /// How many warnings so far, over all causes.
    pub fn total(&self) -> u64 {
        let inner = self.lock();
        inner.causes.values().map(|c| c.count).sum::<u64>() + inner.other
    }

    /// One entry per cause, in order of first occurrence; an "other causes" entry last
    /// when more than [`MAX_CAUSES`] were seen.
    pub fn summary(&self) -> Vec<CauseCount> {
        let inner = self.lock();
        let mut out: Vec<(usize, CauseCount)> = inner
            .causes
            .iter()
            .map(|(cause, c)| {
                (
                    c.order,
                    CauseCount {
                        cause: cause.clone(),
                        count: c.count,
                        first: c.first.clone(),
                        first_t_s: c.first_t_s,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(order, _)| *order);
        let mut out: Vec<CauseCount> = out.into_iter().map(|(_, c)| c).collect();
        if inner.other > 0 {
            out.push(CauseCount {
                cause: format!("warnings of more than {MAX_CAUSES} other kinds (see run.log)"),
                count: inner.other,
                first: String::new(),
                first_t_s: 0.0,
            });
        }
        out
    }

    /// Marks `source` (e.g. `"kafka"`) as in trouble with `what`, from now unless it
    /// already was; the first time, `what` is printed and logged.
    pub fn trouble(&self, source: &'static str, what: &str) {
        let t_s = self.t_s();
        let mut inner = self.lock();
        let new = match inner.troubles.get_mut(source) {
            Some((_, text)) => {
                if text != what {
                    *text = what.to_string();
                }
                false
            }
            None => {
                inner
                    .troubles
                    .insert(source, (Instant::now(), what.to_string()));
                true
            }
        };
        write_log(&mut inner, t_s, &format!("{source}: {what}"));
        drop(inner);
        if new && self.print {
            eprintln!("warning: {source}: {what}");
        }
    }

    /// `source` works again: its trouble ends (logged, and printed if it was printed).
    pub fn recovered(&self, source: &'static str) {
        let t_s = self.t_s();
        let mut inner = self.lock();
        if let Some((since, _)) = inner.troubles.remove(source) {
            let line = format!(
                "{source}: recovered after {:.0} s",
                since.elapsed().as_secs_f64()
            );
            write_log(&mut inner, t_s, &line);
            drop(inner);
            if self.print {
                eprintln!("{line}");
            }
        }
    }

    /// The troubles lasting now, for the status line: `"kafka: … since 12 s"`.
    pub fn troubles_now(&self) -> Vec<String> {
        let inner = self.lock();
        let mut out: Vec<String> = inner
            .troubles
            .iter()
            .map(|(source, (since, what))| {
                format!(
                    "{source}: {what} since {:.0} s",
                    since.elapsed().as_secs_f64()
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Flushes the run log.
    pub fn flush(&self) {
        if let Some(log) = self.lock().log.as_mut() {
            let _ = log.flush();
        }
    }
}

/// The detail part of a formatted warning (`detail: cause`).
fn detail_of(full: &str, cause: &str) -> String {
    full.strip_suffix(cause)
        .and_then(|d| d.strip_suffix(": "))
        .unwrap_or("")
        .to_string()
}

fn write_log(inner: &mut Inner, t_s: f64, line: &str) {
    if inner.log_bytes >= MAX_LOG_BYTES {
        return;
    }
    let Some(log) = inner.log.as_mut() else {
        return;
    };
    let text = format!("[{t_s:>9.3}s] {line}\n");
    inner.log_bytes += text.len() as u64;
    let mut ok = log.write_all(text.as_bytes()).is_ok();
    if inner.log_bytes >= MAX_LOG_BYTES {
        ok &= writeln!(
            log,
            "[{t_s:>9.3}s] run.log reached {MAX_LOG_BYTES} bytes; later lines are not kept"
        )
        .is_ok();
    }
    if !ok {
        inner.log = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_occurrences_are_forwarded_and_shard_counts_merge() {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let w = Warnings::forwarding(
            Instant::now(),
            Box::new({
                let seen = seen.clone();
                move |cause: &str, detail: &str| {
                    seen.lock()
                        .unwrap()
                        .push((cause.to_string(), detail.to_string()))
                }
            }),
        );
        for user in 0..5 {
            w.warn("cannot connect", &format!("user {user}"));
        }
        w.warn("no detail", "");
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                ("cannot connect".to_string(), "user 0".to_string()),
                ("no detail".to_string(), String::new()),
            ]
        );
        // The coordinator adds the shard's counts to its own.
        let c = Warnings::new(Instant::now(), false);
        c.warn("cannot connect", "user 99");
        for count in w.summary() {
            c.add(&count, "shard 2");
        }
        let merged = c.summary();
        assert_eq!(merged[0].cause, "cannot connect");
        assert_eq!(merged[0].count, 6);
        assert_eq!(merged[1].count, 1);
        assert_eq!(merged[1].first, "shard 2");
    }

    #[test]
    fn repeats_are_counted_once_per_cause() {
        let w = Warnings::new(Instant::now(), false);
        for user in 0..1000 {
            w.warn("cannot connect to ws://a: refused", &format!("user {user}"));
        }
        w.warn("no CONNECTED from ws://a within 30 s", "user 3");
        let s = w.summary();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].count, 1000);
        assert_eq!(s[0].first, "user 0");
        assert_eq!(s[1].count, 1);
        assert_eq!(w.total(), 1001);
    }

    #[test]
    fn causes_are_bounded() {
        let w = Warnings::new(Instant::now(), false);
        for i in 0..(MAX_CAUSES + 10) {
            w.warn(&format!("cause {i}"), "");
        }
        let s = w.summary();
        assert_eq!(s.len(), MAX_CAUSES + 1);
        assert_eq!(s.last().map(|c| c.count), Some(10));
        assert_eq!(w.total(), (MAX_CAUSES + 10) as u64);
    }

    #[test]
    fn troubles_last_until_recovered_and_go_to_the_log() {
        let dir = std::env::temp_dir().join(format!("stompede-warn-{}", std::process::id()));
        let w = Warnings::new(Instant::now(), false);
        w.open_log(&dir.join("run.log")).expect("open log");
        w.trouble("kafka", "broker 127.0.0.1:1 unreachable");
        w.trouble("kafka", "broker 127.0.0.1:1 unreachable");
        let now = w.troubles_now();
        assert_eq!(now.len(), 1);
        assert!(now[0].starts_with("kafka: broker 127.0.0.1:1 unreachable since "));
        w.recovered("kafka");
        assert!(w.troubles_now().is_empty());
        w.flush();
        let log = std::fs::read_to_string(dir.join("run.log")).expect("read log");
        assert_eq!(log.matches("unreachable").count(), 2, "{log}");
        assert!(log.contains("kafka: recovered after"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
