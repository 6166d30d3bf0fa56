//! `stompede sweep` on a real stack: a sweep over partitions 1 and 3 on one broker
//! writes `sweep.json` with two cells whose partition counts were read back from Kafka,
//! and `sweep.html`; and the read-back is Kafka's word, not the request echoed: a
//! partition added behind the stack's back shows up in it.

mod common;

use std::path::Path;
use std::time::Duration;

use common::TempDir;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use stompede::campaign::sweep::{self, observe, parse_set, SweepOptions};
use stompede::load::RunOptions;
use stompede::report::sweep::{Sweep, SWEEP_FILE, SWEEP_HTML};
use stompede::report::Persist;
use stompede::scenario::Scenario;
use stompede::stack::{self, Reshaped, StackOptions};

/// 10 users in 2 rooms of 5, two senders a room at 5 msg/s: 1 s warm-up, 2 s measured.
fn scenario() -> Scenario {
    let text = r#"
name = "sweep-test"
duration = "2s"
warmup = "1s"
grace = "1s"
[users]
count = 10
connect_rate = 200.0
heartbeat = "0s"
[[rooms]]
name = "r"
count = 2
members = 5
senders = 2
[load]
model = "open"
rate = 5.0
per = "sender"
arrival = "constant"
message_size = { fixed = 100 }
receipts = true
[slo]
max_loss = 0.0
[target]
kind = "local"
brokers = 1
partitions = 3
servers = 1
persist = "producer"
"#;
    Scenario::from_str(text, Path::new("sweep-test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn run_options(state: &Path, out: &Path) -> RunOptions {
    RunOptions {
        out: out.to_path_buf(),
        state_dir: state.to_path_buf(),
        server_exe: env!("CARGO_BIN_EXE_stompede").into(),
        progress: false,
        sample_interval: Duration::from_secs(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_over_partitions_reads_each_cell_back_from_kafka() {
    let dir = TempDir::new("stompede-sweep");
    let out = dir.0.join("reports");
    let opts = SweepOptions {
        axes: vec![parse_set("partitions=1,3").expect("valid --set")],
        repeat: 1,
        seed: None,
        capacity: None,
        out: out.clone(),
        run: run_options(&dir.0.join("state"), &out),
    };
    let mut seen = Vec::new();
    let outcome = sweep::sweep(scenario(), &opts, &mut |s, e| {
        seen.push((e.cell, s.cells[e.cell].runs.len()));
    })
    .await
    .unwrap_or_else(|e| panic!("the sweep could not run: {e}"));
    assert_eq!(seen, [(0, 1), (1, 1)], "one run per cell, in matrix order");
    let text = std::fs::read_to_string(outcome.dir.join(SWEEP_FILE)).expect("sweep.json written");
    let sweep = Sweep::from_json(&text).expect("sweep.json loads back");
    assert_eq!(sweep, outcome.sweep);
    assert!(sweep.stopped.is_none(), "{:?}", sweep.stopped);
    assert_eq!(sweep.cells.len(), 2);
    for (cell, partitions) in sweep.cells.iter().zip([1u32, 3]) {
        assert_eq!(cell.requested.partitions, partitions);
        assert_eq!(cell.runs.len(), 1, "{}", cell.label);
        let run = &cell.runs[0];
        assert!(run.error.is_none(), "{}: {:?}", cell.label, run.error);
        assert_eq!(run.observed.partitions, partitions, "{}", cell.label);
        assert_eq!(run.observed.broker_ids.len(), 1);
        assert_eq!(run.observed.servers.len(), 1);
        assert_eq!(run.observed.servers[0].persist, "producer");
        let summary = run.summary.as_ref().expect("a summary");
        let st = summary.target.stack.as_ref().expect("a local stack");
        assert_eq!(st.partitions, partitions, "the run's own record");
        assert!(summary.integrity.delivered > 0 && summary.integrity.lost == 0);
        // The topic was recreated between the cells: the history table was emptied with
        // it, so no row of the second cell collided with one of the first.
        let audit = summary
            .db
            .as_ref()
            .and_then(|d| d.audit.as_ref())
            .expect("a database audit");
        assert_eq!(
            (audit.missing, audit.duplicates),
            (0, 0),
            "{}: {audit:?}",
            cell.label
        );
        assert!(audit.rows_for_run > 0);
        assert!(
            Path::new(&run.dir).join("summary.json").is_file(),
            "{}",
            run.dir
        );
        let kept = Path::new(&run.dir)
            .parent()
            .expect("a run directory inside the cell's")
            .join("server-logs/server-s1.log");
        assert!(kept.is_file(), "{} not kept", kept.display());
    }
    assert_eq!(
        sweep.cells[1].runs[0].reshape,
        Reshaped::Servers {
            topic_recreated: true
        }
        .describe()
    );
    let html = std::fs::read_to_string(outcome.dir.join(SWEEP_HTML)).expect("sweep.html written");
    for needle in [
        "1b/1p/1s producer",
        "1b/3p/1s producer",
        "data:image/png;base64,",
        "class=\"num best\"",
    ] {
        assert!(html.contains(needle), "{needle:?} not in sweep.html");
    }
    assert!(outcome.dir.join("sweep-latency.png").is_file());
    // The sweep took its stack down.
    assert!(stack::status(&dir.0.join("state"))
        .expect("status")
        .is_none());
    // `compare` reads the sweep: one entry per cell.
    let cmp = stompede::campaign::compare::compare(&[outcome.dir.join(SWEEP_FILE)], &out)
        .unwrap_or_else(|e| panic!("compare of the sweep: {e}"));
    assert_eq!(cmp.comparison.entries.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_back_is_what_kafka_reports_not_what_was_asked() {
    let dir = TempDir::new("stompede-reshape");
    let mut stack = stack::up(&StackOptions {
        brokers: 1,
        partitions: 1,
        servers: 1,
        persist: Persist::Producer,
        state_dir: dir.0.clone(),
        server_exe: env!("CARGO_BIN_EXE_stompede").into(),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("stack up: {e}"));
    let want = StackOptions {
        brokers: 1,
        partitions: 2,
        servers: 2,
        persist: Persist::Consumer,
        server_exe: env!("CARGO_BIN_EXE_stompede").into(),
        ..StackOptions::default()
    };
    let how = stack
        .reshape(&want)
        .await
        .unwrap_or_else(|e| panic!("reshape: {e}"));
    assert_eq!(
        how,
        Reshaped::Servers {
            topic_recreated: true
        }
    );
    assert_eq!(
        stack.reshape(&want).await.expect("no-op"),
        Reshaped::Unchanged
    );
    let pids: Vec<u32> = stack.info().servers.iter().map(|s| s.pid).collect();
    assert_eq!(
        stack
            .reset(Path::new(env!("CARGO_BIN_EXE_stompede")))
            .await
            .unwrap_or_else(|e| panic!("reset: {e}")),
        Reshaped::Servers {
            topic_recreated: true
        }
    );
    assert!(
        stack.info().servers.iter().all(|s| !pids.contains(&s.pid)),
        "the servers were restarted"
    );
    let o = observe(stack.info())
        .await
        .unwrap_or_else(|e| panic!("observe: {e}"));
    assert_eq!(o.partitions, 2);
    assert_eq!(o.servers.len(), 2);
    assert!(o.servers.iter().all(|s| s.persist == "consumer"), "{o:?}");
    // The record on disk says the same as the stack.
    let recorded = stack::status(&dir.0).expect("status").expect("a stack");
    assert_eq!((recorded.partitions, recorded.servers.len()), (2, 2));
    // A partition added behind the stack's back: the record still says 2, Kafka says 3.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &stack.info().kafka_bootstrap)
        .create()
        .expect("admin client");
    let res = admin
        .create_partitions(
            &[NewPartitions::new(&stack.info().topic, 3)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create partitions");
    assert!(res.iter().all(|r| r.is_ok()), "{res:?}");
    let mut last = 0;
    for _ in 0..100 {
        last = observe(stack.info()).await.expect("observe").partitions;
        if last == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 3, "the read-back did not follow Kafka");
    assert_eq!(stack.info().partitions, 2);
    stack.down().await.expect("stack down");
}
