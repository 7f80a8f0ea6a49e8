#!/usr/bin/env bash
# bench/peers.sh: sselog and Mercure side by side, on this machine (issue 15).
#
# Builds Mercure at a pinned version from its Go module (a Caddy binary, in
# a temporary directory: nothing of Mercure's is kept in this repository),
# then runs each workload of `sselog bench` against Mercure (bolt transport,
# anonymous subscribers, on loopback) and against sselog, in alternating
# rounds (Mercure then sselog, then sselog then Mercure, ...), each run on
# a fresh server and database. It prints one Markdown table: workload,
# Mercure, sselog, and their ratio; the runs' progress goes to stderr.
#
# Run it from anywhere: bash bench/peers.sh
#
# Environment:
#   ROUNDS=2               rounds per workload (at least 2)
#   SSELOG=/path/to/sselog use this binary instead of building ./cmd/sselog
#   MERCURE=/path/to/caddy use this Mercure build instead of building one
#   MERCURE_ADDR=127.0.0.1:18091  where Mercure listens
#   KEEP=1                 keep the work directory (runs' JSON, servers' logs)
#
# It needs go, curl and jq. On 2 cores two rounds take about 4 minutes
# (three, 5.5) once Go's build cache holds both builds; from an empty one,
# about 9.5 minutes in all.
set -euo pipefail

MERCURE_VERSION=v0.24.2 # github.com/dunglas/mercure/caddy
CADDY_VERSION=v2.11.3   # the Caddy that Mercure v0.24.2 requires
# Caddy pins golang.org/x/crypto/x509roots/fallback at a pseudo-version
# that some module proxies refuse; this later one is served. It only holds
# fallback root certificates, which a hub on loopback without TLS never
# reads.
X509ROOTS_FALLBACK=v0.0.0-20261030153154-30a33513ff6d

ROUNDS=${ROUNDS:-2}
MERCURE_ADDR=${MERCURE_ADDR:-127.0.0.1:18091}
if [ "$ROUNDS" -lt 2 ]; then
	echo "peers.sh: ROUNDS must be at least 2" >&2
	exit 2
fi
for tool in go curl jq; do
	command -v "$tool" > /dev/null || { echo "peers.sh: needs $tool" >&2; exit 2; }
done

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/sselog-peers.XXXXXX")
server_pid=
cleanup() {
	if [ -n "$server_pid" ]; then
		kill -KILL "$server_pid" 2> /dev/null || true
	fi
	if [ "${KEEP:-}" = 1 ]; then
		echo "peers.sh: kept $work" >&2
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
began=$(date +%s)
say() { echo "peers.sh: $*" >&2; }

# --- Build -----------------------------------------------------------------

sselog=${SSELOG:-}
if [ -z "$sselog" ]; then
	say "building sselog"
	(cd "$repo" && go build -o "$work/sselog" ./cmd/sselog)
	sselog=$work/sselog
fi

mercure=${MERCURE:-}
if [ -z "$mercure" ]; then
	say "building Mercure $MERCURE_VERSION (Caddy $CADDY_VERSION)"
	mkdir "$work/mercure-build"
	cat > "$work/mercure-build/main.go" << 'EOF'
// A Caddy binary with its standard modules and Mercure's.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/dunglas/mercure/caddy"
)

func main() { caddycmd.Main() }
EOF
	(
		cd "$work/mercure-build"
		export GOWORK=off GOFLAGS=-mod=mod
		go mod init peers.local/mercure 2> /dev/null
		go mod edit -replace "golang.org/x/crypto/x509roots/fallback=golang.org/x/crypto/x509roots/fallback@$X509ROOTS_FALLBACK"
		go get "github.com/dunglas/mercure/caddy@$MERCURE_VERSION" "github.com/caddyserver/caddy/v2@$CADDY_VERSION" 2> "$work/mercure-build/get.log" ||
			{ cat "$work/mercure-build/get.log" >&2; exit 1; }
		go mod tidy 2>> "$work/mercure-build/get.log" || { cat "$work/mercure-build/get.log" >&2; exit 1; }
		go build -o "$work/mercure" .
	)
	mercure=$work/mercure
fi
say "Mercure: $("$mercure" list-modules --versions 2> /dev/null | grep -m1 '^http.handlers.mercure ' || echo "$mercure")"

key=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') # the publisher JWT key
mercure_url=http://$MERCURE_ADDR

# --- Servers ---------------------------------------------------------------

