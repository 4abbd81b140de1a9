#!/usr/bin/env bash
# run.sh runs every benchmark of the sse module (the Broker and the lock-based
# baselines, bench_test.go) and of this module (the peer libraries) through
# the workloads of internal/workload, then writes under results/:
#
#   raw-sse.txt, raw-peers.txt  the raw `go test -bench` output of each module
#   raw.txt                     both, concatenated: the input of what follows
#   benchstat.txt               benchstat: a table per metric and GOMAXPROCS, a row per benchmark
#   by-workload.txt             benchstat: ns/msg and allocs/msg (W6: B/key, stack-B/key), a table per workload (and, F1 to F3, per subscriber count), a row per design
#   isolation.txt               benchstat: W3 against W7 per design, i.e. the slowdown a stalled key causes
#   fanout.txt                  benchstat: F1 against F3 per design and subscriber count, i.e. the slowdown a stalled subscriber causes, with hol-blocked
#   ns-per-msg.svg              chart of the median ns/msg per design and workload, W1 to W7 (cmd/chart)
#   fanout-ns-per-msg.svg       the same for F1 to F3, ns per delivered event, a panel per subscriber count
#   bytes-per-key.svg           chart of W6's B/key (heap per idle key)
#
# Settings, from the environment:
#   COUNT=6  CPU=1,2  BENCHTIME=1000000x  BENCH='W[1-47]'
#   FANOUT_BENCH='F[1-3]'  FANOUT_BENCHTIME=1000000x  FANOUT_CPU=2
#   CHURN_BENCH=W5  CHURN_BENCHTIME=100000x
#   MEMORY_BENCH=W6  MEMORY_COUNT=1  IDLEKEYS=1000000
#   BENCHSTAT=$(go env GOPATH)/bin/benchstat  RESULTS=bench/results
# BENCH selects the timed workloads, FANOUT_BENCH (empty: none) the fan-out
# workloads, MEMORY_BENCH (empty: none) the memory workload, which runs with
# -benchtime 1x, MEMORY_COUNT times (its figures hardly vary). For example:
#   COUNT=5 CPU=2 BENCH='W1|W2|W3|W4' BENCHTIME=200000x MEMORY_BENCH= FANOUT_BENCH= bench/run.sh
#   COUNT=6 CPU=2 BENCH='^$' CHURN_BENCH= MEMORY_BENCH= RESULTS=bench/results/fanout bench/run.sh  # fan-out only
# BENCHTIME is a count so that every design does the same work: 1,000,000
# messages per run, enough for the designs' buffers to reach their steady
# size; FANOUT_BENCHTIME counts deliveries (an event received by one
# subscriber), so that each fan-out run delivers 1,000,000 events whatever
# its subscriber count; W5 (churn) runs CHURN_BENCHTIME keys per run, as its
# slow designs take tens of microseconds a key. A time (1s) works too, but
# W7's and F3's blocked designs then spend a long ramp-up on the half second
# each run of theirs waits. The fan-out workloads run at FANOUT_CPU, not CPU:
# at GOMAXPROCS=1 the lone subscriber of F1 subs=1 of broker-fanout, which
# never holds its producer up, is at times starved for tens of milliseconds,
# falls further behind than the key's default history holds (16 MiB, about
# 180,000 of these events), gets a GapError, and fails the run. At the
# defaults, everything takes about an hour on two cores, of which the
# fan-out workloads take about 15 minutes, most of it watermill's.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
results=$(mkdir -p "${RESULTS:-$here/results}" && cd "${RESULTS:-$here/results}" && pwd)
count=${COUNT:-6}
cpu=${CPU:-1,2}
benchtime=${BENCHTIME:-1000000x}
bench=${BENCH:-W[1-47]}
fanout_bench=${FANOUT_BENCH-F[1-3]}
fanout_benchtime=${FANOUT_BENCHTIME:-1000000x}
fanout_cpu=${FANOUT_CPU:-2}
churn_bench=${CHURN_BENCH-W5}
churn_benchtime=${CHURN_BENCHTIME:-100000x}
memory_bench=${MEMORY_BENCH-W6}
memory_count=${MEMORY_COUNT:-1}
idlekeys=${IDLEKEYS:-1000000}
benchstat=${BENCHSTAT:-$(go env GOPATH)/bin/benchstat}
mkdir -p "$results"

