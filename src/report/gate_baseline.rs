//! The regression gate's baseline: N runs' figures with what they were measured on.
//!
//! `stompede gate SCENARIO --record-baseline FILE` writes it from the runs' summaries;
//! `stompede gate SCENARIO --baseline FILE` reads it back. It is its own versioned JSON
//! ([`BASELINE_SCHEMA_VERSION`]), smaller than the summaries it came from: per run only
//! the figures the gate compares, the integrity counts and whether the run held its SLOs,
//! plus once the scenario's hash, the target's shape, the machine's size and the tool
//! version, so a baseline from another setup can be flagged.
//!
//! Versions: [`Baseline::from_json`] reads every version in
//! [`READABLE_BASELINE_VERSIONS`], migrating older layouts to the current one, and
//! refuses any other with a message that names the versions and says how to record
//! a new baseline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::gate::Metric;
use super::model::{Persist, ServerImpl, Summary, ToolInfo};

/// Version of the baseline layout written by this build.
pub const BASELINE_SCHEMA_VERSION: u32 = 1;

/// Versions [`Baseline::from_json`] reads (older ones are migrated on load).
pub const READABLE_BASELINE_VERSIONS: &[u32] = &[1];

/// What every baseline file says it is, so a `summary.json` given by mistake is named.
pub const BASELINE_FORMAT: &str = "stompede-gate-baseline";

/// N runs' figures and the setup they were measured on.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Baseline {
    /// Always [`BASELINE_SCHEMA_VERSION`] when written by this build.
    pub schema_version: u32,
    /// Always [`BASELINE_FORMAT`].
    pub format: String,
    pub tool: ToolInfo,
    /// RFC 3339 UTC.
    pub recorded_at: String,
    pub scenario: ScenarioRef,
    pub target: TargetShape,
    pub machine: Machine,
    pub runs: Vec<BaselineRun>,
}

/// Which scenario the runs followed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ScenarioRef {
    pub name: String,
    pub file: Option<String>,
    /// Hash of what shapes the load (see `crate::campaign::gate::scenario_hash`).
    pub hash: String,
}

/// What the runs were aimed at: the local stack's shape, or external URLs.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TargetShape {
    /// `"local"` or `"external"`.
    pub kind: String,
    /// Local stack: brokers, partitions, replication factor, servers, persistence,
    /// Kafka version. `None` for external targets.
    pub stack: Option<StackShape>,
    /// WebSocket URLs the users were spread over (their addresses are not compared:
    /// ports differ from one CI machine to the next).
    pub urls: usize,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StackShape {
    pub brokers: u32,
    pub partitions: u32,
    pub replication_factor: u32,
    pub servers: u32,
    pub persist: Persist,
    /// Absent in baselines of older builds: stompede.
    #[serde(default)]
    pub server_impl: ServerImpl,
    #[serde(default)]
    pub shared_fanout_group: bool,
    pub kafka_version: String,
}

impl TargetShape {
    /// The shape of the target a run went to.
    pub fn of(s: &Summary) -> TargetShape {
        TargetShape {
            kind: s.target.kind.as_str().to_string(),
            stack: s.target.stack.as_ref().map(|st| StackShape {
                brokers: st.brokers,
                partitions: st.partitions,
                replication_factor: st.replication_factor,
                servers: st.servers,
                persist: st.persist,
                server_impl: st.server_impl,
                shared_fanout_group: st.shared_fanout_group,
                kafka_version: st.kafka_version.clone(),
            }),
            urls: s.target.urls.len(),
        }
    }

    /// For people, e.g. `local stack: 1 broker(s), 3 partitions (RF 1), 2 servers,
    /// persist producer, Kafka 3.9.0`.
    pub fn describe(&self) -> String {
        match &self.stack {
            Some(st) => format!(
                "{} stack: {} broker(s), {} partitions (RF {}), {} {} servers, persist {}, Kafka {}",
                self.kind,
                st.brokers,
                st.partitions,
                st.replication_factor,
                st.servers,
                st.server_impl.as_str(),
                st.persist.as_str(),
                st.kafka_version
            ),
            None => format!("{} target: {} URL(s)", self.kind, self.urls),
        }
    }
}