# wait_for DESCRIPTION COMMAND...: polls COMMAND every 0.1 s until it
# succeeds, for at most 20 s; a status of 2 gives up at once.
wait_for() {
	local what=$1 rc
	shift
	for _ in $(seq 200); do
		if "$@"; then
			return 0
		else
			rc=$?
		fi
		[ "$rc" != 2 ] || return 1
		sleep 0.1
	done
	say "$what: not within 20 s"
	return 1
}

# start_mercure DIR: starts Mercure with its database and Caddy's state in
# DIR; sets server_pid and url.
start_mercure() {
	local dir=$1
	mkdir -p "$dir"
	cat > "$dir/Caddyfile" << EOF
{
	admin off
	auto_https off
	persist_config off
	default_bind ${MERCURE_ADDR%:*}
	storage file_system $dir/caddy
}

http://$MERCURE_ADDR {
	mercure {
		transport bolt {
			path $dir/mercure.db
		}
		publisher_jwt $key HS256
		anonymous
	}
}
EOF
	XDG_DATA_HOME=$dir XDG_CONFIG_HOME=$dir \
		"$mercure" run --config "$dir/Caddyfile" --adapter caddyfile >> "$dir/mercure.log" 2>&1 &
	server_pid=$!
	url=$mercure_url
	# A hub answers a subscription without a topic with 400.
	wait_for "Mercure at $url" mercure_up || { tail -20 "$dir/mercure.log" >&2; exit 1; }
}
mercure_up() {
	kill -0 "$server_pid" 2> /dev/null || { say "Mercure exited"; return 2; }
	[ "$(curl -s -o /dev/null -w '%{http_code}' "$mercure_url/.well-known/mercure")" = 400 ]
}

# start_sselog DIR: starts sselog on a free port with its database in DIR;
# sets server_pid and url.
start_sselog() {
	local dir=$1
	mkdir -p "$dir"
	: > "$dir/serve.out"
	"$sselog" serve --addr 127.0.0.1:0 --db "$dir/sselog.db" >> "$dir/serve.out" 2>> "$dir/serve.log" &
	server_pid=$!
	wait_for "sselog" sselog_up "$dir" || { tail -20 "$dir/serve.log" >&2; exit 1; }
	url=$(sed -n 's/^sselog serving on //p' "$dir/serve.out")
}
sselog_up() {
	kill -0 "$server_pid" 2> /dev/null || { say "sselog exited"; return 2; }
	grep -q '^sselog serving on ' "$1/serve.out"
}

# stop: SIGTERM, then SIGKILL if the server is still there after 20 s.
stop() {
	kill -TERM "$server_pid"
	if ! wait_for "server $server_pid to stop" gone "$server_pid"; then
		kill -KILL "$server_pid" 2> /dev/null || true
	fi
	wait "$server_pid" 2> /dev/null || true
	server_pid=
}
gone() { ! kill -0 "$1" 2> /dev/null; }

# start TARGET DIR
start() { "start_$1" "$2"; }

if curl -s -o /dev/null "$mercure_url"; then
	say "something already answers at $mercure_url: set MERCURE_ADDR"
	exit 1
fi

# --- Runs ------------------------------------------------------------------

# bench TARGET OUT SUMMARY ARGS...: one `sselog bench` run against the
# server at $url, its JSON report appended to OUT and SUMMARY (a jq
# expression) of it printed on stderr. A run whose checks fail (gaps,
# missing events) still reports: its figures go in the table. A run that
# reports nothing is an error of the tool, and ends the script.
bench() {
	local target=$1 out=$2 summary=$3 line
	shift 3
	local args=("$@" --url "$url" --pid "$server_pid" --target "$target" --json)
	if [ "$target" = mercure ]; then
		args+=(--mercure-jwt-key "$key")
	fi
	line=$("$sselog" bench "${args[@]}" 2>> "$work/bench.log") || true
	if ! jq -e . > /dev/null 2>&1 <<< "$line"; then
		say "no report from: sselog bench ${args[*]}"
		tail -5 "$work/bench.log" >&2
		exit 1
	fi
	echo "$line" >> "$out"
	say "$label: $(jq -r "$summary" <<< "$line") (load $(cut -d' ' -f1 /proc/loadavg))"
}

