#!/usr/bin/env bash
# Installs the packages pgbattery's tests use on Debian/Ubuntu, when missing.
# Run as root (CI does); as an ordinary user it prints the command to run and
# the tests that need a missing package skip with a message naming it.
set -euo pipefail

need=()
# PostgreSQL server binaries: any supported major found under /usr/lib/postgresql will do.
if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && ! command -v pg_config >/dev/null 2>&1; then
	need+=(postgresql)
fi
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || need+=(nftables)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || need+=(iproute2)
command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
/usr/bin/python3 -c 'import psycopg2' >/dev/null 2>&1 || need+=(python3-psycopg2)
[ -f /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
command -v javac >/dev/null 2>&1 || need+=(default-jdk-headless)
# Headless Chromium for the web UI's browser tests (agent/ui, test/e2e TestUI*).
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: missing ${need[*]}; install them with your package manager (tests that need them will skip)" >&2
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "deps: missing ${need[*]}; run: sudo apt-get install -y ${need[*]} (tests that need them will skip)" >&2
	exit 0
fi
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's postgresql package starts a cluster on 127.0.0.1:5432; the tests never
# use 127.0.0.1, so it may stay, but pgbouncer's own service is not wanted.
systemctl disable --now pgbouncer >/dev/null 2>&1 || true
