//! `[[faults]]` and `[users.reconnect]`: parsing, defaults and refusals.

use std::path::Path;
use std::time::Duration;

use super::*;

fn base(target: &str, extra: &str) -> String {
    format!(
        r#"
duration = "20s"
warmup = "2s"
[users]
count = 40
[users.reconnect]
delay = "100ms"
[[rooms]]
name = "room"
count = 2
members = 20
[load]
model = "open"
rate = 1.0
{target}
{extra}
"#
    )
}

const LOCAL: &str = "[target]\nkind = \"local\"\nbrokers = 3\nservers = 2";
const EXTERNAL: &str =
    "[target]\nkind = \"external\"\nurls = [\"ws://127.0.0.1:1/ws\", \"ws://127.0.0.1:2/ws\"]";

fn load(text: &str) -> Result<Scenario, String> {
    Scenario::from_str(text, Path::new("f.toml")).map_err(|e| e.to_string())
}

#[test]
fn every_kind_parses_with_its_keys() {
    let s = load(&base(
        LOCAL,
        r#"
[[faults]]
at = "1s"
kind = "kill-broker"
node = "leader"
room = "room-1"
[[faults]]
at = "2s"
kind = "restart-broker"
node = 2
[[faults]]
at = "3s"
kind = "kill-server"
server = "s2"
[[faults]]
at = "4s"
kind = "pause-db"
duration = "5s"
[[faults]]
at = "5s"
kind = "delay"
server = "s1"
duration = "2s"
delay = "200ms"
[[faults]]
at = "6s"
kind = "partition"
server = "s1"
duration = "3s"
[[faults]]
at = "7s"
kind = "exec"
command = "true"
"#,
    ))
    .unwrap();
    assert_eq!(s.faults.len(), 7);
    assert_eq!(
        s.faults[0].action,
        FaultAction::KillBroker {
            node: None,
            room: Some("room-1".into())
        }
    );
    assert_eq!(s.faults[3].action.duration(), Some(Duration::from_secs(5)));
    assert!(s.faults[5].action.is_network() && !s.faults[6].action.needs_local_stack());
    let r = s.users.reconnect.as_ref().unwrap();
    assert_eq!(
        (r.delay, r.max_delay, r.jitter),
        (Duration::from_millis(100), Duration::from_secs(5), 0.5)
    );
    assert_eq!(r.backoff(0), Duration::from_millis(100));
    assert_eq!(r.backoff(3), Duration::from_millis(800));
    assert_eq!(r.backoff(30), Duration::from_secs(5), "capped at max_delay");
    // The resolved scenario round-trips through JSON (summary.json keeps it).
    let json = serde_json::to_value(&s).unwrap();
    let back: Scenario = serde_json::from_value(json).unwrap();
    assert_eq!(back.faults, s.faults);
}

#[test]
fn refusals_name_the_key_and_what_to_do() {
    let cases = [
        (
            LOCAL,
            "[[faults]]\nat = \"1s\"\nkind = \"explode\"",
            "faults[0].kind",
            "is not a fault kind",
        ),
        (
            LOCAL,
            "[[faults]]\nat = \"1s\"\nkind = \"kill-server\"",
            "faults[0].server",
            "missing",
        ),
        (
            LOCAL,
            "[[faults]]\nat = \"1s\"\nkind = \"kill-server\"\nserver = \"s3\"",
            "faults[0].server",
            "s1 to s2",
        ),
        (
            LOCAL,
            "[[faults]]\nat = \"1s\"\nkind = \"kill-broker\"\nnode = 4",
            "faults[0].node",
            "brokers 1 to 3",
        ),
        (
            LOCAL,
            "[[faults]]\nat = \"1s\"\nkind = \"kill-broker\"\nnode = \"leader\"\nroom = \"nope\"",
            "faults[0].room",
            "not a room",
        ),
        (
            LOCAL,
            "[[faults]]\nat = \"30s\"\nkind = \"kill-server\"\nserver = \"s1\"",
            "faults[0].at",
            "sending phase",
        ),
        (
            LOCAL,
            "[[faults]]\nat = \"20s\"\nkind = \"pause-db\"\nduration = \"5s\"",
            "faults[0].duration",
            "still be on",
        ),
        (
            LOCAL,
            "[[faults]]\nat = \"1s\"\nkind = \"pause-db\"\nduration = \"5s\"\nserver = \"s1\"",
            "faults[0].server",
            "does not apply",
        ),
        (
            EXTERNAL,
            "[[faults]]\nat = \"1s\"\nkind = \"kill-broker\"\nnode = 1",
            "faults[0].kind",
            "kind = \"exec\"",
        ),
    ];
    for (target, faults, key, says) in cases {
        let e = load(&base(target, faults)).expect_err(faults);
        assert!(e.contains(key) && e.contains(says), "{faults}: {e}");
    }
    // Network faults and exec are fine against an external target.
    load(&base(EXTERNAL, "[[faults]]\nat = \"1s\"\nkind = \"drop\"\nserver = \"s2\"\nduration = \"1s\"\n[[faults]]\nat = \"2s\"\nkind = \"exec\"\ncommand = \"true\"")).unwrap();
    let e = load(&base(LOCAL, "").replace("delay = \"100ms\"", "delay = \"100ms\"\njitter = 2.0"))
        .unwrap_err();
    assert!(e.contains("users.reconnect.jitter"), "{e}");
}