# The workloads. Each is a function of TARGET and a fresh directory: it
# starts its server(s), runs, and stops them.
w_publish1() {
	start "$1" "$2"
	bench "$1" "$work/publish1.$1" '"\(.events_per_s|floor) events/s"' publish -c 1 --duration 10s
	stop
}
w_publish32() {
	start "$1" "$2"
	bench "$1" "$work/publish32.$1" '"\(.events_per_s|floor) events/s"' publish -c 32 --duration 10s
	stop
}
w_fanout() {
	start "$1" "$2"
	bench "$1" "$work/fanout.$1" '"\(.deliveries_per_s|floor) deliveries/s, p99 \(.latency_p99_ms) ms, \(.gaps) gaps"' \
		fanout --subscribers 1000 --rate 200 --duration 10s --deadline 15s --size 100
	stop
}
w_idle() {
	start "$1" "$2"
	bench "$1" "$work/idle.$1" '"\(.rss_per_subscriber_bytes/1024|floor) KB each, \(.errors) cut off"' idle --subscribers 10000
	stop
}
w_replay() {
	start "$1" "$2"
	bench "$1" "$work/replay.$1" '"\(.received) of \(.events) at \(.events_per_s|floor) events/s, \(.connections) connections"' \
		replay -n 10000 --resume
	stop
}
# The correctness rows: what each server replays from the first id of
# 20,000 events over one connection, then with the connection dropped
# every 500 events and resumed; and, on another server, from the first id
# of 1,000 events after a restart.
w_correct() {
	local got='"\(.received) of \(.events), \(.duplicates) duplicates, \(.connections) connections, ended \(.ended)"'
	local loaded='"loaded \(.events) events"'
	start "$1" "$2/a"
	bench "$1" "$work/loads" "$loaded" replay --phase load -n 20000 --stream first
	bench "$1" "$work/once.$1" "$got" replay --phase read -n 20000 --stream first
	bench "$1" "$work/drops.$1" "$got" replay --phase read -n 20000 --stream first --drop-every 500
	stop
	start "$1" "$2/b"
	bench "$1" "$work/loads" "$loaded" replay --phase load -n 1000 --stream restart
	stop
	start "$1" "$2/b"
	bench "$1" "$work/restart.$1" "$got" replay --phase read -n 1000 --stream restart
	stop
}

say "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
for w in publish1 publish32 fanout idle replay correct; do
	for round in $(seq "$ROUNDS"); do
		if [ $((round % 2)) = 1 ]; then order="mercure sselog"; else order="sselog mercure"; fi
		for target in $order; do
			label="$w, round $round, $target"
			dir=$work/run/$w.$round.$target
			"w_$w" "$target" "$dir"
			[ "${KEEP:-}" = 1 ] || rm -rf "$dir"
		done
	done
done

# --- The table ---------------------------------------------------------------

