#!/usr/bin/env bash
# Validates docker-compose.yml for both profiles.
#
# With Docker Compose available: `docker compose config -q` per profile (no engine needed).
# Otherwise, with python3 and PyYAML: parses the file and checks the services, profiles,
# dependencies, commands and interpolation syntax the stack relies on.
# Otherwise: says what was skipped and why, and exits 0.
#
# Exit status: 0 valid or skipped, 1 the file has a real problem.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
FILE=$ROOT/docker-compose.yml
[ -f "$FILE" ] || { echo "check-compose: $FILE is missing" >&2; exit 1; }

# The environment the three-brokers profile is documented to run with.
three_brokers_env=(
  STOMPEDE_KAFKA=kafka-1:9092,kafka-2:9092,kafka-3:9092
  STOMPEDE_KAFKA_VOTERS=1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093
  STOMPEDE_KAFKA_RF=3
  STOMPEDE_KAFKA_MIN_ISR=2
)

if docker compose version >/dev/null 2>&1; then
  echo "check-compose: using $(docker compose version | head -n 1)"
  (cd "$ROOT" && docker compose -f docker-compose.yml --profile one-broker config -q)
  echo "check-compose: one-broker ok"
  (cd "$ROOT" && env "${three_brokers_env[@]}" docker compose -f docker-compose.yml --profile three-brokers config -q)
  echo "check-compose: three-brokers ok"
  exit 0
fi

if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import yaml' >/dev/null 2>&1; then
  echo "check-compose: skipped: neither 'docker compose' nor python3 with PyYAML is available" \
    "(install one of them to validate docker-compose.yml)"
  exit 0
fi

echo "check-compose: 'docker compose' not available; checking structure with python3 + PyYAML"
exec python3 - "$FILE" "$ROOT" <<'PY'
import os
import re
import sys

import yaml

path, root = sys.argv[1], sys.argv[2]
errors = []


def err(msg):
    errors.append(msg)


try:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
except yaml.YAMLError as e:
    print(f"check-compose: {path} is not valid YAML: {e}", file=sys.stderr)
    sys.exit(1)

services = doc.get("services") or {}
expected = {
    "kafka-1": {"one-broker", "three-brokers"},
    "kafka-2": {"three-brokers"},
    "kafka-3": {"three-brokers"},
    "topic-init": {"one-broker", "three-brokers"},
    "postgres": {"one-broker", "three-brokers"},
    "server-1": {"one-broker", "three-brokers"},
    "server-2": {"one-broker", "three-brokers"},
}
for name, profiles in expected.items():
    svc = services.get(name)
    if svc is None:
        err(f"service '{name}' is missing")
        continue
    got = set(svc.get("profiles") or [])
    if got != profiles:
        err(f"service '{name}' has profiles {sorted(got)}, expected {sorted(profiles)}")
for name in services:
    if name not in expected:
        err(f"unexpected service '{name}' (add it to scripts/check-compose.sh if intended)")

# Compose rejects a dependency on a service its profile does not enable.
for profile in ("one-broker", "three-brokers"):
    active = {n for n, s in services.items() if profile in (s.get("profiles") or [])}
    for name in sorted(active):
        deps = services[name].get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in active:
                err(f"profile {profile}: '{name}' depends on '{dep}', which the profile does not start")


def env_of(svc):
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return env


for name in ("kafka-1", "kafka-2", "kafka-3"):
    svc = services.get(name) or {}
    if not str(svc.get("image", "")).startswith("apache/kafka:4.1.1"):
        err(f"{name}: image should be apache/kafka:4.1.1, got {svc.get('image')!r}")
    env = env_of(svc)
    for key in ("KAFKA_NODE_ID", "KAFKA_PROCESS_ROLES", "KAFKA_CONTROLLER_QUORUM_VOTERS", "CLUSTER_ID",
                "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_DEFAULT_REPLICATION_FACTOR",
                "KAFKA_MIN_INSYNC_REPLICAS", "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "KAFKA_AUTO_CREATE_TOPICS_ENABLE"):
        if key not in env:
            err(f"{name}: environment lacks {key}")
    if str(env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "")).lower() != "false":
        err(f"{name}: KAFKA_AUTO_CREATE_TOPICS_ENABLE must be false")
    if str(env.get("KAFKA_NODE_ID")) != name[-1]:
        err(f"{name}: KAFKA_NODE_ID is {env.get('KAFKA_NODE_ID')}, expected {name[-1]}")

topic = services.get("topic-init") or {}
script = " ".join(map(str, topic.get("command") or []))
if "kafka-topics.sh" not in script or "chat.messages" not in str(env_of(topic)) + script:
    err("topic-init: should create chat.messages with /opt/kafka/bin/kafka-topics.sh")

pg = services.get("postgres") or {}
if not str(pg.get("image", "")).startswith("postgres:15"):
    err(f"postgres: image should be postgres:15, got {pg.get('image')!r}")
for vol in pg.get("volumes") or []:
    src = str(vol).split(":", 1)[0]
    if src.startswith(".") and not os.path.exists(os.path.join(root, src)):
        err(f"postgres: mounted file {src} does not exist")

for name, host_ports in (("server-1", {"8081", "9091"}), ("server-2", {"8082", "9092"})):
    svc = services.get(name) or {}
    if "build" not in svc:
        err(f"{name}: should be built from the Dockerfile")
    cmd = [str(c) for c in svc.get("command") or []]
    for flag in ("--listen", "--kafka", "--db", "--instance-id", "--persist", "--topic", "--metrics-listen"):
        if flag not in cmd:
            err(f"{name}: command lacks {flag}")
    published = {str(p).split(":")[0] for p in svc.get("ports") or []}
    if published != host_ports:
        err(f"{name}: publishes {sorted(published)}, expected {sorted(host_ports)}")
if not os.path.exists(os.path.join(root, "Dockerfile")):
    err("Dockerfile is missing")

# Interpolation: every '$' is '$$' (a literal) or ${NAME}, ${NAME:-default}, ${NAME-default}.
text = open(path, encoding="utf-8").read()
token = re.compile(r"\$\$|\$\{[A-Za-z_][A-Za-z0-9_]*(?:(?::?[-+?])[^}]*)?\}|\$")
for lineno, line in enumerate(text.splitlines(), 1):
    if line.lstrip().startswith("#"):
        continue
    for m in token.finditer(line):
        if m.group(0) == "$":
            err(f"line {lineno}: bare '$' (write '$$' for a literal): {line.strip()}")

if errors:
    for e in errors:
        print(f"check-compose: {e}", file=sys.stderr)
    sys.exit(1)
print(f"check-compose: structure ok ({len(services)} services; profiles one-broker, three-brokers)")
PY
