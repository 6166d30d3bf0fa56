#!/usr/bin/env bash
# Soak test of the local stack's start: N cycles of `stompede stack up` then
# `stompede stack down`, each in this script's own state directory (never the user's
# .stompede), with the release binary (built first if it is missing or stale).
#
#   scripts/stack-soak.sh N [--brokers 1|3]
#
# Prints one line per cycle with its duration; for a failed cycle, the error text and
# the tail of the log it names (the failed cycle's logs are kept under the state
# directory's failures/). Ends with "N cycles, F failures" and exits 1 if F > 0.
# Not part of CI: 30 cycles take 10-20 minutes.
set -uo pipefail

usage() {
    echo "usage: $0 N [--brokers 1|3]" >&2
    exit 2
}

[ $# -ge 1 ] || usage
cycles=$1
shift
[[ "$cycles" =~ ^[1-9][0-9]*$ ]] || usage
brokers=1
while [ $# -gt 0 ]; do
    case "$1" in
        --brokers)
            [ $# -ge 2 ] || usage
            brokers=$2
            shift 2
            ;;
        --brokers=*)
            brokers=${1#--brokers=}
            shift
            ;;
        *) usage ;;
    esac
done
[[ "$brokers" == 1 || "$brokers" == 3 ]] || usage

repo=$(cd "$(dirname "$0")/.." && pwd)
echo "building the release binary (cargo build --release)…" >&2
if ! (cd "$repo" && cargo build --release --quiet); then
    echo "error: cargo build --release failed; fix the build and rerun" >&2
    exit 2
fi
bin="$repo/target/release/stompede"

state=$(mktemp -d "${TMPDIR:-/tmp}/stompede-soak.XXXXXX")
# Traversable, so PostgreSQL (as root: the `postgres` user) keeps its data in it.
chmod 755 "$state"
out="$state/cycle.out"

cleanup() {
    # Whatever an interrupted cycle left running is stopped by what it recorded.
    if [ -d "$state" ]; then
        "$bin" stack down --state-dir "$state" >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# The error text of a failed command, then the tail of the log it names.
report() {
    local what=$1 cycle=$2 keep="$state/failures/cycle-$2"
    echo "  $what failed; its output:"
    grep -v '^$' "$out" | sed 's/^/    | /'
    mkdir -p "$keep"
    cp -r "$state/logs/." "$keep/" 2>/dev/null
    local log
    log=$(sed -n 's/^ *log: \(.*\)$/\1/p' "$out" | tail -n 1)
    if [ -n "$log" ] && [ -f "$keep/$(basename "$log")" ]; then
        echo "  last 30 lines of $log:"
        tail -n 30 "$keep/$(basename "$log")" | sed 's/^/    > /'
    fi
    echo "  logs of this cycle kept in $keep"
}

echo "soak: $cycles cycles of stack up/down, $brokers broker(s), state dir $state" >&2
failures=0
total_start=$(now)
for ((i = 1; i <= cycles; i++)); do
    t0=$(now)
    if "$bin" stack up --brokers "$brokers" --state-dir "$state" >"$out" 2>&1; then
        t1=$(now)
        # Kafka answers of "not ready yet" the servers met and retried at start.
        retries=$(cat "$state"/logs/server-*.log 2>/dev/null | grep -c "not ready yet")
        if "$bin" stack down --state-dir "$state" >"$out" 2>&1; then
            t2=$(now)
            echo "cycle $i/$cycles: ok in $(secs "$t0" "$t2") s (up $(secs "$t0" "$t1") s, down $(secs "$t1" "$t2") s, server Kafka retries $retries)"
        else
            failures=$((failures + 1))
            echo "cycle $i/$cycles: FAILED in $(secs "$t0" "$(now)") s: stack down"
            report "stack down" "$i"
        fi
    else
        failures=$((failures + 1))
        echo "cycle $i/$cycles: FAILED in $(secs "$t0" "$(now)") s: stack up"
        report "stack up" "$i"
        # A failed up cleans up after itself; make sure before the next cycle.
        "$bin" stack down --state-dir "$state" >/dev/null 2>&1 || true
    fi
done
echo "soak took $(secs "$total_start" "$(now)") s" >&2
if [ "$failures" -eq 0 ]; then
    rm -rf "$state"
else
    echo "logs of the failed cycles: $state/failures" >&2
fi
echo "$cycles cycles, $failures failures"
[ "$failures" -eq 0 ]
