//! `stompede stack up --brokers 3 --partitions 6 --servers 2`, `stack status --json`,
//! `stack baseline`, `stack down`, through the real binary: afterwards no stack process
//! runs and no stack port is bound.

use std::process::Command;
use std::time::Duration;

fn stompede(args: &[&str], state: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stompede"))
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .output()
        .expect("run the stompede binary")
}

fn alive(pid: u64) -> bool {
    // A zombie is not running; /proc/<pid>/stat's third field says which.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

fn port_free(port: u64) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok()
}

#[test]
fn stack_up_status_down_leaves_nothing_behind() {
    let state = std::env::temp_dir().join(format!("stompede-stack-cli-{}", std::process::id()));
    let up = stompede(
        &[
            "stack",
            "up",
            "--brokers",
            "3",
            "--partitions",
            "6",
            "--servers",
            "2",
        ],
        &state,
    );
    let stderr = String::from_utf8_lossy(&up.stderr);
    if !up.status.success() {
        let _ = stompede(&["stack", "down"], &state);
        panic!("stack up failed:\n{stderr}");
    }
    let status = stompede(&["stack", "status", "--json"], &state);
    assert!(status.status.success());
    let info: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("status --json prints JSON");

    let mut pids = Vec::new();
    let mut ports = Vec::new();
    let brokers = info["brokers"].as_array().expect("brokers");
    assert_eq!(brokers.len(), 3);
    for b in brokers {
        pids.push(b["pid"].as_u64().expect("broker pid"));
        ports.push(b["port"].as_u64().expect("broker port"));
        ports.push(b["controller_port"].as_u64().expect("controller port"));
        assert_eq!(b["alive"], true);
    }
    assert_eq!(info["partitions"], 6);
    assert_eq!(info["replication_factor"], 3);
    assert_eq!(info["min_insync_replicas"], 2);
    assert!(info["kafka_bootstrap"]
        .as_str()
        .is_some_and(|s| s.split(',').count() == 3));
    pids.push(info["postgres"]["pid"].as_u64().expect("postgres pid"));
    ports.push(info["postgres"]["port"].as_u64().expect("postgres port"));
    assert!(info["postgres"]["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("postgres://")));
    let servers = info["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2);
    for s in servers {
        pids.push(s["pid"].as_u64().expect("server pid"));
        let ws = s["ws_url"].as_str().expect("ws_url");
        let metrics = s["metrics_url"].as_str().expect("metrics_url");
        assert!(
            ws.starts_with("ws://127.0.0.1:") && ws.ends_with("/ws-stomp"),
            "{ws}"
        );
        for url in [ws, metrics] {
            let port = url
                .rsplit(':')
                .next()
                .and_then(|p| p.split('/').next())
                .and_then(|p| p.parse().ok());
            ports.push(port.expect("a port in the URL"));
        }
    }
    // The brokers themselves confirm the topic's replication settings.
    let bootstrap = info["kafka_bootstrap"]
        .as_str()
        .expect("bootstrap")
        .to_string();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let topic = rt
        .block_on(stompede::stack::topic_config(&bootstrap, "chat.messages"))
        .expect("describe chat.messages");
    assert_eq!(
        (
            topic.partitions,
            topic.replication_factor,
            topic.min_insync_replicas
        ),
        (6, 3, 2)
    );
    assert!(
        pids.iter().all(|p| alive(*p)),
        "a recorded process is not running"
    );

    baseline_measures_every_part_and_removes_its_scratch(&state, &bootstrap, &info, &rt);

    let down = stompede(&["stack", "down"], &state);
    assert!(
        down.status.success(),
        "stack down failed: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} still running after stack down");
    }
    for port in &ports {
        // A just-closed listener may linger for a moment in the kernel; allow a short wait.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !port_free(*port) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(port_free(*port), "port {port} still bound after stack down");
    }
    let status = stompede(&["stack", "status", "--json"], &state);
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), "null");
    let _ = std::fs::remove_dir_all(&state);
}

