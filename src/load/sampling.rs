//! Running the samplers beside a load run: Kafka lag and database throughput while the
//! users send, then the end-of-run database audit.
//!
//! Each sampler runs as its own task and keeps its samples as it takes them (bounded by
//! [`samplers::MAX_SAMPLES`]), so a run of any length keeps every sample; trouble goes to
//! the run's [`Warnings`] (named once on the status line, every failure in `run.log`).
//! [`Samplers::finish`] stops them and hands everything to the summary.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::load::samplers::{
    self, Audit, Collected, DbSample, DbSampler, LagSample, LagSampler, Reporter, SamplerStats,
};
use crate::load::target::Resolved;
use crate::load::warnings::Warnings;

/// Running samplers.
pub struct Samplers {
    lag: Option<JoinHandle<Collected<Vec<LagSample>>>>,
    db: Option<JoinHandle<Collected<DbSample>>>,
    db_target: Option<(String, String)>,
    notes: Vec<String>,
    stop: CancellationToken,
}

/// Everything the samplers saw.
#[derive(Default)]
pub struct Sampled {
    pub lag: Option<Vec<LagSample>>,
    pub lag_stats: SamplerStats,
    pub db: Option<Vec<DbSample>>,
    pub db_stats: SamplerStats,
    pub audit: Option<Audit>,
    pub notes: Vec<String>,
}

/// Starts the lag and DB samplers the target allows (each optional), one sample every
/// `every`.
pub async fn start(
    target: &Resolved,
    t0: Instant,
    every: Duration,
    stop: CancellationToken,
    warnings: &Arc<Warnings>,
) -> Samplers {
    let mut s = Samplers {
        lag: None,
        db: None,
        notes: target.notes.clone(),
        db_target: target.db.clone(),
        stop: stop.clone(),
    };
    if let Some((bootstrap, topic, groups)) = &target.kafka {
        match LagSampler::with_log(bootstrap, topic, groups.clone(), Some(warnings.clone())) {
            Ok(sampler) => {
                let reporter = Reporter {
                    warnings: Some(warnings.clone()),
                    source: "kafka",
                };
                s.lag = Some(tokio::spawn(samplers::run_lag_sampler(
                    sampler,
                    t0,
                    every,
                    stop.clone(),
                    reporter,
                )));
            }
            Err(e) => s.notes.push(format!("Kafka lag not sampled: {e}")),
        }
    } else {
        s.notes.push(
            "Kafka lag not sampled: the target names no Kafka bootstrap ([target.kafka])".into(),
        );
    }
    if let Some((url, table)) = &target.db {
        match DbSampler::new(url, table).await {
            Ok(sampler) => {
                let reporter = Reporter {
                    warnings: Some(warnings.clone()),
                    source: "database",
                };
                s.db = Some(tokio::spawn(samplers::run_db_sampler(
                    sampler,
                    t0,
                    every,
                    stop.clone(),
                    reporter,
                )));
            }
            Err(e) => s.notes.push(format!("database not sampled: {e}")),
        }
    } else {
        s.notes
            .push("database not sampled: the target names no database ([target.db])".into());
    }
    s
}

fn thinned_note(what: &str, stats: &SamplerStats) -> Option<String> {
    (stats.thinned > 0).then(|| {
        format!(
            "{what}: {} samples were taken; past {} kept samples every other one was dropped (evenly over the run)",
            stats.taken,
            samplers::MAX_SAMPLES
        )
    })
}

impl Samplers {
    /// Stops the samplers, collects their samples and audits the database for `run_id`.
    pub async fn finish(mut self, run_id: &str, sent: u64) -> Sampled {
        self.stop.cancel();
        let mut out = Sampled {
            notes: std::mem::take(&mut self.notes),
            ..Sampled::default()
        };
        if let Some(task) = self.lag.take() {
            match task.await {
                Ok(c) => {
                    out.notes.extend(thinned_note("Kafka lag", &c.stats));
                    out.lag_stats = c.stats;
                    out.lag = Some(c.samples.into_iter().flatten().collect());
                }
                Err(e) => out.notes.push(format!("Kafka lag sampler failed: {e}")),
            }
        }
        if let Some(task) = self.db.take() {
            match task.await {
                Ok(c) => {
                    out.notes
                        .extend(thinned_note("database throughput", &c.stats));
                    out.db_stats = c.stats;
                    out.db = Some(c.samples);
                }
                Err(e) => out.notes.push(format!("database sampler failed: {e}")),
            }
        }
        if let Some((url, table)) = &self.db_target {
            // History may trail the run (`--persist consumer`): give it up to 30 s to
            // catch up before counting what is missing.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match samplers::audit(url, table, &crate::load::stamp::marker(run_id)).await {
                    Ok(audit)
                        if audit.distinct_for_run as u64 >= sent || Instant::now() >= deadline =>
                    {
                        out.audit = Some(audit);
                        break;
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(500)).await,
                    Err(e) => {
                        out.notes.push(format!("database audit failed: {e}"));
                        break;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::load::samplers::Store;

    #[test]
    fn store_keeps_everything_below_its_cap() {
        let mut s = Store::new(100);
        for i in 0..100 {
            assert!(s.push(i));
        }
        assert_eq!(s.into_vec(), (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn store_thins_evenly_past_its_cap() {
        let mut s = Store::new(100);
        let kept = (0..1000).filter(|i| s.push(*i)).count();
        let v = s.into_vec();
        assert!(v.len() <= 100, "{}", v.len());
        assert!(v.len() >= 50, "{}", v.len());
        // Evenly spaced over the whole range, from the first to near the last.
        assert_eq!(v[0], 0);
        assert!(*v.last().unwrap() >= 900, "{:?}", v.last());
        let gaps: Vec<i32> = v.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g == gaps[0]), "{gaps:?}");
        assert!(kept >= v.len());
    }
}