# W6 measures once per call whatever b.N, so it runs in a pass of its own
# with -benchtime 1x; the fan-out workloads run at $FANOUT_BENCHTIME, W5 at
# $CHURN_BENCHTIME, the others at $BENCHTIME.
timed=(-run '^$' -bench "$bench" -count "$count" -cpu "$cpu" -benchtime "$benchtime" -timeout 0)
fanout=(-run '^$' -bench "$fanout_bench" -count 1 -cpu "$fanout_cpu" -benchtime "$fanout_benchtime" -timeout 0)
churn=(-run '^$' -bench "$churn_bench" -count "$count" -cpu "$cpu" -benchtime "$churn_benchtime" -timeout 0)
memory=(-run '^$' -bench "$memory_bench" -count "$memory_count" -cpu "$cpu" -benchtime 1x -timeout 0)

for module in sse peers; do
	if [[ $module == sse ]]; then
		dir=$here/.. what="the Broker and the baselines"
	else
		dir=$here what="the peer libraries"
	fi
	echo "== $module module: $what" >&2
	{
		(cd "$dir" && go test "${timed[@]}" .)
		if [[ -n $fanout_bench ]]; then
			# COUNT passes of -count 1, so that the runs of every design and
			# workload interleave in time: a drift in the machine's speed
			# then does not bias their ratios (F3 against F1 above all), as
			# it does when -count runs one benchmark's samples back to back.
			for ((i = 0; i < count; i++)); do
				(cd "$dir" && go test "${fanout[@]}" .)
			done
		fi
		if [[ -n $churn_bench ]]; then
			(cd "$dir" && go test "${churn[@]}" .)
		fi
		if [[ -n $memory_bench ]]; then
			(cd "$dir" && go test "${memory[@]}" . -idlekeys="$idlekeys")
		fi
	} | tee "$results/raw-$module.txt"
done
cat "$results/raw-sse.txt" "$results/raw-peers.txt" > "$results/raw.txt"

# The two modules' results differ in their pkg line only: -ignore pkg puts
# them into the same tables.
cd "$results"
"$benchstat" -ignore pkg -table .config,/gomaxprocs raw.txt > benchstat.txt
{
	"$benchstat" -ignore pkg -table .config,/gomaxprocs,.name -row /design \
		-filter '.name:/^W/ .unit:(ns/msg OR allocs/msg OR B/key OR stack-B/key)' raw.txt
	if grep -q '^BenchmarkF' raw.txt; then
		echo
		"$benchstat" -ignore pkg -table .config,/gomaxprocs,.name,/subs -row /design \
			-filter '.name:/^F/ .unit:(ns/msg OR allocs/msg)' raw.txt
	fi
} > by-workload.txt
"$benchstat" -ignore pkg -table .config,/gomaxprocs -row /design -col .name \
	-filter '.name:(W3 OR W7) .unit:(ns/msg OR allocs/msg OR hol-blocked)' raw.txt > isolation.txt
if grep -q '^BenchmarkF[13]/' raw.txt; then
	"$benchstat" -ignore pkg -table .config,/gomaxprocs,/subs -row /design -col .name \
		-filter '.name:(F1 OR F3) .unit:(ns/msg OR allocs/msg OR hol-blocked)' raw.txt > fanout.txt
fi

if grep -q '^BenchmarkW.* ns/msg' "$results/raw.txt"; then
	grep '^BenchmarkW' "$results/raw.txt" |
		(cd "$here" && go run ./cmd/chart -metric ns/msg -o "$results/ns-per-msg.svg")
fi
if grep -q '^BenchmarkF' "$results/raw.txt"; then
	grep '^BenchmarkF' "$results/raw.txt" |
		(cd "$here" && go run ./cmd/chart -metric ns/msg -title 'F1 to F3: ns per delivered event, median of runs (lower is better)' -o "$results/fanout-ns-per-msg.svg")
fi
if grep -q ' B/key' "$results/raw.txt" && grep -q '^BenchmarkW6' "$results/raw.txt"; then
	grep '^BenchmarkW6' "$results/raw.txt" |
		(cd "$here" && go run ./cmd/chart -metric B/key -title 'W6: heap bytes per open idle key, median of runs' -o "$results/bytes-per-key.svg")
fi
echo "== results in $results" >&2
