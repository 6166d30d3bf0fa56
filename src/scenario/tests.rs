//! Tests of loading: defaults are filled in, and every bad input is refused with a
//! message naming the file, the key path, the value and what is allowed. The fixture and
//! helpers here are shared with `tests_plan.rs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

pub(super) const FILE: &str = "scenarios/unit.toml";

pub(super) const BASE: &str = r#"
name = "unit"
duration = "10s"

[users]
count = 20

[[rooms]]
name = "pairs"
count = 5
members = 2

[[rooms]]
name = "groups"
count = 2
members = 8
senders = 3

[load]
rate = 2.0
"#;

pub(super) fn load(text: &str) -> Result<Scenario, ScenarioError> {
    Scenario::from_str(text, Path::new(FILE))
}

pub(super) fn ok(text: &str) -> Scenario {
    load(text).unwrap_or_else(|e| panic!("expected a valid scenario, got: {e}"))
}

/// `BASE` with `from` replaced by `to` (which must occur).
pub(super) fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

/// Loads `text`, expects an error, and checks that its message names the file, the key
/// and every one of `expect`.
pub(super) fn refused(text: &str, key: &str, expect: &[&str]) -> ScenarioError {
    let err = match load(text) {
        Ok(_) => panic!("expected an error about {key}, but the scenario loaded"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.starts_with(FILE), "file name missing: {msg}");
    assert_eq!(err.key(), Some(key), "wrong key in: {msg}");
    assert!(msg.contains(key), "key {key} missing: {msg}");
    for e in expect {
        assert!(msg.contains(e), "{e:?} missing: {msg}");
    }
    err
}

#[test]
fn base_loads_with_defaults() {
    let s = ok(BASE);
    assert_eq!(s.name, "unit");
    assert_eq!(s.duration, Duration::from_secs(10));
    assert_eq!(s.warmup, Duration::ZERO);
    assert_eq!(s.grace, Duration::from_secs(5));
    assert_eq!(s.seed, 1);
    assert_eq!(s.users.per_task, 1);
    assert_eq!(s.users.heartbeat, Duration::from_secs(10));
    assert_eq!(s.rooms[0].senders, 2);
    assert_eq!(s.rooms[1].senders, 3);
    assert_eq!(
        s.load.model,
        LoadModel::Open {
            rate: 2.0,
            per: RatePer::Room,
            arrival: Arrival::Constant
        }
    );
    assert_eq!(s.load.message_size, MessageSize { min: 64, max: 256 });
    assert!(s.receipts_expected());
    assert_eq!(s.target.kind, TargetKind::Local(LocalStack::default()));
    assert_eq!(s.target.send_destination("pairs-0"), "/app/chat/pairs-0");
    assert_eq!(
        s.target.subscribe_destination("pairs-0"),
        "/topic/room/pairs-0"
    );
    assert_eq!(s.source, PathBuf::from(FILE));
    assert!(s.slo.is_empty() && s.churn.is_none());
}

#[test]
fn name_defaults_to_file_stem() {
    let s = Scenario::from_str(
        &edit("name = \"unit\"\n", ""),
        Path::new("dir/town-hall.toml"),
    )
    .unwrap();
    assert_eq!(s.name, "town-hall");
}

#[test]
fn unknown_top_level_key_lists_allowed_keys() {
    let err = refused(
        &format!("{BASE}\n[user]\ncount = 3\n"),
        "user",
        &["unknown key", "`users`", "`rooms`", "`load`"],
    );
    assert!(err.pos().is_some());
}

#[test]
fn unknown_nested_key_names_path_position_and_allowed_keys() {
    let text = edit("count = 20", "count = 20\nconut = 3");
    let err = refused(
        &text,
        "users.conut",
        &["`count`", "`connect_rate`", "`heartbeat`", "`per_task`"],
    );
    let line = text.lines().position(|l| l.starts_with("conut")).unwrap() + 1;
    assert_eq!(err.pos(), Some(Pos { line, column: 1 }));
    assert!(err.to_string().contains(&format!("{FILE}:{line}:1:")));
}

#[test]
fn top_level_key_after_a_table_gets_a_hint() {
    refused(
        &format!("{BASE}seed = 3\n"),
        "load.seed",
        &["unknown key `seed`", "above the first [table]"],
    );
}

#[test]
fn unknown_key_in_a_room_group_and_inline_table() {
    refused(
        &edit("senders = 3", "senders = 3\nsize = 4"),
        "rooms[1].size",
        &["`members`", "`senders`"],
    );
    refused(
        &edit(
            "rate = 2.0",
            "rate = 2.0\nmessage_size = { min = 64, mux = 90 }",
        ),
        "load.message_size.mux",
        &["`min`", "`max`", "`fixed`"],
    );
}

#[test]
fn wrong_types_name_the_expected_type() {
    refused(
        &edit("rate = 2.0", "rate = \"fast\""),
        "load.rate",
        &["\"fast\"", "expected a number"],
    );
    refused(
        &edit("count = 20", "count = 2.5"),
        "users.count",
        &["2.5", "whole number"],
    );
    refused(
        &edit("count = 20", "count = -4"),
        "users.count",
        &["-4", "whole number"],
    );
    refused(
        &edit("duration = \"10s\"", "duration = 10"),
        "duration",
        &["duration string", "\"30s\""],
    );
    refused(
        &edit("rate = 2.0", "rate = 2.0\nreceipts = \"yes\""),
        "load.receipts",
        &["true or false"],
    );
}

#[test]
fn bad_durations_say_which_units_are_allowed() {
    refused(
        &edit("duration = \"10s\"", "duration = \"10 minutes\""),
        "duration",
        &["\"10 minutes\"", "ms, s, m or h"],
    );
    refused(
        &edit("duration = \"10s\"", "duration = \"0s\""),
        "duration",
        &["longer than 0s"],
    );
    refused(
        &edit("duration = \"10s\"\n", ""),
        "duration",
        &["missing", "duration = \"60s\""],
    );
}

#[test]
fn zero_or_negative_rate_is_refused() {
    for bad in ["0.0", "-1.5", "nan", "inf"] {
        refused(
            &edit("rate = 2.0", &format!("rate = {bad}")),
            "load.rate",
            &["greater than 0"],
        );
    }
    refused(
        &edit("rate = 2.0", "rate = 0.0\nper = \"sender\""),
        "load.rate",
        &["per sender"],
    );
}

#[test]
fn rooms_are_required() {
    let text = BASE.split("[[rooms]]").next().unwrap().to_string() + "[load]\nrate = 1.0\n";
    refused(&text, "rooms", &["[[rooms]]", "name", "count", "members"]);
}

#[test]
fn members_must_fit_the_user_count() {
    let err = refused(
        &edit("members = 8", "members = 21"),
        "rooms[1].members",
        &["21", "users.count = 20"],
    );
    let line = edit("members = 8", "members = 21")
        .lines()
        .position(|l| l == "members = 21")
        .unwrap()
        + 1;
    assert_eq!(err.pos().map(|p| p.line), Some(line));
    refused(
        &edit("members = 2", "members = 0"),
        "rooms[0].members",
        &["must be 1 to"],
    );
}

#[test]
fn senders_must_fit_the_members() {
    refused(
        &edit("senders = 3", "senders = 9"),
        "rooms[1].senders",
        &["9", "1 to members = 8"],
    );
    refused(
        &edit("senders = 3", "senders = 0"),
        "rooms[1].senders",
        &["1 to members = 8"],
    );
}

#[test]
fn room_group_names_are_checked_and_unique() {
    refused(
        &edit("name = \"groups\"", "name = \"pairs\""),
        "rooms[1].name",
        &["already used by rooms[0]"],
    );
    refused(
        &edit("name = \"groups\"", "name = \"big room\""),
        "rooms[1].name",
        &["A-Z", "'-'"],
    );
    refused(
        &edit("name = \"groups\"\n", ""),
        "rooms[1].name",
        &["missing"],
    );
}

#[test]
fn message_size_limits() {
    let with = |m: &str| edit("rate = 2.0", &format!("rate = 2.0\nmessage_size = {m}"));
    refused(
        &with("{ min = 300, max = 200 }"),
        "load.message_size.min",
        &["300", "must not exceed", "max = 200"],
    );
    refused(
        &with("{ min = 10, max = 200 }"),
        "load.message_size.min",
        &["10", "at least 64", "stamp"],
    );
    refused(
        &with("{ fixed = 20 }"),
        "load.message_size.fixed",
        &["at least 64", "stamp"],
    );
    refused(
        &with("{ fixed = 100, min = 64 }"),
        "load.message_size",
        &["fixed = 128", "min = 64, max = 256"],
    );
    refused(
        &with("{ min = 64, max = 1000000 }"),
        "load.message_size.max",
        &["at most 32768"],
    );
    assert_eq!(
        ok(&with("{ fixed = 128 }")).load.message_size,
        MessageSize { min: 128, max: 128 }
    );
}

#[test]
fn unknown_enum_values_list_the_allowed_ones() {
    refused(
        &edit("rate = 2.0", "model = \"opn\"\nrate = 2.0"),
        "load.model",
        &["`opn`", "`open`", "`closed`"],
    );
    refused(
        &edit("rate = 2.0", "rate = 2.0\nper = \"user\""),
        "load.per",
        &["`room`", "`sender`"],
    );
    refused(
        &edit("rate = 2.0", "rate = 2.0\narrival = \"burst\""),
        "load.arrival",
        &["`constant`", "`poisson`"],
    );
    let target = |t: &str| format!("{BASE}\n[target]\n{t}\n");
    refused(
        &target("kind = \"remote\""),
        "target.kind",
        &["`remote`", "`local`", "`external`"],
    );
    refused(
        &target("persist = \"both\""),
        "target.persist",
        &["`producer`", "`consumer`"],
    );
    refused(
        &target("kind = \"external\"\nurls = [\"ws://h:1/ws\"]\nbody = \"xml\""),
        "target.body",
        &["`chat-json`", "`raw`"],
    );
}

#[test]
fn brokers_must_be_one_or_three() {
    let err = refused(
        &format!("{BASE}\n[target]\nbrokers = 2\n"),
        "target.brokers",
        &["= 2", "must be 1", "or 3"],
    );
    assert!(err.pos().is_some());
    refused(
        &format!("{BASE}\n[target]\npartitions = 0\n"),
        "target.partitions",
        &["1 to 1000"],
    );
}

#[test]
fn keys_of_the_other_model_or_kind_are_refused() {
    refused(
        &edit("rate = 2.0", "rate = 2.0\nthink_time = \"1s\""),
        "load.think_time",
        &["model = \"closed\""],
    );
    refused(
        &edit("rate = 2.0", "model = \"closed\"\nrate = 2.0"),
        "load.rate",
        &["model = \"open\""],
    );
    refused(
        &edit("rate = 2.0", "model = \"closed\""),
        "load.think_time",
        &["missing", "think_time = \"1s\""],
    );
    refused(
        &format!("{BASE}\n[target]\nurls = [\"ws://x:1/ws\"]\n"),
        "target.urls",
        &["kind = \"external\""],
    );
    refused(
        &format!("{BASE}\n[target]\nkind = \"external\"\n"),
        "target.urls",
        &["missing", "ws://"],
    );
    refused(
        &format!("{BASE}\n[target]\nkind = \"external\"\nurls = [\"ws://x:1/ws\"]\nservers = 2\n"),
        "target.servers",
        &["kind = \"local\""],
    );
    refused(
        &format!("{BASE}\n[target.kafka]\nbootstrap = \"h:9092\"\n"),
        "target.kafka",
        &["kind = \"external\""],
    );
}

#[test]
fn external_target_values_are_checked() {
    let ext = |extra: &str| {
        format!("{BASE}\n[target]\nkind = \"external\"\nurls = [\"ws://127.0.0.1:15674/ws\"]\n{extra}\n")
    };
    let s = ok(&ext("send = \"/topic/chat.{room}\"\n[target.connect]\nlogin = \"guest\"\npasscode = \"guest\"\nhost = \"/\""));
    assert!(
        !s.receipts_expected(),
        "external targets default to receipts = false"
    );
    assert_eq!(s.target.send_destination("pairs-1"), "/topic/chat.pairs-1");
    refused(&ext("send = \"/app/chat\""), "target.send", &["{room}"]);
    refused(
        &format!("{BASE}\n[target]\nkind = \"external\"\nurls = [\"http://h/ws\"]\n"),
        "target.urls[0]",
        &["ws://"],
    );
    refused(
        &ext("[target.db]\nurl = \"mysql://h/db\""),
        "target.db.url",
        &["postgres://"],
    );
    refused(
        &ext("[target.db]\nurl = \"postgres://h/db\"\ntable = \"x; drop table y\""),
        "target.db.table",
        &["plain SQL name"],
    );
    refused(
        &ext("[target.kafka]\nbootstrap = \"\""),
        "target.kafka.bootstrap",
        &["host:port"],
    );
}

#[test]
fn slo_values_are_checked() {
    let slo = |s: &str| format!("{BASE}\n[slo]\n{s}\n");
    refused(
        &slo("max_loss = 1.5"),
        "slo.max_loss",
        &["1.5", "from 0 to 1"],
    );
    refused(&slo("p99_ms = -1.0"), "slo.p99_ms", &["greater than 0"]);
    refused(
        &slo("p50_ms = 100.0\np99_ms = 50.0"),
        "slo.p99_ms",
        &["slo.p50_ms = 100"],
    );
    refused(
        &slo("p95_ms = 100.0"),
        "slo.p95_ms",
        &["`p50_ms`", "`p99_ms`", "`max_loss`"],
    );
}

#[test]
fn churn_is_checked() {
    let churn = |c: &str| format!("{BASE}\n[churn]\n{c}\n");
    let s = ok(&churn("leaves_per_second = 0.5"));
    assert_eq!(
        s.churn,
        Some(Churn {
            leaves_per_second: 0.5,
            rejoin_after: Duration::from_secs(2)
        })
    );
    refused(
        &churn("leaves_per_second = 0.0"),
        "churn.leaves_per_second",
        &["greater than 0"],
    );
    refused(
        &churn("leaves_per_second = 100.0\nrejoin_after = \"10s\""),
        "churn.leaves_per_second",
        &["away at once", "26 memberships"],
    );
}

#[test]
fn toml_syntax_errors_have_line_and_column() {
    let err = load("duration = \"10s\"\n[users\ncount = 1\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{FILE}:2:")), "{msg}");
    assert!(msg.contains("not valid TOML"), "{msg}");
}