/// The machine's size.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Machine {
    pub cpus: u32,
    pub memory_bytes: u64,
    pub hostname: String,
    pub os: String,
}

impl Machine {
    pub fn of(s: &Summary) -> Machine {
        Machine {
            cpus: s.environment.cpus,
            memory_bytes: s.environment.memory_bytes,
            hostname: s.environment.hostname.clone(),
            os: s.environment.os.clone(),
        }
    }

    pub fn describe(&self) -> String {
        format!("{} CPUs, {} memory", self.cpus, self.memory())
    }

    /// The memory size for people, e.g. `23.4 GiB`.
    pub fn memory(&self) -> String {
        super::format::bytes(self.memory_bytes)
    }
}

/// One baseline run.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct BaselineRun {
    pub run_id: String,
    pub started_at: String,
    /// By [`Metric::key`]; a metric the run did not measure is `null`. Latencies in
    /// microseconds, rates per second, lag in messages.
    pub figures: BTreeMap<String, Option<f64>>,
    pub lost: u64,
    pub duplicated: u64,
    /// Whether the run held every SLO of its scenario.
    pub passed: bool,
}

impl BaselineRun {
    pub fn of(s: &Summary) -> BaselineRun {
        BaselineRun {
            run_id: s.run_id.clone(),
            started_at: s.started_at.clone(),
            figures: Metric::ALL
                .iter()
                .map(|m| (m.key().to_string(), m.of(s)))
                .collect(),
            lost: s.integrity.lost,
            duplicated: s.integrity.duplicated,
            passed: s.passed,
        }
    }

    /// The run's figure for `metric`, `None` when not measured.
    pub fn figure(&self, metric: Metric) -> Option<f64> {
        self.figures.get(metric.key()).copied().flatten()
    }
}

