//! Apache Kafka for the local stack: classpath, KRaft brokers, topic admin.
//!
//! Flow of `start`: the pinned `stack/kafka/pom.xml` (embedded in the binary) is
//! resolved once by Maven into a cache outside the repository
//! (`$STOMPEDE_CACHE` | `$XDG_CACHE_HOME/stompede` | `~/.cache/stompede`, then
//! `kafka-<version>/lib`); each node gets a properties file and a formatted storage
//! directory under `<state_dir>/data/`, then runs as its own JVM (broker and controller
//! in one process, a static voter quorum of every node) logging to
//! `<state_dir>/logs/kafka-N.log`. Readiness and topic checks live in
//! `kafka_admin.rs`.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;

use super::process::{self, Registry};
use super::state::{BrokerInfo, Role};
use super::StackError;

/// The broker classpath definition, also what fixes the Kafka version.
pub const POM: &str = include_str!("../../stack/kafka/pom.xml");
/// log4j2 configuration handed to every broker JVM.
pub const LOG4J2: &str = include_str!("../../stack/kafka/log4j2.xml");

pub(super) const JAVA_INSTALL: &str = "apt-get install openjdk-17-jdk-headless";
pub(super) const MAVEN_INSTALL: &str = "apt-get install maven";
const COMPLETE_MARKER: &str = ".stompede-complete";

/// The Kafka version pinned in the pom (`<kafka.version>`).
pub fn kafka_version() -> &'static str {
    let open = "<kafka.version>";
    POM.find(open)
        .and_then(|i| {
            let rest = &POM[i + open.len()..];
            rest.find('<').map(|j| rest[..j].trim())
        })
        .unwrap_or("unknown")
}

/// Where downloaded jars are kept between runs.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("STOMPEDE_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("stompede");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("stompede"),
        None => std::env::temp_dir().join("stompede-cache"),
    }
}

/// A small stable hash of the pom, so editing it (not only the version) refreshes the cache.
fn pom_fingerprint() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in POM.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The java executable: `$JAVA_HOME/bin/java` if set, else `java` from PATH.
pub(super) fn java() -> PathBuf {
    jdk_tool("java")
}

/// A JDK program: `$JAVA_HOME/bin/<name>` if it exists, else `<name>` from PATH.
pub(super) fn jdk_tool(name: &str) -> PathBuf {
    match std::env::var_os("JAVA_HOME").filter(|v| !v.is_empty()) {
        Some(home) if Path::new(&home).join("bin").join(name).exists() => {
            Path::new(&home).join("bin").join(name)
        }
        _ => PathBuf::from(name),
    }
}

