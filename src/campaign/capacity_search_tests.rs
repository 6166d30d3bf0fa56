//! The search itself against a stand-in target: runs return constructed summaries, so
//! the growth, bisection, confirmation and harness-bound paths are checked exactly.

use super::*;
use crate::campaign::step::steady_summary;
use std::sync::{Arc, Mutex};

fn scenario() -> Scenario {
    let text = r#"
name = "capped"
duration = "20s"
warmup = "5s"
[users]
count = 40
[[rooms]]
name = "hall"
count = 1
members = 40
senders = 4
[load]
model = "open"
rate = 10.0
per = "room"
[slo]
p99_ms = 50.0
[target]
kind = "external"
urls = ["ws://127.0.0.1:1/ws-stomp"]
"#;
    Scenario::from_str(text, std::path::Path::new("capped.toml")).expect("test scenario")
}

fn options(confirm: u32) -> CapacityOptions {
    CapacityOptions {
        over: Over::Rate,
        from: Some(5.0),
        max: None,
        resolution: 0.05,
        step: Duration::from_secs(20),
        warmup: None,
        confirm,
        out: PathBuf::from("/nonexistent"),
        run: RunOptions::new(PathBuf::from("stompede")),
    }
}

/// A target that delivers at most `cap` deliveries/s, and a harness that is bound
/// from `harness_cap` deliveries/s; `flaky` values fail their n-th run.
struct Stand {
    cap: f64,
    harness_cap: f64,
    flaky: Vec<(f64, u32)>,
    runs: Vec<f64>,
}

async fn search_against(stand: Stand, confirm: u32) -> (Capacity, Vec<f64>) {
    let opts = options(confirm);
    let stand = Arc::new(Mutex::new(stand));
    let runner_stand = stand.clone();
    let mut on_step = |_: &CapacityStep| {};
    let mut search = Search {
        base: scenario(),
        opts: &opts,
        dir: PathBuf::from("/nonexistent"),
        steps: Vec::new(),
        on_step: &mut on_step,
        runner: Box::new(move |scenario, _| {
            let o = offered(&scenario);
            let mut st = runner_stand.lock().unwrap();
            st.runs.push(o.deliveries_per_s);
            let nth = st.runs.iter().filter(|&&r| r == o.deliveries_per_s).count() as u32;
            let flaky = st
                .flaky
                .iter()
                .any(|&(v, n)| v == o.deliveries_per_s && n == nth);
            let delivered = if flaky {
                0.0
            } else {
                o.deliveries_per_s.min(st.cap)
            };
            let mut summary = steady_summary(o.messages_per_s, delivered);
            if o.deliveries_per_s >= st.harness_cap {
                let h = summary.harness.as_mut().unwrap();
                h.loop_lag_p99_us = Some(75_000);
                h.bound = true;
            }
            Box::pin(async move {
                Ok(RunOutcome {
                    summary,
                    dir: PathBuf::from("/nonexistent/steps/x"),
                })
            })
        }),
    };
    let (from, max) = (5.0, 5.0 * DEFAULT_MAX_FACTOR);
    let (outcome, lo, hi) = run_search(&mut search, from, max).await.expect("search");
    let report = build_report(
        search,
        outcome,
        lo,
        hi,
        from,
        max,
        Instant::now(),
        chrono::Utc::now(),
    );
    let runs = stand.lock().unwrap().runs.clone();
    (report, runs)
}

#[tokio::test]
async fn finds_the_cap_within_the_resolution_and_names_the_step_above() {
    // 40 members: 5 msg/s is 200 deliveries/s; the cap is 1,000.
    let stand = Stand {
        cap: 1_000.0,
        harness_cap: f64::INFINITY,
        flaky: vec![],
        runs: vec![],
    };
    let (c, runs) = search_against(stand, 0).await;
    assert_eq!(c.outcome, Outcome::Capacity, "{}", c.answer);
    let knee = c.knee.as_ref().unwrap().offered.deliveries_per_s;
    let fail = c.first_failure.as_ref().unwrap();
    assert!(
        (950.0..=1_000.0).contains(&knee),
        "knee {knee}, runs {runs:?}"
    );
    assert!(fail.offered.deliveries_per_s > 1_000.0);
    assert!(
        fail.offered.deliveries_per_s - knee <= 0.05 * knee,
        "{c:#?}"
    );
    assert_eq!(fail.criterion, "delivered");
    // Grown 5, 10, 20, 40 msg/s, then bisected.
    assert_eq!(&runs[..4], &[200.0, 400.0, 800.0, 1_600.0]);
    assert!(c.steps[4..].iter().all(|s| s.phase == StepPhase::Bisect));
    assert!(
        c.answer.starts_with(&format!(
            "sustains {} deliveries/s (",
            crate::report::format_rate(knee)
        )) && c
            .answer
            .contains("into 40 members) at p99 ≤ 50 ms; first failure at"),
        "{}",
        c.answer
    );
}

#[tokio::test]
async fn a_failed_confirmation_sends_the_search_below_it() {
    // The bisection ends at 25 msg/s (1,000 deliveries/s); its 1st confirmation fails.
    let stand = Stand {
        cap: 1_000.0,
        harness_cap: f64::INFINITY,
        flaky: vec![(1_000.0, 2)],
        runs: vec![],
    };
    let (c, runs) = search_against(stand, 2).await;
    assert_eq!(c.outcome, Outcome::Capacity, "{runs:?}");
    let knee = c.knee.as_ref().unwrap();
    assert!(
        (950.0..1_000.0).contains(&knee.offered.deliveries_per_s),
        "{runs:?}"
    );
    assert_eq!(knee.confirmed, 2, "{runs:?}");
    let fail = c.first_failure.as_ref().unwrap();
    assert_eq!(fail.offered.deliveries_per_s, 1_000.0, "{runs:?}");
    assert_eq!(c.failure_step().unwrap().phase, StepPhase::Confirm);
    assert!(
        c.answer.contains("(confirmed by 2 more runs)"),
        "{}",
        c.answer
    );
}

#[tokio::test]
async fn a_harness_bound_step_ends_the_search_without_a_capacity() {
    let stand = Stand {
        cap: 10_000.0,
        harness_cap: 700.0,
        flaky: vec![],
        runs: vec![],
    };
    let (c, runs) = search_against(stand, 0).await;
    assert_eq!(c.outcome, Outcome::HarnessBound);
    assert_eq!(
        runs,
        vec![200.0, 400.0, 800.0],
        "no step after the harness-bound one"
    );
    assert!(c.knee.is_none());
    assert!(
        c.answer.starts_with("harness-bound at 800 deliveries/s")
            && c.answer.contains("75 ms")
            && c.answer.contains("at least 400 deliveries/s"),
        "{}",
        c.answer
    );
    assert!(!c.answer.contains("sustains"), "{}", c.answer);
}

#[tokio::test]
async fn when_even_from_fails_there_is_no_capacity() {
    let stand = Stand {
        cap: 100.0,
        harness_cap: f64::INFINITY,
        flaky: vec![],
        runs: vec![],
    };
    let (c, runs) = search_against(stand, 0).await;
    assert_eq!(c.outcome, Outcome::NoCapacity);
    assert_eq!(runs, vec![200.0]);
    assert!(
        c.answer
            .starts_with("no capacity found: even --from fails at 5 msg/s: delivered 100/s"),
        "{}",
        c.answer
    );
}
