//! Tests of the limits: every number a scenario accepts is one a run can use (a ramp-up
//! that ends, rates the schedule can express, phases that fit a run), the time
//! arithmetic never panics even on an unchecked scenario, and checking many room
//! groups costs linear time.

use std::cell::Cell;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use super::check::Seen;
use super::tests::{edit, load, ok, refused, BASE};
use super::*;

#[test]
fn a_connect_rate_whose_ramp_up_never_ends_is_refused() {
    // Found by fuzzing: 1e-300 is positive and finite, so it loaded, and the run then
    // panicked turning 20 / 1e-300 seconds into a Duration.
    let err = refused(
        &edit("count = 20", "count = 20\nconnect_rate = 1e-300"),
        "users.connect_rate",
        &["1e-300", "at least 0.000231", "users.count = 20", "\"24h\""],
    );
    assert!(err.pos().is_some(), "points at the line: {err}");
    refused(
        &edit("count = 20", "count = 20\nconnect_rate = 0.0002"),
        "users.connect_rate",
        &["\"27h46m40s\"", "at most \"24h\""],
    );
    refused(
        &edit("count = 20", "count = 20\nconnect_rate = 2e6"),
        "users.connect_rate",
        &["at most 1000000"],
    );
    // Slow but finishing: 20 users at 0.001/s take 5h33m20s.
    let s = ok(&edit("count = 20", "count = 20\nconnect_rate = 0.001"));
    assert_eq!(s.ramp_up(), Duration::from_secs(20_000));
    assert_eq!(s.connect_at(10), Duration::from_secs(10_000));
}

#[test]
fn raising_users_on_the_command_line_rechecks_the_ramp_up() {
    let mut s = ok(&edit("count = 20", "count = 20\nconnect_rate = 1.0"));
    let err = s
        .apply_overrides(&Overrides {
            users: Some(100_000),
            ..Default::default()
        })
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.key(), Some("users.connect_rate"), "{msg}");
    assert!(
        msg.contains("users.count = 100000") && msg.contains("command-line"),
        "{msg}"
    );
}

#[test]
fn ramp_up_and_connect_times_never_panic_even_unchecked() {
    let mut s = ok(BASE);
    for rate in [
        1e-300,
        0.0,
        -1.0,
        f64::NAN,
        f64::INFINITY,
        f64::MIN_POSITIVE,
    ] {
        s.users.connect_rate = rate;
        let ramp = s.ramp_up();
        let last = s.connect_at(s.users.count - 1);
        assert!(last <= ramp, "rate {rate}: {last:?} after {ramp:?}");
        assert_eq!(s.connect_at(0), Duration::ZERO);
    }
    s.users.connect_rate = 1e-300;
    assert_eq!(s.ramp_up(), Duration::MAX);
    s.users.connect_rate = 0.0;
    s.users.count = 0;
    assert_eq!(s.ramp_up(), Duration::ZERO);
    s.warmup = Duration::MAX;
    assert_eq!(s.run_time(), Duration::MAX);
}

#[test]
fn phases_must_fit_a_run() {
    refused(
        &edit("duration = \"10s\"", "duration = \"169h\""),
        "duration",
        &["\"169h\"", "at most \"168h\""],
    );
    assert_eq!(
        ok(&edit("duration = \"10s\"", "duration = \"168h\"")).duration,
        MAX_DURATION
    );
    for key in ["warmup", "grace"] {
        refused(
            &edit(
                "duration = \"10s\"",
                &format!("duration = \"10s\"\n{key} = \"24h1ms\""),
            ),
            key,
            &["at most \"24h\""],
        );
    }
    refused(
        &edit("count = 20", "count = 20\nheartbeat = \"1h1s\""),
        "users.heartbeat",
        &["from \"100ms\" to \"1h\""],
    );
    refused(
        &edit("rate = 2.0", "model = \"closed\"\nthink_time = \"25h\""),
        "load.think_time",
        &["at most \"24h\""],
    );
    refused(
        &format!("{BASE}\n[churn]\nleaves_per_second = 0.5\nrejoin_after = \"25h\"\n"),
        "churn.rejoin_after",
        &["at most \"24h\""],
    );
    // Decimal durations are exact: 1.001 s is 1001 ms, not "finer than 1 ms".
    assert_eq!(
        ok(&edit("duration = \"10s\"", "duration = \"1.001s\"")).duration,
        Duration::from_millis(1001)
    );
}