/// Fail early, with the package to install, when there is no java to run Kafka with.
pub(super) async fn check_java() -> Result<(), StackError> {
    let status = tokio::process::Command::new(java())
        .arg("-version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| missing_or_io(e, "java (a Java 17+ runtime)", JAVA_INSTALL, "start"))?;
    if status.success() {
        Ok(())
    } else {
        Err(StackError::MissingPrerequisite {
            program: "a working java (17+)".into(),
            install: JAVA_INSTALL,
        })
    }
}

/// The cached Kafka `lib` directory if it is complete for this build's pom, without
/// fetching anything (a running broker may be using an older one).
pub fn current_classpath() -> Option<PathBuf> {
    let lib = cache_root()
        .join(format!("kafka-{}", kafka_version()))
        .join("lib");
    complete(&lib).then_some(lib)
}

/// Whether `lib` holds every jar of this build's pom (its marker names the pom).
fn complete(lib: &Path) -> bool {
    std::fs::read_to_string(lib.join(COMPLETE_MARKER)).is_ok_and(|s| s.trim() == pom_fingerprint())
}

/// Make sure the Kafka jars are in the cache; returns the `lib` directory.
pub async fn ensure_classpath() -> Result<PathBuf, StackError> {
    let version = kafka_version();
    let base = cache_root().join(format!("kafka-{version}"));
    let lib = base.join("lib");
    let fingerprint = pom_fingerprint();
    if complete(&lib) {
        return Ok(lib);
    }
    eprintln!("kafka: fetching Apache Kafka {version} jars from Maven Central (first run only)…");
    std::fs::create_dir_all(&base)
        .map_err(|e| StackError::io("create cache directory", &base, e))?;
    let pom = base.join("pom.xml");
    std::fs::write(&pom, POM).map_err(|e| StackError::io("write", &pom, e))?;
    let tmp = base.join(format!("lib.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let mvn_log = base.join("mvn.log");
    let (out, err) = process::open_log(&mvn_log)?;
    let status = tokio::process::Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(&pom)
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", tmp.display()))
        .arg("-DincludeScope=runtime")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| missing_or_io(e, "mvn (Maven)", MAVEN_INSTALL, "start"))?;
    if !status.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(StackError::Part {
            part: "kafka classpath (mvn dependency:copy-dependencies)".into(),
            reason: format!("Maven exited with {status}; check that Maven Central is reachable"),
            log: Some(mvn_log.clone()),
            tail: process::log_tail(&mvn_log, 20),
        });
    }
    let marker = tmp.join(COMPLETE_MARKER);
    std::fs::write(&marker, &fingerprint).map_err(|e| StackError::io("write", &marker, e))?;
    // Replace a stale or partial lib/ with the complete one.
    let _ = std::fs::remove_dir_all(&lib);
    if let Err(e) = std::fs::rename(&tmp, &lib) {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another stompede may have finished the same download first.
        if !complete(&lib) {
            return Err(StackError::io("move the downloaded jars to", &lib, e));
        }
    }
    Ok(lib)
}

pub(super) fn missing_or_io(
    e: std::io::Error,
    program: &str,
    install: &'static str,
    action: &str,
) -> StackError {
    if e.kind() == std::io::ErrorKind::NotFound {
        StackError::MissingPrerequisite {
            program: program.to_string(),
            install,
        }
    } else {
        StackError::io(action, Path::new(program), e)
    }
}

/// A KRaft cluster id drawn as Kafka's own `Uuid.randomUuid()` draws one: a version 4
/// (variant 2) UUID, base64url without padding (22 characters), drawn again while it is
/// one of the reserved ids (all zero; `0…01`, the metadata topic's) or while its text
/// begins with `-`, which command-line tools would read as an option.
pub fn new_cluster_id() -> String {
    loop {
        let mut bytes = rand::random::<[u8; 16]>();
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // variant 2 (Leach-Salz)
        let value = u128::from_be_bytes(bytes);
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if value > 1 && !id.starts_with('-') {
            return id;
        }
    }
}

/// Everything that differs between nodes of one cluster.
pub struct NodePlan {
    pub node_id: u32,
    pub port: u16,
    pub controller_port: u16,
    pub data_dir: PathBuf,
    pub props: PathBuf,
    pub log: PathBuf,
}

/// The server.properties text for one node of a cluster of `nodes`.
pub fn broker_properties(node: &NodePlan, nodes: &[NodePlan], partitions: u32) -> String {
    let voters: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}@127.0.0.1:{}", n.node_id, n.controller_port))
        .collect();
    let (rf, isr) = if nodes.len() >= 3 { (3, 2) } else { (1, 1) };
    let mut p = String::new();
    let mut set = |k: &str, v: &dyn std::fmt::Display| {
        let _ = writeln!(p, "{k}={v}");
    };
    set("process.roles", &"broker,controller");
    set("node.id", &node.node_id);
    set("controller.quorum.voters", &voters.join(","));
    set(
        "listeners",
        &format!(
            "PLAINTEXT://127.0.0.1:{},CONTROLLER://127.0.0.1:{}",
            node.port, node.controller_port
        ),
    );
    set(
        "advertised.listeners",
        &format!("PLAINTEXT://127.0.0.1:{}", node.port),
    );
    set("controller.listener.names", &"CONTROLLER");
    set("inter.broker.listener.name", &"PLAINTEXT");
    set(
        "listener.security.protocol.map",
        &"PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
    );
    set("log.dirs", &node.data_dir.display());
    set("num.partitions", &partitions);
    set("auto.create.topics.enable", &false);
    set("group.initial.rebalance.delay.ms", &0);
    set("default.replication.factor", &rf);
    set("min.insync.replicas", &isr);
    set("offsets.topic.replication.factor", &rf);
    set("transaction.state.log.replication.factor", &rf);
    set("transaction.state.log.min.isr", &isr);
    set("share.coordinator.state.topic.replication.factor", &rf);
    set("share.coordinator.state.topic.min.isr", &isr);
    // Failover: the controller fences a broker that missed heartbeats for
    // `broker.session.timeout.ms` and only then moves its partitions' leadership. Kafka's
    // 9 s default is most of the outage a killed leader causes (README, "Faults"); 4 s
    // with a heart-beat every 500 ms still rides out GC pauses on a busy 2-core machine.
    set("broker.session.timeout.ms", &4000);
    set("broker.heartbeat.interval.ms", &500);
    set("num.network.threads", &2);
    set("num.io.threads", &4);
    set("log.segment.bytes", &(64 * 1024 * 1024));
    set("offsets.topic.num.partitions", &10);
    set("transaction.state.log.num.partitions", &10);
    p
}