# commas N: N rounded, with thousands separators.
commas() {
	awk -v n="$1" 'BEGIN {
		s = sprintf("%.0f", n); neg = s ~ /^-/; sub(/^-/, "", s); out = ""
		while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
		print (neg ? "-" : "") s out
	}'
}
# stats FILE EXPR: min, max and mean of EXPR over FILE's reports.
stats() { jq -rs "[.[] | $2] | \"\(min) \(max) \(add / length)\"" "$1"; }
# range FILE EXPR DIGITS: "min-max" (or one value) of EXPR, each printed
# with DIGITS decimals, or with thousands separators for "commas".
range() {
	local lo hi
	read -r lo hi _ <<< "$(stats "$1" "$2")"
	if [ "$3" = commas ]; then
		lo=$(commas "$lo") hi=$(commas "$hi")
	else
		lo=$(printf '%.*f' "$3" "$lo") hi=$(printf '%.*f' "$3" "$hi")
	fi
	if [ "$lo" = "$hi" ]; then echo "$lo"; else echo "$lo-$hi"; fi
}
# ratio W EXPR: sselog's mean over Mercure's.
ratio() {
	local m s
	m=$(stats "$work/$1.mercure" "$2" | cut -d' ' -f3)
	s=$(stats "$work/$1.sselog" "$2" | cut -d' ' -f3)
	awk -v m="$m" -v s="$s" 'BEGIN { if (m > 0) printf "%.2f\n", s / m; else print "—" }'
}
# flaws FILE: the checks that failed, added up over the rounds, for the
# cell.
flaws() {
	jq -rs '[ (map((.errors // 0) + (.publish_errors // 0) + (.malformed // 0)) | add | select(. > 0) | "\(.) errors"),
		(map(.gaps // 0) | add | select(. > 0) | "\(.) gaps"),
		(map(.duplicates // 0) | add | select(. > 0) | "\(.) duplicates"),
		(map(.missing // 0) | add | select(. > 0) | "\(.) missing") ]
		| if length > 0 then " (in all rounds: " + join(", ") + ")" else "" end' "$1"
}
# cell W EXPR FORMAT UNIT TARGET
cell() { echo "$(range "$work/$1.$5" "$2" "$3") $4$(flaws "$work/$1.$5")"; }
# replayed W TARGET: what the rounds received, "a / b of N".
replayed() {
	jq -rs 'def commas: tostring | if length > 3 then (.[:-3] | commas) + "," + .[-3:] else . end;
		"\(map(.received) | unique | map(commas) | join(" / ")) of \(.[0].events | commas)"
		+ (map(.duplicates) | add | if . > 0 then ", \(.) duplicates" else "" end)
		+ (map(select(.ended == "error")) | if length > 0 then ", \(length) runs ended in an error" else "" end)' "$work/$1.$2"
}
row() { printf '| %s | %s | %s | %s |\n' "$@"; }

echo
echo "| workload | Mercure $MERCURE_VERSION (bolt) | sselog | sselog ÷ Mercure |"
echo "| --- | --- | --- | --- |"
row "publish, 1 publisher, 10 s" "$(cell publish1 .events_per_s commas events/s mercure)" "$(cell publish1 .events_per_s commas events/s sselog)" "$(ratio publish1 .events_per_s)"
row "publish, 32 publishers, 10 s" "$(cell publish32 .events_per_s commas events/s mercure)" "$(cell publish32 .events_per_s commas events/s sselog)" "$(ratio publish32 .events_per_s)"
row "batch publish" "no counterpart (one event per request)" "not run here: see above" "—"
row "fan-out, 1,000 subscribers, 2,000 events asked at 200/s for 10 s (given up on at 15 s): events published" "$(cell fanout '.published / .publish_s' commas events/s mercure)" "$(cell fanout '.published / .publish_s' commas events/s sselog)" "$(ratio fanout '.published / .publish_s')"
row "fan-out: deliveries" "$(cell fanout .deliveries_per_s commas deliveries/s mercure)" "$(cell fanout .deliveries_per_s commas deliveries/s sselog)" "$(ratio fanout .deliveries_per_s)"
row "fan-out: p99 publish-to-receive (lower is better)" "$(range "$work/fanout.mercure" .latency_p99_ms 1) ms" "$(range "$work/fanout.sselog" .latency_p99_ms 1) ms" "$(ratio fanout .latency_p99_ms)"
row "fan-out: server CPU time per delivery (lower is better)" "$(range "$work/fanout.mercure" '.server_cpu_s * 1e6 / .deliveries' 1) µs" "$(range "$work/fanout.sselog" '.server_cpu_s * 1e6 / .deliveries' 1) µs" "$(ratio fanout '.server_cpu_s / .deliveries')"
row "10,000 idle subscribers: resident memory each (lower is better)" "$(range "$work/idle.mercure" '.rss_per_subscriber_bytes / 1024' 1) KB" "$(range "$work/idle.sselog" '.rss_per_subscriber_bytes / 1024' 1) KB" "$(ratio idle .rss_per_subscriber_bytes)"
row "replay of 10,000 events from the first id, resuming when the server ends the stream" "$(cell replay .events_per_s commas events/s mercure)" "$(cell replay .events_per_s commas events/s sselog)" "$(ratio replay .events_per_s)"
row "replayed: from the first id of 20,000, one connection" "$(replayed once mercure)" "$(replayed once sselog)" "—"
row "replayed: the same, the connection dropped every 500 events and resumed" "$(replayed drops mercure)" "$(replayed drops sselog)" "—"
row "replayed: from the first id of 1,000, one connection, after a restart" "$(replayed restart mercure)" "$(replayed restart sselog)" "—"
echo
echo "$ROUNDS rounds; $(date -u +%Y-%m-%d), $(nproc) cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), load at the end: $(cut -d' ' -f1-3 /proc/loadavg); $(($(date +%s) - began)) s in all."

# sselog failing a check is a fault of ours, whatever Mercure did.
bad=$(cat "$work"/*.sselog | jq -s '[.[] | (.errors // 0) + (.publish_errors // 0) + (.gaps // 0) + (.duplicates // 0) + (.missing // 0) + (.malformed // 0)] | add')
if [ "$bad" != 0 ]; then
	say "sselog failed $bad checks: see the table"
	exit 1
fi