/// Why a baseline file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot read the baseline {}: {source}; record one with `stompede gate SCENARIO --record-baseline {}`", .path.display(), .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a stompede gate baseline: {reason}; record one with `stompede gate SCENARIO --record-baseline FILE`", .path.display())]
    NotABaseline { path: PathBuf, reason: String },
    #[error(
        "{} has baseline schema_version {found}, but this build of stompede reads versions {} (it writes {BASELINE_SCHEMA_VERSION}); \
         record the baseline again with this version: `stompede gate SCENARIO --record-baseline {}`",
        .path.display(),
        READABLE_BASELINE_VERSIONS.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", "),
        .path.display()
    )]
    Version { path: PathBuf, found: String },
    #[error("{} is not a valid gate baseline (version {BASELINE_SCHEMA_VERSION}): {source}", .path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{} holds {runs} run(s); the gate needs at least {min} per side; record it again with `--runs {min}` or more", .path.display())]
    TooFewRuns {
        path: PathBuf,
        runs: usize,
        min: usize,
    },
    #[error("cannot write the baseline {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Baseline {
    /// Reads a baseline file, migrating older layouts; at least `min_runs` runs.
    pub fn load(path: &Path, min_runs: usize) -> Result<Baseline, BaselineError> {
        let text = std::fs::read_to_string(path).map_err(|source| BaselineError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let baseline = Baseline::from_json(&text, path)?;
        if baseline.runs.len() < min_runs {
            return Err(BaselineError::TooFewRuns {
                path: path.to_path_buf(),
                runs: baseline.runs.len(),
                min: min_runs,
            });
        }
        Ok(baseline)
    }

    /// Parses baseline JSON; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Baseline, BaselineError> {
        let not = |reason: String| BaselineError::NotABaseline {
            path: path.to_path_buf(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| not(format!("not JSON ({e})")))?;
        if value.get("format").and_then(|f| f.as_str()) != Some(BASELINE_FORMAT) {
            let hint = if value.get("run_id").is_some() {
                " (it looks like a run's summary.json)"
            } else {
                ""
            };
            return Err(not(format!("no \"format\": \"{BASELINE_FORMAT}\"{hint}")));
        }
        let version = value.get("schema_version").and_then(|v| v.as_u64());
        let value = match version {
            Some(v) if u64::from(BASELINE_SCHEMA_VERSION) == v => value,
            // Older readable versions are migrated here, one step at a time.
            found => {
                return Err(BaselineError::Version {
                    path: path.to_path_buf(),
                    found: found.map_or_else(|| "none".into(), |v| v.to_string()),
                })
            }
        };
        serde_json::from_value(value).map_err(|source| BaselineError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Pretty JSON, as written to the file.
    pub fn to_json(&self) -> String {
        // Figures are finite (latencies, rates and counts), so this cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the file, creating its directory.
    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let write = |e| BaselineError::Write {
            path: path.to_path_buf(),
            source: e,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        std::fs::write(path, self.to_json()).map_err(write)
    }

    /// The baseline runs' values of `metric`, runs that did not measure it left out.
    pub fn values(&self, metric: Metric) -> Vec<f64> {
        self.runs.iter().filter_map(|r| r.figure(metric)).collect()
    }
}

impl Baseline {
    /// A recorded baseline for people: the setup, then each metric's median and runs.
    pub fn describe(&self) -> String {
        let b = self;
        let mut out = format!(
            "baseline of `{}` ({}): {} runs on {}, {}\n",
            b.scenario.name,
            b.scenario.hash,
            b.runs.len(),
            b.target.describe(),
            b.machine.describe()
        );
        for m in Metric::ALL {
            let values = b.values(m);
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let Some(median) = (n > 0).then(|| (sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0) else {
                out += &format!("  {:<14} not measured\n", m.label());
                continue;
            };
            let runs: Vec<String> = values.iter().map(|v| m.show(*v)).collect();
            out += &format!(
                "  {:<14} median {:<12} runs {}\n",
                m.label(),
                m.show(median),
                runs.join(", ")
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Baseline {
        let s = Summary::sample();
        Baseline {
            schema_version: BASELINE_SCHEMA_VERSION,
            format: BASELINE_FORMAT.into(),
            tool: ToolInfo::current(),
            recorded_at: "2025-01-31T12:00:00.000Z".into(),
            scenario: ScenarioRef {
                name: "smoke".into(),
                file: Some("scenarios/smoke.toml".into()),
                hash: "fnv1a64:0123456789abcdef".into(),
            },
            target: TargetShape::of(&s),
            machine: Machine::of(&s),
            runs: (0..5).map(|_| BaselineRun::of(&s)).collect(),
        }
    }

    #[test]
    fn round_trips_through_json() {
        let b = sample();
        let back = Baseline::from_json(&b.to_json(), Path::new("b.json")).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.values(Metric::P50).len(), 5);
    }

    #[test]
    fn other_versions_are_refused_naming_both() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["schema_version"] = 7.into();
        let e = Baseline::from_json(&v.to_string(), Path::new("ci/b.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ci/b.json"), "{e}");
        assert!(e.contains("schema_version 7"), "{e}");
        assert!(e.contains("reads versions 1"), "{e}");
        assert!(e.contains("--record-baseline ci/b.json"), "{e}");
    }

    #[test]
    fn a_summary_is_not_a_baseline() {
        let text = Summary::sample().to_json().unwrap();
        let e = Baseline::from_json(&text, Path::new("summary.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("looks like a run's summary.json"), "{e}");
        let e = Baseline::from_json("{", Path::new("x.json"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.json is not a stompede gate baseline"), "{e}");
    }

    #[test]
    fn too_few_runs_are_refused() {
        let dir = std::env::temp_dir().join(format!("stompede-baseline-{}", std::process::id()));
        let path = dir.join("b.json");
        let mut b = sample();
        b.runs.truncate(3);
        b.save(&path).unwrap();
        let e = Baseline::load(&path, 5).unwrap_err().to_string();
        assert!(
            e.contains("holds 3 run(s)") && e.contains("--runs 5"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