/// Start every node, format its storage first; returns the brokers as recorded.
/// Does not wait for readiness (see [`wait_ready_started`]).
pub async fn start(
    reg: &Registry,
    state_dir: &Path,
    brokers: u8,
    partitions: u32,
) -> Result<Vec<BrokerInfo>, StackError> {
    check_java().await?;
    let lib = ensure_classpath().await?;
    let classpath = format!("{}/*", lib.display());
    let data = state_dir.join("data");
    let logs = state_dir.join("logs");
    let log4j = data.join("kafka-log4j2.xml");
    std::fs::write(&log4j, LOG4J2).map_err(|e| StackError::io("write", &log4j, e))?;
    let ports = process::free_ports(usize::from(brokers) * 2)?;
    let nodes: Vec<NodePlan> = (0..usize::from(brokers))
        .map(|i| {
            let id = i as u32 + 1;
            NodePlan {
                node_id: id,
                port: ports[2 * i],
                controller_port: ports[2 * i + 1],
                data_dir: data.join(format!("kafka-{id}")),
                props: data.join(format!("kafka-{id}.properties")),
                log: logs.join(format!("kafka-{id}.log")),
            }
        })
        .collect();
    let cluster_id = new_cluster_id();
    for node in &nodes {
        let props = broker_properties(node, &nodes, partitions);
        std::fs::write(&node.props, props).map_err(|e| StackError::io("write", &node.props, e))?;
    }
    // One JVM start each; run them side by side.
    let java = java();
    futures_util::future::try_join_all(
        nodes
            .iter()
            .map(|node| format_storage(&java, &classpath, &log4j, &cluster_id, node)),
    )
    .await?;
    let mut out = Vec::new();
    for node in &nodes {
        let (stdout, stderr) = process::append_log(&node.log)?;
        let mut cmd = Command::new(&java);
        cmd.args([
            "-Xms256m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
        ])
        .args([
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
        ])
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(&classpath)
        .arg("kafka.Kafka")
        .arg(&node.props)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr);
        let label = format!("kafka broker {}", node.node_id);
        let rec = reg.spawn(Role::Kafka, &label, cmd).map_err(|e| match e {
            StackError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                StackError::MissingPrerequisite {
                    program: "java".into(),
                    install: JAVA_INSTALL,
                }
            }
            other => other,
        })?;
        out.push(BrokerInfo {
            node_id: node.node_id,
            port: node.port,
            controller_port: node.controller_port,
            pid: rec.pid,
            pid_start: rec.pid_start,
            log: node.log.clone(),
            data_dir: node.data_dir.clone(),
            alive: None,
        });
    }
    Ok(out)
}

async fn format_storage(
    java: &Path,
    classpath: &str,
    log4j: &Path,
    cluster_id: &str,
    node: &NodePlan,
) -> Result<(), StackError> {
    let (stdout, stderr) = process::open_log(&node.log)?;
    let status = tokio::process::Command::new(java)
        .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
        .arg("-cp")
        .arg(classpath)
        .args(["kafka.tools.StorageTool", "format", "--ignore-formatted"])
        // One argument, `--cluster-id=<id>`: an id that begins with `-` (the stack never
        // draws one, but a given id might) cannot be read as an option.
        .arg(format!("--cluster-id={cluster_id}"))
        .arg("--config")
        .arg(&node.props)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        .status()
        .await
        .map_err(|e| missing_or_io(e, "java", JAVA_INSTALL, "start"))?;
    if status.success() {
        return Ok(());
    }
    Err(StackError::Part {
        part: format!("kafka broker {} (storage format)", node.node_id),
        reason: format!("kafka.tools.StorageTool exited with {status} (cluster id {cluster_id})"),
        log: Some(node.log.clone()),
        tail: process::log_tail(&node.log, 20),
    })
}

