//! The Spring Boot peer (`peers/spring-chat`): a second chat server implementation the
//! stack can start in place of stompede's own, so both run under the same scenarios
//! and land in the same reports.
//!
//! Its sources are embedded in this binary ([`SOURCES`]), so any `stompede` can build
//! it: [`ensure_jar`] writes them to the cache (`<cache>/spring-chat/build-<hash>/`),
//! runs `mvn package` there once, and keeps `<cache>/spring-chat/<hash>/spring-chat.jar`.
//! The hash is over the sources, so an edited peer is rebuilt and an unchanged one never
//! is. Each instance is one JVM on one port (WebSocket `/ws-stomp`, `/healthz`,
//! `/metrics`), configured by Spring command-line properties.
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::kafka::{cache_root, check_java, java, jdk_tool, missing_or_io, MAVEN_INSTALL};
use super::process;
use super::{StackError, StackOptions};

/// The table the peer's JPA entity `ChatMessage` maps to.
pub const TABLE: &str = "chat_message";
/// The fan-out group every instance joins under the shared-group switch.
pub const SHARED_GROUP: &str = "stompede-fanout-shared";
/// Longest a build (including the first download of its dependencies) may take.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
const JDK_INSTALL: &str = "apt-get install openjdk-17-jdk-headless";
/// JVM options of every instance unless `STOMPEDE_SPRING_JAVA_OPTS` gives others.
pub const DEFAULT_JAVA_OPTS: &str = "-Xmx1g";

macro_rules! sources {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../../peers/spring-chat/", $path)))),*]
    };
}

/// Every file of the Maven project, by its path inside `peers/spring-chat`.
pub const SOURCES: &[(&str, &str)] = sources![
    "pom.xml",
    "src/main/resources/application.properties",
    "src/main/resources/schema.sql",
    "src/main/java/dev/stompede/springchat/SpringChatApplication.java",
    "src/main/java/dev/stompede/springchat/ChatMessageDto.java",
    "src/main/java/dev/stompede/springchat/MessageType.java",
    "src/main/java/dev/stompede/springchat/ChatMessage.java",
    "src/main/java/dev/stompede/springchat/ChatMessageRepository.java",
    "src/main/java/dev/stompede/springchat/ChatController.java",
    "src/main/java/dev/stompede/springchat/KafkaConfig.java",
    "src/main/java/dev/stompede/springchat/WebSocketConfig.java",
    "src/main/java/dev/stompede/springchat/FanoutListener.java",
    "src/main/java/dev/stompede/springchat/FanoutAssignment.java",
    "src/main/java/dev/stompede/springchat/ChatMetrics.java",
    "src/main/java/dev/stompede/springchat/OpsController.java",
];

/// FNV-1a over every path and text of [`SOURCES`].
pub fn fingerprint() -> String {
    fingerprint_of(SOURCES)
}

fn fingerprint_of(sources: &[(&str, &str)]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (path, text) in sources {
        for b in path.bytes().chain([0]).chain(text.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The built jar, building it first if this version of the sources never was.
pub async fn ensure_jar() -> Result<PathBuf, StackError> {
    check_java().await?;
    let base = cache_root().join("spring-chat");
    let hash = fingerprint();
    let jar = base.join(&hash).join("spring-chat.jar");
    if jar.is_file() {
        return Ok(jar);
    }
    std::fs::create_dir_all(&base)
        .map_err(|e| StackError::io("create cache directory", &base, e))?;
    check_javac().await?;
    // One build at a time per cache (parallel test binaries share it). The file moves into
    // the blocking task and back, so it stays open for as long as the lock is waited for.
    let lock_path = base.join(".build.lock");
    let file =
        std::fs::File::create(&lock_path).map_err(|e| StackError::io("create", &lock_path, e))?;
    let lock = tokio::task::spawn_blocking(move || {
        // SAFETY: flock on a descriptor this closure owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            Ok(file)
        } else {
            Err(std::io::Error::last_os_error())
        }
    })
    .await
    .map_err(|e| StackError::io("lock", &lock_path, std::io::Error::other(e)))?
    .map_err(|e| StackError::io("lock", &lock_path, e))?;
    if jar.is_file() {
        return Ok(jar);
    }
    let t = Instant::now();
    eprintln!(
        "spring peer: building peers/spring-chat with Maven (once per change of its sources; the first build downloads Spring Boot)…"
    );
    let build = base.join(format!("build-{hash}"));
    let _ = std::fs::remove_dir_all(&build);
    for (path, text) in SOURCES {
        let file = build.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StackError::io("create", dir, e))?;
        }
        std::fs::write(&file, text).map_err(|e| StackError::io("write", &file, e))?;
    }
    let log = base.join(format!("build-{hash}.log"));
    let (out, err) = process::open_log(&log)?;
    let child = tokio::process::Command::new("mvn")
        .args(["-B", "-q", "package", "-DskipTests"])
        .current_dir(&build)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .status();
    let failed = |reason: String| StackError::Part {
        part: "spring peer build (mvn package)".into(),
        reason,
        log: Some(log.clone()),
        tail: process::log_tail(&log, 20),
    };
    let status = match tokio::time::timeout(BUILD_TIMEOUT, child).await {
        Err(_) => return Err(failed(format!("not done after {BUILD_TIMEOUT:?}"))),
        Ok(r) => r.map_err(|e| missing_or_io(e, "mvn (Maven)", MAVEN_INSTALL, "start"))?,
    };
    if !status.success() {
        return Err(failed(format!(
            "Maven exited with {status}; the usual causes are Maven Central out of reach \
             (dependency resolution errors in the log) or a compiler error (the log names the file)"
        )));
    }
    let built = build.join("target").join("spring-chat.jar");
    let dir = jar.parent().unwrap_or(&base);
    std::fs::create_dir_all(dir).map_err(|e| StackError::io("create", dir, e))?;
    let tmp = dir.join(format!("spring-chat.jar.tmp-{}", std::process::id()));
    std::fs::copy(&built, &tmp)
        .map_err(|e| StackError::io("copy the built jar from", &built, e))?;
    std::fs::rename(&tmp, &jar).map_err(|e| StackError::io("move the built jar to", &jar, e))?;
    let _ = std::fs::remove_dir_all(&build);
    eprintln!(
        "spring peer: built in {:.1} s → {}",
        t.elapsed().as_secs_f64(),
        jar.display()
    );
    drop(lock);
    Ok(jar)
}

