#!/usr/bin/env bash
# ab.sh compares the root module's Broker designs at two commits, OLD and
# NEW, on W1-W4, W7 and F1-F3: it builds each commit's test binary, then
# runs them in turn, COUNT rounds of one run each, so that the machine's
# noise falls on both alike, and writes benchstat's comparison to
# $RESULTS/benchstat.txt (raw runs beside it).
#
#   bench/ab.sh ac86d90 HEAD          # COUNT=6 BENCHTIME=200000x CPU=2
#
# BENCHES (space-separated -test.bench patterns) and FLAGS (more flags for
# the test binaries) change what runs, e.g. issue 22's lean W1-W4:
#
#   BENCHES='W[1234]/design=broker-(block|default)$' FLAGS=-lean bench/ab.sh HEAD~1 HEAD
#
# HARNESS=REV builds both with internal/workload as it is at REV, so that
# both report the same metrics (cpu-ns/msg, say).
set -euo pipefail
old=${1:?usage: bench/ab.sh OLD NEW}
new=${2:?usage: bench/ab.sh OLD NEW}
count=${COUNT:-6}
benchtime=${BENCHTIME:-200000x}
cpu=${CPU:-2}
benches=${BENCHES:-'W[12347]/broker F[123]/subs=(1|100)/design=broker'}
flags=${FLAGS:-}
root=$(git rev-parse --show-toplevel)
results=$(mkdir -p "${RESULTS:-$root/bench/results/ab}" && cd "${RESULTS:-$root/bench/results/ab}" && pwd)
benchstat=${BENCHSTAT:-$(go env GOPATH)/bin/benchstat}
tmp=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$tmp/tree" >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
for v in old new; do
	rev=${!v}
	git -C "$root" worktree add --detach "$tmp/tree" "$rev" >/dev/null 2>&1
	if [ -n "${HARNESS:-}" ]; then
		rm -rf "$tmp/tree/internal/workload"
		git -C "$root" archive "$HARNESS" internal/workload | tar -x -C "$tmp/tree"
	fi
	(cd "$tmp/tree" && go test -c -o "$tmp/$v.test" .)
	git -C "$root" worktree remove --force "$tmp/tree"
done
: >"$results/old.txt"
: >"$results/new.txt"
set -f # the patterns are not file names
for _ in $(seq "$count"); do
	for v in old new; do
		for bench in $benches; do
			# shellcheck disable=SC2086 # FLAGS is a list of flags
			"$tmp/$v.test" -test.run '^$' -test.bench "$bench" -test.benchtime "$benchtime" -test.cpu "$cpu" $flags |
				grep '^Benchmark' >>"$results/$v.txt"
		done
	done
done
"$benchstat" old="$results/old.txt" new="$results/new.txt" >"$results/benchstat.txt"
echo "$results/benchstat.txt"