/// `host:port,...` for the given brokers.
pub fn bootstrap(brokers: &[BrokerInfo]) -> String {
    brokers
        .iter()
        .map(|b| format!("127.0.0.1:{}", b.port))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_the_pom() {
        assert_eq!(kafka_version(), "4.1.1");
    }

    #[test]
    fn cluster_ids_are_kafka_uuids_that_never_begin_with_a_dash() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut first_chars = std::collections::BTreeSet::new();
        for _ in 0..100_000 {
            let id = new_cluster_id();
            assert_eq!(id.len(), 22, "{id}");
            assert!(!id.starts_with('-'), "{id} begins with '-'");
            let bytes = b64.decode(&id).expect("base64url without padding");
            assert_eq!(bytes.len(), 16, "{id}");
            assert_eq!(bytes[6] >> 4, 4, "{id}: not a version 4 UUID");
            assert_eq!(bytes[8] >> 6, 2, "{id}: not variant 2");
            first_chars.insert(id.as_bytes()[0]);
        }
        // Every other base64url character does begin an id: only '-' is drawn again.
        assert_eq!(first_chars.len(), 63);
        assert!(first_chars.contains(&b'_'));
    }

    /// Runs the real `kafka.tools.StorageTool` (Java and the pinned jars are what the
    /// stack needs anyway).
    #[tokio::test]
    async fn storage_format_takes_a_cluster_id_that_begins_with_a_dash() {
        let lib = ensure_classpath().await.expect("the Kafka jars");
        let dir = std::env::temp_dir().join(format!(
            "stompede-format-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        let ports = process::free_ports(2).expect("free ports");
        let nodes = [NodePlan {
            node_id: 1,
            port: ports[0],
            controller_port: ports[1],
            data_dir: dir.join("kafka-1"),
            props: dir.join("kafka-1.properties"),
            log: dir.join("kafka-1.log"),
        }];
        let node = &nodes[0];
        std::fs::write(&node.props, broker_properties(node, &nodes, 1)).expect("write props");
        let log4j = dir.join("log4j2.xml");
        std::fs::write(&log4j, LOG4J2).expect("write log4j2.xml");
        // 0xf8 = 0b111110_00: the first base64url character is index 62, '-'.
        let mut bytes = rand::random::<[u8; 16]>();
        bytes[0] = 0xf8 | (bytes[0] & 0x03);
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        assert!(id.starts_with('-'), "{id}");

        let classpath = format!("{}/*", lib.display());
        let formatted = format_storage(&java(), &classpath, &log4j, &id, node).await;
        let meta = std::fs::read_to_string(node.data_dir.join("meta.properties"));
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(e) = formatted {
            panic!("storage format refused cluster id {id}: {e}");
        }
        let meta = meta.expect("meta.properties written by the format");
        assert!(
            meta.lines().any(|l| l == format!("cluster.id={id}")),
            "meta.properties does not record cluster id {id}:\n{meta}"
        );
    }

    #[test]
    fn three_node_properties_have_a_three_voter_quorum_and_rf3() {
        let nodes: Vec<NodePlan> = (1..=3)
            .map(|id| NodePlan {
                node_id: id,
                port: 9000 + id as u16,
                controller_port: 9100 + id as u16,
                data_dir: PathBuf::from(format!("/d/{id}")),
                props: PathBuf::new(),
                log: PathBuf::new(),
            })
            .collect();
        let p = broker_properties(&nodes[1], &nodes, 6);
        assert!(p.contains("node.id=2\n"));
        assert!(p.contains(
            "controller.quorum.voters=1@127.0.0.1:9101,2@127.0.0.1:9102,3@127.0.0.1:9103\n"
        ));
        assert!(p.contains("listeners=PLAINTEXT://127.0.0.1:9002,CONTROLLER://127.0.0.1:9102\n"));
        assert!(p.contains("default.replication.factor=3\n"));
        assert!(p.contains("min.insync.replicas=2\n"));
        assert!(p.contains("transaction.state.log.min.isr=2\n"));
        assert!(p.contains("num.partitions=6\n"));
        let single = broker_properties(&nodes[0], &nodes[..1], 3);
        assert!(single.contains("offsets.topic.replication.factor=1\n"));
        assert!(single.contains("min.insync.replicas=1\n"));
    }
}
