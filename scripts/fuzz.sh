#!/usr/bin/env bash
# Runs every fuzz target for the given time each (default 60s):
#   scripts/fuzz.sh 5s      # the short run `make test` does
#   FUZZTIME=10m make fuzz  # a longer campaign
# go test -fuzz takes one target at a time, hence the loop. New targets are
# found by name, so adding a Fuzz function is enough.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-60s}
mapfile -t targets < <(grep -rl --include='*_test.go' '^func Fuzz' . | sort)
for file in "${targets[@]}"; do
	pkg=./$(dirname "${file#./}")
	for fn in $(grep -o '^func Fuzz[A-Za-z0-9_]*' "$file" | sed 's/^func //'); do
		echo "==> fuzzing $pkg $fn for $fuzztime"
		go test "$pkg" -run '^$' -fuzz "^${fn}\$" -fuzztime "$fuzztime"
	done
done