#[test]
fn unreadable_file_names_the_path() {
    let err = Scenario::from_file(Path::new("/nonexistent/stompede.toml")).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/stompede.toml"),
        "{err}"
    );
}

#[test]
fn the_spring_peer_is_a_local_target_without_receipts() {
    let local = |extra: &str| format!("{BASE}\n[target]\nkind = \"local\"\n{extra}\n");
    let s = ok(&local("server_impl = \"spring\""));
    let TargetKind::Local(shape) = &s.target.kind else {
        panic!("local")
    };
    assert_eq!(shape.server_impl, ServerImpl::Spring);
    assert!(!shape.shared_fanout_group);
    assert!(
        !s.receipts_expected(),
        "the Spring peer's simple broker sends no RECEIPT"
    );
    assert!(ok(&local("")).receipts_expected());
    let s = ok(&local(
        "server_impl = \"spring\"\nshared_fanout_group = true",
    ));
    assert!(matches!(&s.target.kind, TargetKind::Local(l) if l.shared_fanout_group));
    refused(
        &local("server_impl = \"spring\"\nreceipts = true"),
        "target.receipts",
        &["RECEIPT"],
    );
    refused(
        &local("server_impl = \"spring\"\npersist = \"consumer\""),
        "target.persist",
        &["producer side only"],
    );
    refused(
        &local("shared_fanout_group = true"),
        "target.shared_fanout_group",
        &["server_impl = \"spring\""],
    );
    refused(
        &format!("{BASE}\n[target]\nkind = \"external\"\nurls = [\"ws://h:1/ws\"]\nserver_impl = \"spring\"\n"),
        "target.server_impl",
        &["kind = \"local\""],
    );
}
