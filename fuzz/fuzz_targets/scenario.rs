//! Scenario text through the path `stompede run` takes (parse, validate, check, then
//! command-line overrides), and for every scenario accepted, the arithmetic a run does
//! with it.
//!
//! An accepted scenario must be one a run can use: its ramp-up, phases and send
//! periods fit the load engine's `Duration`, `Instant` and microsecond arithmetic
//! (`load/mod.rs`, `load/vu.rs`) with room to spare, and its plan can be built. Plans
//! are built only for scenarios of up to 20,000 users and 100,000 memberships, so each
//! input stays fast; the limits themselves are covered by unit tests.

#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use stompede::scenario::{LoadModel, Overrides, Scenario, MAX_DURATION, MAX_PHASE, MAX_RAMP_UP};

/// What the load engine computes from a scenario, asserted to be in range.
fn check_usable(s: &Scenario) {
    let ramp = s.ramp_up();
    assert!(ramp <= MAX_RAMP_UP, "ramp-up {ramp:?} for {:?}", s.users);
    // load/vu.rs: Duration::from_secs_f64(index / connect_rate) for every user.
    let last = f64::from(s.users.count.saturating_sub(1)) / s.users.connect_rate;
    let slot = Duration::try_from_secs_f64(last).expect("the last user's connect time");
    assert!(slot <= ramp && s.connect_at(s.users.count.saturating_sub(1)) <= ramp);
    // load/mod.rs: ramp_up() + 30 s.
    assert!(ramp.checked_add(Duration::from_secs(30)).is_some());
    let run = s.run_time();
    assert!(run <= MAX_DURATION + 2 * MAX_PHASE, "run time {run:?}");
    // The schedule in microseconds since the start, ramp-up included.
    let end_us = (ramp + run).as_micros();
    assert!(
        end_us < u128::from(u64::MAX / 2),
        "schedule end {end_us} µs"
    );
    assert!(s.memberships() <= stompede::scenario::MAX_MEMBERSHIPS);

    if s.users.count > 20_000 || s.memberships() > 100_000 {
        return;
    }
    let plan = s.plan();
    assert_eq!(plan.users.len(), s.users.count as usize);
    assert_eq!(plan.memberships() as u64, s.memberships());
    for room in &plan.rooms {
        assert!(!room.members.is_empty() && room.senders.len() <= room.members.len());
        if let LoadModel::Open { .. } = s.load.model {
            // load/vu.rs: the send period in µs, (1e6 / rate) as u64, at least 1.
            let rate = room.rate_per_sender;
            assert!(rate.is_finite() && rate > 0.0, "rate {rate}");
            assert!(1e6 / rate.max(1e-9) >= 1.0, "rate {rate} is below 1 µs");
        }
    }
    let messages = plan.expected_open_messages(s.duration);
    let deliveries = plan.expected_open_deliveries(s.duration);
    assert!(messages.is_finite() && messages >= 0.0);
    assert!(deliveries.is_finite() && deliveries >= 0.0);
}

fuzz_target!(|data: &[u8]| {
    // `stompede run` reads the file as UTF-8 and refuses anything else.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut s) = Scenario::from_str(text, Path::new("fuzz.toml")) else {
        return;
    };
    check_usable(&s);

    // Overrides as the command line gives them; accepted ones must be usable too.
    let rate = match s.load.model {
        LoadModel::Open { rate, .. } => Some(rate * 1000.0),
        LoadModel::Closed { .. } => None,
    };
    let overrides = Overrides {
        duration: Some(Duration::from_secs(3600)),
        rate,
        users: Some(s.users.count.saturating_mul(100)),
        warmup: Some(Duration::from_secs(1)),
    };
    let before = s.clone();
    match s.apply_overrides(&overrides) {
        Ok(()) => check_usable(&s),
        Err(_) => assert_eq!(s, before, "a refused override changed the scenario"),
    }
});
