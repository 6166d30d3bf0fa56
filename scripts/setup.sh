#!/usr/bin/env bash
# Installs what stompede needs on a fresh Debian machine, and nothing that is already
# there: a JDK and Maven (Kafka's jars come from Maven Central at first `stack up`),
# PostgreSQL 15 server binaries, Node.js + npm (the @stomp/stompjs interop test), and
# the C toolchain librdkafka is built with. (The chart font is built into stompede.)
#   bash scripts/setup.sh            # what `stompede run` needs
#   bash scripts/setup.sh --tests    # also RabbitMQ (interop), the Node test packages and
#                                    # (if none of 1.29+ is here) kubectl for deploy/k8s
set -euo pipefail
cd "$(dirname "$0")/.."

want_tests=0
[[ "${1:-}" == "--tests" ]] && want_tests=1

missing=()
need() { # need <command-or-path> <debian package>
  if [[ "$1" == /* ]]; then [[ -e "$1" ]] || missing+=("$2")
  else command -v "$1" >/dev/null 2>&1 || missing+=("$2"); fi
}
need java openjdk-17-jdk-headless
need javac openjdk-17-jdk-headless   # the Spring peer is compiled on first use
need mvn maven
need node nodejs
need npm npm
need cc build-essential
need make build-essential
need cmake cmake
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then missing+=(postgresql); fi
if [[ $want_tests == 1 ]]; then
  need /usr/sbin/rabbitmq-server rabbitmq-server
fi

if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]]; then
    echo "setup: missing packages: ${missing[*]}; install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  # shellcheck disable=SC2207
  pkgs=($(printf '%s\n' "${missing[@]}" | sort -u))
  echo "setup: installing ${pkgs[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's postinst would start system services (postgresql, rabbitmq); stompede
  # runs its own private instances, so keep the system ones from starting.
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; created_policy=1; fi
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  [[ $created_policy == 1 ]] && rm -f $policy
fi

# The deploy/k8s test renders the manifests with kubectl, offline, into the types of
# Kubernetes 1.29 or later. A machine without such a kubectl gets one built from its Go
# modules (scripts/kubectl, pinned by go.sum) into stompede's cache, once.
kubectl_minor() { "$1" version --client -o json 2>/dev/null | grep -o '"minor": *"[0-9]*' | grep -o '[0-9]*$' || true; }
if [[ $want_tests == 1 ]]; then
  cache=${STOMPEDE_CACHE:-${XDG_CACHE_HOME:+$XDG_CACHE_HOME/stompede}}
  cache=${cache:-$HOME/.cache/stompede}
  minor=$(kubectl_minor kubectl)
  if (( ${minor:-0} < 29 )) && [[ ! -x $cache/bin/kubectl ]]; then
    if ! command -v go >/dev/null 2>&1; then
      echo "setup: the deploy/k8s test needs kubectl 1.29 or later, or Go to build one; install either" >&2
      exit 1
    fi
    echo "setup: building kubectl from its Go modules into $cache/bin (a few minutes, once)" >&2
    mkdir -p "$cache/bin"
    (cd scripts/kubectl && go build -trimpath -o "$cache/bin/kubectl.part" . && mv "$cache/bin/kubectl.part" "$cache/bin/kubectl")
  fi
fi

if [[ $want_tests == 1 && ! -d interop/node_modules/@stomp/stompjs ]]; then
  echo "setup: installing the interop test's npm packages" >&2
  (cd interop && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: ready" >&2
