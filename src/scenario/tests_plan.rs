//! Tests of overrides, the report form (JSON), the user-to-room plan, and the files
//! shipped in `scenarios/`.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::tests::{edit, ok, BASE, FILE};
use super::*;

#[test]
fn overrides_apply_and_are_revalidated() {
    let mut s = ok(BASE);
    s.apply_overrides(&Overrides {
        duration: Some(Duration::from_secs(3)),
        rate: Some(5.0),
        users: Some(40),
        warmup: Some(Duration::from_secs(1)),
    })
    .unwrap();
    assert_eq!(
        (s.duration, s.users.count, s.warmup),
        (Duration::from_secs(3), 40, Duration::from_secs(1))
    );
    assert!(matches!(s.load.model, LoadModel::Open { rate, .. } if rate == 5.0));

    let before = s.clone();
    let err = s
        .apply_overrides(&Overrides {
            users: Some(5),
            ..Default::default()
        })
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(FILE)
            && msg.contains("rooms[1].members")
            && msg.contains("users.count = 5"),
        "{msg}"
    );
    assert!(msg.contains("command-line"), "{msg}");
    assert_eq!(s, before, "a failed override leaves the scenario unchanged");

    let err = s
        .apply_overrides(&Overrides {
            rate: Some(0.0),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.key(), Some("load.rate"));
    let err = s
        .apply_overrides(&Overrides {
            duration: Some(Duration::ZERO),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.key(), Some("duration"));

    let mut closed = ok(&edit(
        "rate = 2.0",
        "model = \"closed\"\nthink_time = \"1s\"",
    ));
    let err = closed
        .apply_overrides(&Overrides {
            rate: Some(3.0),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("think_time"), "{err}");
}

#[test]
fn json_round_trip_keeps_the_scenario_and_hides_secrets() {
    let text = format!(
        "{BASE}\n[churn]\nleaves_per_second = 1.0\n[slo]\np99_ms = 250.0\n[target]\nkind = \"external\"\n\
         urls = [\"ws://h:1/ws\"]\n[target.connect]\npasscode = \"hunter2\"\n[target.db]\nurl = \"postgres://app:s3cret@h/chat\"\n"
    );
    let s = ok(&text);
    let json = serde_json::to_string(&s).unwrap();
    assert!(
        json.contains("\"duration\":\"10s\"")
            && json.contains("\"model\":\"open\"")
            && json.contains("\"kind\":\"external\""),
        "{json}"
    );
    assert!(
        !json.contains("hunter2") && !json.contains("s3cret"),
        "{json}"
    );
    let back: Scenario = serde_json::from_str(&json).unwrap();
    let mut expected = s.clone();
    expected.target.connect.passcode = None;
    expected.target.db.as_mut().unwrap().url = "postgres://app:***@h/chat".into();
    assert_eq!(back, expected);

    for text in [
        BASE.to_string(),
        edit("rate = 2.0", "model = \"closed\"\nthink_time = \"1m30s\""),
    ] {
        let s = ok(&text);
        let back: Scenario =
            serde_json::from_str(&serde_json::to_string_pretty(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }
}

#[test]
fn plan_is_deterministic_and_seed_dependent() {
    let s = ok(BASE);
    assert_eq!(s.plan(), s.plan());
    let other = ok(&edit("duration = \"10s\"", "duration = \"10s\"\nseed = 7"));
    assert_ne!(s.plan().rooms, other.plan().rooms);
}

#[test]
fn plan_rooms_have_distinct_members_and_first_senders() {
    let p = ok(BASE).plan();
    let ids: Vec<&str> = p.rooms.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["pairs-0", "pairs-1", "pairs-2", "pairs-3", "pairs-4", "groups-0", "groups-1"]
    );
    for r in &p.rooms {
        let distinct: HashSet<_> = r.members.iter().collect();
        assert_eq!(distinct.len(), r.members.len(), "{r:?}");
        assert_eq!(r.senders, r.members[..r.senders.len()]);
    }
    assert_eq!(p.rooms[6].senders.len(), 3);
    assert_eq!(p.memberships(), 26);
    for (i, u) in p.users.iter().enumerate() {
        assert_eq!((u.index as usize, u.id.clone()), (i, format!("u{i}")));
        assert!(u.sends_to.iter().all(|r| u.rooms.contains(r)));
        for &r in &u.rooms {
            assert!(p.rooms[r as usize].members.contains(&u.index));
        }
    }
}

#[test]
fn plan_spreads_users_and_reuses_them_across_rooms() {
    // 26 memberships over 20 users: everyone in a room, six users in two.
    let p = ok(BASE).plan();
    let counts: Vec<usize> = p.users.iter().map(|u| u.rooms.len()).collect();
    assert!(counts.iter().all(|&c| c == 1 || c == 2), "{counts:?}");
    assert_eq!(counts.iter().filter(|&&c| c == 2).count(), 6);

    // A room as large as the user pool holds every user once.
    let all = ok(&edit("members = 8", "members = 20"));
    let p = all.plan();
    let mut town: Vec<u32> = p.rooms[5].members.clone();
    town.sort_unstable();
    assert_eq!(town, (0..20).collect::<Vec<u32>>());
}

#[test]
fn plan_rates_follow_per() {
    let s = ok(BASE);
    let p = s.plan();
    assert_eq!(p.rooms[0].rate_per_sender, 1.0); // 2 msg/s per room, 2 senders
    assert!((p.rooms[5].rate_per_sender - 2.0 / 3.0).abs() < 1e-12);
    // 7 rooms at 2 msg/s for 10 s
    assert!((p.expected_open_messages(s.duration) - 140.0).abs() < 1e-9);
    // pairs: 5 * 2 * 10 * 2 members; groups: 2 * 2 * 10 * 8 members
    assert!((p.expected_open_deliveries(s.duration) - (200.0 + 320.0)).abs() < 1e-9);

    let per_sender = ok(&edit("rate = 2.0", "rate = 2.0\nper = \"sender\"")).plan();
    assert_eq!(per_sender.rooms[5].rate_per_sender, 2.0);
    let closed = ok(&edit(
        "rate = 2.0",
        "model = \"closed\"\nthink_time = \"500ms\"",
    ))
    .plan();
    assert_eq!(closed.expected_open_messages(Duration::from_secs(10)), 0.0);
}

#[test]
fn every_shipped_scenario_loads_and_plans() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut seen = Vec::new();
    let mut paths: Vec<std::path::PathBuf> = Vec::new();
    for sub in [dir.clone(), dir.join("faults")] {
        for entry in std::fs::read_dir(&sub).expect("scenarios/ and scenarios/faults/ exist") {
            paths.push(entry.unwrap().path());
        }
    }
    for path in paths {
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let s = Scenario::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            Some(s.name.as_str()),
            path.file_stem().and_then(|n| n.to_str()),
            "name matches file"
        );
        assert!(
            !s.description.is_empty(),
            "{} has a description",
            path.display()
        );
        let p = s.plan();
        assert_eq!(p.users.len(), s.users.count as usize);
        assert_eq!(p.memberships() as u64, s.memberships());
        assert!(
            p.users.iter().all(|u| !u.rooms.is_empty()),
            "{}: every user is in a room",
            path.display()
        );
        if matches!(s.load.model, LoadModel::Open { .. }) {
            assert!(p.expected_open_messages(s.duration) > 0.0);
        }
        assert!(
            s.ramp_up() + s.run_time() <= Duration::from_secs(180),
            "{} runs in a few minutes",
            path.display()
        );
        seen.push(s.name);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "group-chat",
            "kill-leader",
            "kill-server",
            "mixed",
            "one-to-one",
            "partition",
            "pause-db",
            "smoke",
            "town-hall"
        ]
    );
}