#[test]
fn rates_must_be_ones_the_schedule_can_express() {
    for bad in ["1e-7", "2e6", "1e300"] {
        refused(
            &edit("rate = 2.0", &format!("rate = {bad}")),
            "load.rate",
            &["from 0.000001 to 1000000", "microseconds"],
        );
    }
    for good in ["1e-6", "1e6"] {
        ok(&edit("rate = 2.0", &format!("rate = {good}")));
    }
    refused(
        &format!("{BASE}\n[churn]\nleaves_per_second = 2e5\nrejoin_after = \"0s\"\n"),
        "churn.leaves_per_second",
        &["at most 100000"],
    );
}

#[test]
fn memberships_that_overflow_are_refused_not_wrapped() {
    // 500 groups of 4,294,967,295 rooms of 10,000,000 members overflow a u64 sum.
    let mut text = String::from(
        "duration = \"10s\"\n[users]\ncount = 10000000\nconnect_rate = 1000.0\n[load]\nrate = 1.0\n",
    );
    for i in 0..500 {
        text.push_str(&format!(
            "[[rooms]]\nname = \"g{i}\"\ncount = 4294967295\nmembers = 10000000\n"
        ));
    }
    refused(&text, "rooms", &["at most 10000000"]);
}

/// `rooms` room groups of one pair each, 40 users.
fn many_groups(rooms: usize) -> String {
    let mut text = String::from("duration = \"10s\"\n[users]\ncount = 40\n[load]\nrate = 1.0\n");
    for i in 0..rooms {
        text.push_str(&format!(
            "[[rooms]]\nname = \"g{i}\"\ncount = 1\nmembers = 2\n"
        ));
    }
    text
}

#[test]
fn forty_thousand_room_groups_load() {
    // Found by fuzzing: names were compared pairwise, 800 million comparisons here.
    let s = ok(&many_groups(40_000));
    assert_eq!(s.rooms.len(), 40_000);
    assert_eq!(s.memberships(), 80_000);
    let plan = s.plan();
    assert_eq!(plan.rooms.len(), 40_000);
    assert_eq!(plan.rooms[39_999].id, "g39999-0");

    let mut dup = many_groups(40_000);
    dup.push_str("[[rooms]]\nname = \"g0\"\ncount = 1\nmembers = 2\n");
    let err = load(&dup).unwrap_err();
    assert_eq!(err.key(), Some("rooms[40000].name"));
    assert!(
        err.to_string().contains("already used by rooms[0]"),
        "{err}"
    );
}

/// A name that counts how often it is compared.
struct Counted<'a> {
    name: String,
    comparisons: &'a Cell<u64>,
}

impl PartialEq for Counted<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.comparisons.set(self.comparisons.get() + 1);
        self.name == other.name
    }
}

impl Eq for Counted<'_> {}

impl Hash for Counted<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

#[test]
fn checking_names_compares_each_about_once() {
    let comparisons = Cell::new(0);
    let n = 40_000;
    let mut seen = Seen::new();
    for i in 0..n {
        let name = Counted {
            name: format!("g{i}"),
            comparisons: &comparisons,
        };
        assert_eq!(seen.first_use(name, i), None);
    }
    // Distinct names meet only on a hash-tag collision; comparing each name with
    // every earlier one would take n * (n - 1) / 2 = 799,980,000 comparisons.
    assert!(
        comparisons.get() <= n as u64,
        "{} comparisons for {n} names",
        comparisons.get()
    );
    let again = Counted {
        name: "g123".into(),
        comparisons: &comparisons,
    };
    assert_eq!(seen.first_use(again, n), Some(123));
}
