# Sourced by .ci/run: starts a throwaway PostgreSQL cluster for the tests
# that need one and exports THONSYNC_TEST_POSTGRES; an EXIT trap stops it and
# removes its folder whatever happens. Without PostgreSQL installed it says
# so, and those tests skip.

start_test_postgres() {
  local pgbin
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ] || [ ! -x "$pgbin/pg_ctl" ]; then
    echo "PostgreSQL is not installed: the PostgreSQL tests will say they were skipped"
    return 0
  fi
  if ! id postgres >/dev/null 2>&1; then
    echo "there is no postgres user: the PostgreSQL tests will say they were skipped"
    return 0
  fi
  PG_TMP=$(mktemp -d)
  trap stop_test_postgres EXIT
  chown postgres "$PG_TMP"
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  runuser -u postgres -- "$pgbin/initdb" -D "$PG_TMP/data" -A trust -U postgres --no-sync >"$PG_TMP/initdb.log" 2>&1 \
    || { cat "$PG_TMP/initdb.log" >&2; return 1; }
  PG_CTL="$pgbin/pg_ctl"
  runuser -u postgres -- "$PG_CTL" -D "$PG_TMP/data" \
    -o "-p $port -k $PG_TMP -c listen_addresses=127.0.0.1 -c fsync=off" -l "$PG_TMP/log" -w start >/dev/null \
    || { cat "$PG_TMP/log" >&2; return 1; }
  export THONSYNC_TEST_POSTGRES="postgres://postgres@127.0.0.1:$port/postgres"
  echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') for the tests on 127.0.0.1:$port"
}

stop_test_postgres() {
  if [ -n "${PG_TMP:-}" ]; then
    if [ -n "${PG_CTL:-}" ] && [ -f "$PG_TMP/data/postmaster.pid" ]; then
      runuser -u postgres -- "$PG_CTL" -D "$PG_TMP/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$PG_TMP"
  fi
}
