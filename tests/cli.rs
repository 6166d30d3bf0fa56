//! The command line: bad scenario files exit 2 with an error naming the file, the key
//! and what is allowed; `--help` teaches.

use std::process::Command;

fn stompede(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stompede"))
        .args(args)
        .output()
        .expect("run stompede")
}

const GOOD: &str = r#"
duration = "5s"
[users]
count = 4
connect_rate = 10.0
[[rooms]]
name = "r"
count = 2
members = 2
[load]
model = "open"
rate = 1.0
"#;

fn run_bad(name: &str, text: &str) -> (i32, String) {
    run_bad_with(name, text, &[])
}

/// Writes `text` as `<name>.toml` and runs it with `extra` arguments.
fn run_bad_with(name: &str, text: &str, extra: &[&str]) -> (i32, String) {
    let dir = std::env::temp_dir().join(format!("stompede-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).expect("write scenario");
    let mut args = vec![
        "run",
        file.to_str().expect("utf-8 path"),
        "--state-dir",
        dir.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    let out = stompede(&args);
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_scenarios_exit_2_naming_file_key_and_allowed_values() {
    let cases: [(&str, String, &str, &[&str]); 4] = [
        (
            "unknown-key",
            GOOD.replace("count = 4", "count = 4\nconut = 3"),
            "users.conut",
            &["count", "connect_rate"],
        ),
        (
            "wrong-type",
            GOOD.replace("rate = 1.0", "rate = \"fast\""),
            "load.rate",
            &["number"],
        ),
        (
            "negative-rate",
            GOOD.replace("rate = 1.0", "rate = -2.0"),
            "load.rate",
            &["-2"],
        ),
        (
            "no-rooms",
            GOOD.replace("[[rooms]]\nname = \"r\"\ncount = 2\nmembers = 2\n", ""),
            "rooms",
            &["[[rooms]]"],
        ),
    ];
    for (name, text, key, allowed) in cases {
        let (code, stderr) = run_bad(name, &text);
        assert_eq!(code, 2, "{name}: exit code {code}, stderr:\n{stderr}");
        assert!(
            stderr.contains(&format!("{name}.toml")),
            "{name}: file not named:\n{stderr}"
        );
        assert!(
            stderr.contains(key),
            "{name}: key {key} not named:\n{stderr}"
        );
        for word in allowed {
            assert!(
                stderr.contains(word),
                "{name}: {word:?} missing from:\n{stderr}"
            );
        }
    }
}

#[test]
fn a_connect_rate_the_run_cannot_use_exits_2_naming_the_key() {
    // 1e-300 sessions per second is positive and finite, but 4 users would take
    // 4e300 seconds to connect: refused before anything runs.
    let text = GOOD.replace("connect_rate = 10.0", "connect_rate = 1e-300");
    let (code, stderr) = run_bad("endless-ramp", &text);
    assert_eq!(code, 2, "exit code {code}, stderr:\n{stderr}");
    for word in [
        "endless-ramp.toml",
        "users.connect_rate",
        "1e-300",
        "\"24h\"",
    ] {
        assert!(stderr.contains(word), "{word:?} missing from:\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");

    // The same through an override: 10 per second is too slow for a million users.
    let (code, stderr) = run_bad_with("endless-ramp-override", GOOD, &["--users", "1000000"]);
    assert_eq!(code, 2, "exit code {code}, stderr:\n{stderr}");
    for word in [
        "users.connect_rate",
        "users.count = 1000000",
        "command-line",
    ] {
        assert!(stderr.contains(word), "{word:?} missing from:\n{stderr}");
    }
}

#[test]
fn missing_scenario_file_exits_2() {
    let out = stompede(&["run", "/nonexistent/dir/none.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir/none.toml"));
}

#[test]
fn usage_errors_exit_2_and_help_teaches() {
    assert_eq!(stompede(&["run"]).status.code(), Some(2));
    assert_eq!(
        stompede(&["stack", "up", "--brokers", "2"]).status.code(),
        Some(2)
    );
    let help = stompede(&["run", "--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for word in [
        "--duration",
        "--rate",
        "--users",
        "--out",
        "scenarios/README.md",
    ] {
        assert!(text.contains(word), "run --help lacks {word}");
    }
}
