#!/usr/bin/env bash
# bench/cluster.sh: sselog on a three-node embedded JetStream cluster beside
# sselog on bbolt, on this machine (issue 13).
#
# Starts three `sselog serve --backend jetstream --cluster-*` nodes on
# loopback (all three share this machine's cores and disk), runs `sselog
# bench` against node 1 (publish at 1 and 32 publishers and 8 x batches of
# 100, replay of N events, fan-out of 1,000 subscribers x 200 events/s),
# then the same workloads against a bbolt server (--spawn), and prints one
# Markdown table. Last, the failover window: 8 publishers on the node that
# does not lead the stream while the leading node is SIGKILLed; the
# window is the longest a publish waited (publishes retry nothing: a 503
# counts as an error).
#
# Run it from anywhere: bash bench/cluster.sh
#
# Environment:
#   SSELOG=/path/to/sselog  use this binary instead of building ./cmd/sselog
#   REPLAY=1000000          events published, then replayed
#   DURATION=10s            each publish and fan-out run
#   KEEP=1                  keep the work directory (nodes' logs, JSON)
#   NODE_FLAGS="--nats-sync 1s"  more flags for every node
#
# It needs go, curl and jq. A run takes about 5 minutes on 2 cores.
set -euo pipefail

REPLAY=${REPLAY:-1000000}
DURATION=${DURATION:-10s}
for tool in go curl jq; do
	command -v "$tool" > /dev/null || { echo "cluster.sh: needs $tool" >&2; exit 2; }
done

work=$(mktemp -d /tmp/sselog-cluster.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -9 "$p" 2> /dev/null || true; done
	wait 2> /dev/null || true
	if [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work" >&2; fi
}
trap cleanup EXIT

repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${SSELOG:-}" ]; then
	SSELOG=$work/sselog
	(cd "$repo" && go build -o "$SSELOG" ./cmd/sselog)
fi

http=(18181 18182 18183)
route=(17441 17442 17443)

start() { # start node i (0-based)
	local i=$1 peers=""
	for j in 0 1 2; do
		[ "$j" = "$i" ] || peers="$peers,127.0.0.1:${route[$j]}"
	done
	# shellcheck disable=SC2086
	"$SSELOG" serve --backend jetstream --addr "127.0.0.1:${http[$i]}" --db "$work/n$i/replica.db" \
		--cluster-name bench --cluster-listen "127.0.0.1:${route[$i]}" --cluster-peers "${peers#,}" \
		--log-level info ${NODE_FLAGS:-} > "$work/n$i.log" 2>&1 &
	pids[$i]=$!
}
ready() { # wait for node i to serve
	for _ in $(seq 600); do
		curl -fs "http://127.0.0.1:${http[$1]}/healthz" > /dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "cluster.sh: node $1 did not start; see $work/n$1.log" >&2
	exit 1
}
cluster() {
	rm -rf "$work"/n0 "$work"/n1 "$work"/n2
	for i in 0 1 2; do start "$i"; done
	for i in 0 1 2; do ready "$i"; done
}
stop() {
	for i in 0 1 2; do kill "${pids[$i]}" 2> /dev/null || true; done
	wait 2> /dev/null || true
}
# leader prints the node that announced itself stream leader last.
leader() {
	local best="" bestline=""
	for i in 0 1 2; do
		line=$(grep -n "new stream leader for '\$G > SSELOG'" "$work/n$i.log" | tail -1 || true)
		[ -n "$line" ] || continue
		ts=$(echo "$line" | sed -E 's/.*time=([^ ]+).*/\1/')
		if [ -z "$best" ] || [[ "$ts" > "$bestline" ]]; then best=$i bestline=$ts; fi
	done
	echo "$best"
}

run() { # run <label> <url-or---spawn> <workload> [flags...]: prints JSON
	# A run with errors (the failover's 503s) exits non-zero after its
	# JSON: the table reports them.
	local label=$1 where=$2
	shift 2
	if [ "$where" = "--spawn" ]; then
		"$SSELOG" bench "$@" --spawn --json 2> "$work/$label.err" | tee "$work/$label.json" || true
	else
		"$SSELOG" bench "$@" --url "$where" --json 2> "$work/$label.err" | tee "$work/$label.json" || true
	fi
}

node1=http://127.0.0.1:${http[0]}
rows=()
row() { rows+=("| $1 | $2 | $3 |"); }

echo "starting a 3-node cluster ..." >&2
cluster
for spec in "publish, 1 publisher|publish -c 1" "publish, 32 publishers|publish -c 32" "publish, 8 x batches of 100|publish -c 8 --batch 100"; do
	label=${spec%%|*} args=${spec#*|}
	echo "$label ..." >&2
	# shellcheck disable=SC2086
	c=$(run "cluster-${args// /}" "$node1" $args --duration "$DURATION")
	# shellcheck disable=SC2086
	b=$(run "bbolt-${args// /}" --spawn $args --duration "$DURATION")
	fmt='\(.events_per_s | floor) events/s, p50 \(.latency_p50_ms * 10 | round / 10) ms, p99 \(.latency_p99_ms * 10 | round / 10) ms, errors \(.errors)'
	row "$label" "$(jq -r "\"$fmt\"" <<< "$c")" "$(jq -r "\"$fmt\"" <<< "$b")"
done
echo "replay of $REPLAY events ..." >&2
c=$(run cluster-replay "$node1" replay -n "$REPLAY")
b=$(run bbolt-replay --spawn replay -n "$REPLAY")
fmt='\(.events_per_s | floor) events/s (load \(.load_events_per_s | floor)/s), missing \(.missing), duplicates \(.duplicates)'
row "replay of $REPLAY events" "$(jq -r "\"$fmt\"" <<< "$c")" "$(jq -r "\"$fmt\"" <<< "$b")"
echo "fan-out 1,000 x 200/s ..." >&2
c=$(run cluster-fanout "$node1" fanout --subscribers 1000 --rate 200 --duration "$DURATION")
b=$(run bbolt-fanout --spawn fanout --subscribers 1000 --rate 200 --duration "$DURATION")
fmt='\(.deliveries_per_s | floor) deliveries/s, p99 \(.latency_p99_ms * 10 | round / 10) ms, gaps \(.gaps // 0), duplicates \(.duplicates // 0)'
row "fan-out 1,000 x 200/s" "$(jq -r "\"$fmt\"" <<< "$c" 2> /dev/null || echo see "$work/cluster-fanout.json")" "$(jq -r "\"$fmt\"" <<< "$b" 2> /dev/null || echo see "$work/bbolt-fanout.json")"
stop

echo "failover ..." >&2
cluster
l=$(leader)
[ -n "$l" ] || { echo "cluster.sh: no stream leader found in the logs" >&2; exit 1; }
other=$(( (l + 1) % 3 ))
(sleep 5; kill -9 "${pids[$l]}") &
c=$(run cluster-failover "http://127.0.0.1:${http[$other]}" publish -c 8 --duration 15s)
row "failover: SIGKILL of the stream leader (node $l) under 8 publishers on node $other" \
	"$(jq -r '"longest publish \(.latency_max_ms | round) ms, \(.errors) errors (503), \(.events_per_s | floor) events/s over 15 s"' <<< "$c")" "n/a"
stop

echo
echo "| workload | 3-node JetStream cluster (node 1) | bbolt |"
echo "| --- | --- | --- |"
printf '%s\n' "${rows[@]}"
