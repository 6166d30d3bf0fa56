//! Faults on the run's clock against the real stack (3 brokers, RF 3,
//! `min.insync.replicas` 2, two reference servers, persist on the producer side):
//! - a server is killed and its users reconnect to the other within the configured bound;
//!   nothing is lost outside the fault's window and no receipted message is missing;
//! - a network partition of one server's users (through the relay) is reported as their
//!   outage, close to its length;
//! - PostgreSQL paused for 5 s under `--persist producer` and `--persist consumer`: no
//!   row missing afterwards; under `producer` a receipt waited at least about the pause
//!   (receipts come after the row is written), under `consumer` none did;
//! - the users of the other server are not slowed down by a partition of one server;
//! - the leader of a room's partition is killed: no receipted message missing from the
//!   database or any subscriber, the run completes, and the reported outage agrees with
//!   the per-second timeline to within its 1 s resolution.
//!
//! After each process fault the run starts the killed process again, so the next trial
//! finds the stack whole.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{trial, TempDir, TestEnv};
use stompede::load::{run, RunOptions};
use stompede::report::{FaultReport, Summary, HTML_FILE};
use stompede::scenario::Scenario;
use stompede::server::Persist;

fn main() {
    common::run_with(3, 2, Some(1), |env| {
        vec![
            trial(env, "kill_server_users_reconnect_to_the_other", kill_server),
            trial(
                env,
                "partition_of_one_server_is_its_users_outage",
                partition,
            ),
            trial(env, "pause_db_loses_no_row_and_delays_receipts", pause_db),
            trial(
                env,
                "kill_partition_leader_keeps_every_receipted_message",
                kill_leader,
            ),
        ]
    })
}

/// 40 users (20 per server) at 2 msg/s per sender, receipts on; 1 s warm-up, 10 s
/// measured. `rooms` is the `[[rooms]]` table, `faults` the `[[faults]]` tables.
fn scenario(name: &str, rooms: &str, faults: &str) -> Scenario {
    scenario_persist(name, rooms, faults, "producer")
}

