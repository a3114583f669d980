#!/usr/bin/env bash
# `make bench`: every benchmark with numbers, one after the other (they
# measure timings, so they must not share the machine with each other).
# Output goes to the terminal and to bench-results/<name>.txt.
#   BENCH=gossip,failover make bench   # only some
#   BENCH=gateway,gateway-rss make bench   # issue 5's table: pgbench direct /
#     gateway / PgBouncer (docs/benchmarks.md), and agent RSS at 500 idle
#     sessions. PGB_BENCH_DURATION, PGB_BENCH_ROUNDS, PGB_BENCH_SCALE and
#     PGB_BENCH_CLIENTS (gateway/bench_test.go) shorten it.
#   BENCH=sessions make bench   # issue 6: sessions through the gateway per
#     fault kind (test/e2e/sessions_test.go); PGBATTERY_BENCH_RUNS=N runs.
set -uo pipefail
cd "$(dirname "$0")/.."
out="$PWD/bench-results"
mkdir -p "$out"
only=${BENCH:-all}
status=0

run() {
	local name=$1
	shift
	if [ "$only" != all ] && [[ ",$only," != *",$name,"* ]]; then
		return
	fi
	echo "==> $name: $*"
	if ! "$@" 2>&1 | tee "$out/$name.txt"; then
		echo "==> $name FAILED" >&2
		status=1
	fi
}

export PGBATTERY_BENCH=1
run pgctl     go test ./pgctl -run '^$' -bench CrashDetection -benchtime 30x
run gossip    go test ./gossip -run '^$' -bench 'Detection|FalseFailed' -benchtime 1x -timeout 30m
run raft      go test ./agent/consensus -run '^$' -bench 'ElectionAfterLeaderKill|SpuriousElections' -benchtime 30x -timeout 30m
run sim       go test ./agent/sim -run '^$' -bench Schedule -benchtime 200x
run gateway   env PGB_BENCH_OUT="$out/gateway-table.md" go test -tags bench ./gateway -run '^TestGatewayBench$' -v -timeout 90m
run gateway-rss env PGB_RSS_OUT="$out/gateway-rss-line.txt" go test ./test/e2e -run '^TestGatewayAgentRSS$' -v -timeout 20m
run forward   go test ./gateway -run '^$' -bench 'Forward' -benchmem
run failover  env PGBATTERY_BENCH_OUT="$out/failover.json" go test ./test/e2e -run TestFailoverBench -v -timeout 60m
run sessions  env PGBATTERY_BENCH_OUT="$out/sessions.json" go test ./test/e2e -run TestSessionBench -v -timeout 90m
exit $status
