//! `docker-compose.yml` keeps the stack's topology: checked with `docker compose config`
//! where a compose tool is present, otherwise structurally (scripts/check-compose.sh).

#[test]
fn compose_file_is_valid() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check-compose.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .output()
        .expect("run scripts/check-compose.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "docker-compose.yml check failed:\n{text}"
    );
    let compose = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker-compose.yml"),
    )
    .expect("read docker-compose.yml");
    // The same names and version as the local stack.
    let version = stompede::stack::kafka_version();
    assert!(
        compose.contains(&format!("apache/kafka:{version}")),
        "compose pins another Kafka than {version}"
    );
    for name in [
        "chat.messages",
        "/ws-stomp",
        "one-broker",
        "three-brokers",
        "postgres:15",
    ] {
        assert!(compose.contains(name), "docker-compose.yml lacks {name}");
    }
}