fn scenario_persist(name: &str, rooms: &str, faults: &str, persist: &str) -> Scenario {
    let text = format!(
        r#"
name = "{name}"
duration = "10s"
warmup = "1s"
grace = "4s"
[users]
count = 40
connect_rate = 200.0
heartbeat = "10s"
[users.reconnect]
delay = "100ms"
max_delay = "1s"
jitter = 0.5
{rooms}
[load]
model = "open"
rate = 2.0
per = "sender"
arrival = "constant"
message_size = {{ fixed = 120 }}
receipts = true
{faults}
[target]
kind = "local"
brokers = 3
partitions = 3
servers = 2
persist = "{persist}"
"#
    );
    Scenario::from_str(&text, Path::new("faults-test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

const FOUR_ROOMS: &str = "[[rooms]]\nname = \"r\"\ncount = 4\nmembers = 10\nsenders = 3";

async fn go(env: &TestEnv, scenario: Scenario) -> (Summary, std::path::PathBuf, TempDir) {
    let out = TempDir::new("stompede-faults-report");
    let options = RunOptions {
        out: out.0.clone(),
        state_dir: env.state_dir.clone(),
        server_exe: env!("CARGO_BIN_EXE_stompede").into(),
        progress: false,
        sample_interval: Duration::from_secs(1),
    };
    let outcome = run(scenario, &options)
        .await
        .unwrap_or_else(|e| panic!("the run failed: {e}"));
    (outcome.summary, outcome.dir, out)
}

fn only_fault(s: &Summary) -> FaultReport {
    let faults = s
        .faults
        .as_ref()
        .expect("summary.json has the faults section");
    assert_eq!(faults.injected.len(), 1);
    let f = faults.injected[0].clone();
    assert!(f.ok, "the fault was not applied: {:?}", f.error);
    f
}

fn durable(s: &Summary) {
    let d = &s.faults.as_ref().unwrap().durability;
    assert!(d.receipted > 0, "no receipted message at all");
    assert_eq!(
        d.receipted_lost, 0,
        "receipted messages missing at a subscriber"
    );
    assert_eq!(
        d.receipted_missing_in_db,
        Some(0),
        "receipted messages missing in the database"
    );
}

async fn kill_server(env: Arc<TestEnv>) {
    let s = scenario(
        "kill-server",
        FOUR_ROOMS,
        "[[faults]]\nat = \"3s\"\nkind = \"kill-server\"\nserver = \"s2\"",
    );
    let (summary, dir, _out) = go(&env, s).await;
    let f = only_fault(&summary);
    assert_eq!(f.affected, "users of s2");
    assert_eq!(f.affected_users, 20);
    assert_eq!(
        f.disconnected, 20,
        "every user of s2 lost its session: {f:?}"
    );
    assert_eq!(f.reconnected, 20, "every user of s2 came back: {f:?}");
    // Bound: the longest backoff (1 s) plus a connection and its SUBSCRIBE receipts.
    let r = f.reconnect_ms.as_ref().expect("reconnect times");
    assert!(r.max_ms <= 3000.0, "a reconnection took {} ms", r.max_ms);
    assert_eq!(summary.sessions.disconnects, 20);
    let faults = summary.faults.as_ref().unwrap();
    assert_eq!(
        faults.lost_outside_fault_windows,
        Some(0),
        "loss outside the fault's window: {:?} of {}",
        faults.lost_outside_fault_windows,
        summary.integrity.lost
    );
    durable(&summary);
    let html = std::fs::read_to_string(dir.join(HTML_FILE)).expect("report.html");
    assert!(html.contains("Faults and recovery") && html.contains("kill-server"));
}

async fn partition(env: Arc<TestEnv>) {
    let s = scenario(
        "partition",
        FOUR_ROOMS,
        "[[faults]]\nat = \"3s\"\nkind = \"partition\"\nserver = \"s1\"\nduration = \"3s\"",
    );
    let (summary, _dir, _out) = go(&env, s).await;
    let f = only_fault(&summary);
    assert_eq!(f.affected, "users of s1");
    let lifted = f.end_s.unwrap() - f.at_s.unwrap();
    assert!((lifted - 3.0).abs() < 0.2, "lifted after {lifted} s");
    let o = f.outage.as_ref().expect("an outage for the users of s1");
    assert!(
        o.length_s >= 2.6 && o.length_s <= 4.0,
        "outage {} s for a 3 s partition",
        o.length_s
    );
    assert!(o.recovered);
    // Held, not lost: TCP keeps the traffic of a partition that heals in time.
    assert_eq!(summary.integrity.lost, 0);
    assert_eq!(f.disconnected, 0);
    durable(&summary);
    // The users of s2 among themselves never went through s1's relay: their latency
    // stays what it was. A partition that reached them would hold their deliveries for
    // up to 3 s; noise here is a few ms, but a second's p99 of these few deliveries is
    // about their slowest one, and one stall of a debug build on a busy machine has
    // reached 147 ms against 29 ms before, so the bound is 3x or 500 ms more.
    let others = f.others.as_ref().expect("figures for the other users");
    assert_eq!(others.who, "users of s2 among themselves");
    let before = others
        .p99_before_ms
        .expect("their p99 before the partition");
    let during = others
        .p99_during_ms
        .expect("their p99 during the partition");
    assert!(
        during <= (3.0 * before).max(before + 500.0),
        "the users of s2 went from p99 {before} ms to {during} ms during s1's partition"
    );
}

/// Under `--persist producer`, then (the servers restarted) under `--persist consumer`;
/// the stack goes back to `producer` for the trials after this one either way.
async fn pause_db(env: Arc<TestEnv>) {
    pause_db_under(&env, Persist::Producer).await;
    env.reshape_persist(Persist::Consumer).await;
    let consumer = {
        let env = env.clone();
        tokio::spawn(async move { pause_db_under(&env, Persist::Consumer).await }).await
    };
    env.reshape_persist(Persist::Producer).await;
    if let Err(e) = consumer {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn pause_db_under(env: &TestEnv, persist: Persist) {
    let s = scenario_persist(
        &format!("pause-db-{}", persist.as_str()),
        FOUR_ROOMS,
        "[[faults]]\nat = \"3s\"\nkind = \"pause-db\"\nduration = \"5s\"",
        persist.as_str(),
    );
    let (summary, _dir, _out) = go(env, s).await;
    let f = only_fault(&summary);
    let wait = f.receipt_max_ms.expect("receipts during the pause");
    match persist {
        // A receipt comes after the row is written: the pause holds it.
        Persist::Producer => assert!(
            wait >= 4500.0,
            "the longest receipt wait was {wait} ms for a 5 s pause"
        ),
        // A receipt comes once Kafka has the record; the rows follow when the
        // database is back.
        Persist::Consumer => assert!(
            wait < 2500.0,
            "under persist consumer a receipt waited {wait} ms for the paused database"
        ),
    }
    let audit = summary
        .db
        .as_ref()
        .and_then(|d| d.audit.as_ref())
        .expect("a database audit");
    assert_eq!(audit.missing, 0, "rows missing after the pause: {audit:?}");
    assert_eq!(summary.integrity.lost, 0);
    durable(&summary);
}

async fn kill_leader(env: Arc<TestEnv>) {
    // One room: every delivery goes through the killed leader's partition, so the
    // timeline's seconds without deliveries show the outage too.
    let s = scenario(
        "kill-leader",
        "[[rooms]]\nname = \"hall\"\ncount = 1\nmembers = 40\nsenders = 8",
        "[[faults]]\nat = \"2s\"\nkind = \"kill-broker\"\nnode = \"leader\"\nroom = \"hall-0\"",
    );
    let (summary, _dir, _out) = go(&env, s).await;
    let f = only_fault(&summary);
    assert!(
        f.target.contains("leader of hall-0's partition"),
        "{}",
        f.target
    );
    durable(&summary);
    let o = f.outage.as_ref().expect("an outage");
    assert!(o.recovered, "deliveries never came back: {o:?}");
    // The timeline: the last second with deliveries before the outage and the first
    // after it bracket the outage's start and end (1 s resolution). A delivery stamped
    // just before a second closes can be counted in the next one when its user's thread
    // is held up (three JVM brokers on two cores), hence the allowance.
    const SLACK: f64 = 0.25;
    let at = f.at_s.unwrap();
    let points = &summary.timeline;
    let first_empty = points
        .iter()
        .position(|p| p.t_s > at && p.delivered == 0)
        .expect("a second without deliveries after the kill");
    let back = points[first_empty..]
        .iter()
        .find(|p| p.delivered > 0)
        .expect("deliveries again");
    let before = &points[first_empty - 1];
    assert!(
        o.start_s > before.t_s - 1.0 - SLACK && o.start_s <= before.t_s + SLACK,
        "outage start {} vs the timeline's last delivering second ending {}",
        o.start_s,
        before.t_s
    );
    assert!(
        o.end_s > back.t_s - 1.0 - SLACK && o.end_s <= back.t_s + SLACK,
        "outage end {} vs the timeline's first delivering second ending {}",
        o.end_s,
        back.t_s
    );
}