/// Maven compiles the peer: a JRE alone (no `javac`) is not enough.
async fn check_javac() -> Result<(), StackError> {
    let ok = tokio::process::Command::new(jdk_tool("javac"))
        .arg("-version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(StackError::MissingPrerequisite {
            program: "javac (a Java 17+ JDK, to build the Spring peer)".into(),
            install: JDK_INSTALL,
        })
    }
}

/// `postgres://USER@HOST:PORT/DB` → (`jdbc:postgresql://HOST:PORT/DB`, USER).
pub fn jdbc(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let (user, place) = rest.split_once('@')?;
    let user = user.split(':').next()?;
    if user.is_empty() || place.is_empty() || place.contains('@') {
        return None;
    }
    Some((format!("jdbc:postgresql://{place}"), user.to_string()))
}

/// `java … -jar spring-chat.jar --…` for instance `id` on `port`.
pub fn command(
    jar: &Path,
    opts: &StackOptions,
    id: &str,
    port: u16,
    bootstrap: &str,
    db_url: &str,
) -> Result<Command, StackError> {
    let (jdbc_url, user) = jdbc(db_url).ok_or_else(|| {
        StackError::Invalid(format!(
            "cannot turn the database URL {db_url:?} into a JDBC URL for the Spring peer"
        ))
    })?;
    let java_opts = std::env::var("STOMPEDE_SPRING_JAVA_OPTS")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_JAVA_OPTS.to_string());
    let mut cmd = Command::new(java());
    cmd.args(java_opts.split_whitespace())
        .arg("-jar")
        .arg(jar)
        .arg(format!("--server.port={port}"))
        .arg("--server.address=127.0.0.1")
        .arg(format!("--chat.instance-id={id}"))
        .arg(format!("--chat.topic={}", opts.topic))
        .arg(format!("--spring.kafka.bootstrap-servers={bootstrap}"))
        .arg(format!("--spring.datasource.url={jdbc_url}"))
        .arg(format!("--spring.datasource.username={user}"));
    if opts.shared_fanout_group {
        cmd.arg(format!("--chat.group-id={SHARED_GROUP}"));
    }
    cmd.stdin(Stdio::null());
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_peer_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/spring-chat");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("read peer sources") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path.strip_prefix(&root).expect("under root");
                    on_disk.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        on_disk.push("pom.xml".into());
        on_disk.sort();
        let mut embedded: Vec<String> = SOURCES.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(
            embedded, on_disk,
            "src/stack/spring.rs SOURCES must list every file of peers/spring-chat"
        );
    }

    #[test]
    fn the_fingerprint_follows_the_sources() {
        assert_eq!(fingerprint(), fingerprint());
        assert_eq!(fingerprint().len(), 16);
        let (path, text) = SOURCES[0];
        let edited = format!("{text} ");
        let moved = format!("x/{path}");
        let mut one_changed = SOURCES.to_vec();
        one_changed[0] = (path, edited.as_str());
        assert_ne!(fingerprint_of(&one_changed), fingerprint());
        one_changed[0] = (moved.as_str(), text);
        assert_ne!(fingerprint_of(&one_changed), fingerprint());
        assert_ne!(fingerprint_of(&SOURCES[1..]), fingerprint());
    }

    #[test]
    fn database_urls_become_jdbc() {
        assert_eq!(
            jdbc("postgres://stompede@127.0.0.1:5433/stompede"),
            Some((
                "jdbc:postgresql://127.0.0.1:5433/stompede".into(),
                "stompede".into()
            ))
        );
        assert_eq!(jdbc("mysql://a@b/c"), None);
        assert_eq!(jdbc("postgres://127.0.0.1/x"), None);
    }
}