/// `stack baseline` on the 3-broker stack, with small counts: Kafka's tools, pgbench and
/// the server's code each give a figure, and nothing of the scratch topics and database
/// is left.
fn baseline_measures_every_part_and_removes_its_scratch(
    state: &std::path::Path,
    bootstrap: &str,
    info: &serde_json::Value,
    rt: &tokio::runtime::Runtime,
) {
    let child = Command::new(env!("CARGO_BIN_EXE_stompede"))
        .args([
            "stack",
            "baseline",
            "--records",
            "20000",
            "--messages",
            "200",
            "--rows",
            "20000",
            "--pgbench-time",
            "2s",
            "--rounds",
            "2",
            "--json",
            "--state-dir",
        ])
        .arg(state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run stompede stack baseline");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for stack baseline");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stack baseline failed:\n{stderr}");
    for step in [
        "round 1 of 2: Kafka ProducerPerformance",
        "round 2 of 2: the server's producer",
        "EndToEndLatency",
        "pgbench",
        "500-row batches",
        "single rows",
    ] {
        assert!(
            stderr.contains(step),
            "no progress line for {step}:\n{stderr}"
        );
    }
    let b: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stack baseline --json prints JSON");
    assert_eq!(
        (b["brokers"].as_u64(), b["replication_factor"].as_u64()),
        (Some(3), Some(3))
    );
    let f = |v: &serde_json::Value| v.as_f64().unwrap_or(-1.0);
    for pair in ["produce", "db_batches", "db_single_rows"] {
        let (tool, server, ratio) = (
            f(&b[pair]["tool"]),
            f(&b[pair]["server"]),
            f(&b[pair]["ratio"]),
        );
        assert!(tool > 0.0 && server > 0.0, "{pair}: {}", b[pair]);
        assert!((ratio - server / tool).abs() < 1e-9, "{pair}: {}", b[pair]);
        for (side, median) in [("tool", tool), ("server", server)] {
            let rounds: Vec<f64> = b[pair][format!("{side}_rounds")]
                .as_array()
                .unwrap_or_else(|| panic!("{pair}: no {side}_rounds: {}", b[pair]))
                .iter()
                .map(f)
                .collect();
            assert_eq!(rounds.len(), 2, "{pair}: {}", b[pair]);
            assert!(rounds.iter().all(|&r| r > 0.0), "{pair}: {}", b[pair]);
            assert!(
                (median - (rounds[0] + rounds[1]) / 2.0).abs() < 1e-6,
                "{pair}: the {side} figure is not the median of its rounds: {}",
                b[pair]
            );
        }
    }
    assert_eq!(
        b["db_batches"]["tool"], b["db_single_rows"]["tool"],
        "one pgbench run"
    );
    let tool = &b["latency_tool"];
    assert!(f(&tool["mean_ms"]) > 0.0, "{tool}");
    assert!(
        tool["p50_whole_ms"].as_u64() <= tool["p99_whole_ms"].as_u64(),
        "{tool}"
    );
    let server = &b["latency_server"];
    assert!(
        0.0 < f(&server["p50_ms"])
            && f(&server["p50_ms"]) <= f(&server["p99_ms"])
            && f(&server["p99_ms"]) <= f(&server["max_ms"]),
        "{server}"
    );

    for topic in ["produce", "latency"] {
        let name = format!("stompede.baseline.{pid}.{topic}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while rt
            .block_on(stompede::stack::topic_config(bootstrap, &name))
            .is_ok()
        {
            assert!(
                std::time::Instant::now() < deadline,
                "topic {name} still there"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let url = info["postgres"]["url"].as_str().expect("postgres url");
    let left: i64 = rt.block_on(async {
        let db = stompede::db::connect(url)
            .await
            .expect("connect to the stack's database");
        db.query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'stompede_baseline_%'",
            &[],
        )
        .await
        .expect("list databases")
        .get(0)
    });
    assert_eq!(left, 0, "a scratch database is left");
}
