#!/usr/bin/env bash
# scripts/pg_ctl.sh stop|start|restart — the local PostgreSQL cluster on $PGPORT (default 5432),
# in fast mode: every connection is cut, as in a real outage. Used by the fault tests; handy
# for trying the orchestrator's reconnection by hand.
set -euo pipefail
action="${1:-restart}"
[[ "$action" =~ ^(stop|start|restart)$ ]] || { echo "usage: $0 stop|start|restart" >&2; exit 2; }
PGPORT="${PGPORT:-5432}"
line="$(pg_lsclusters -h | awk -v port="$PGPORT" '$3 == port { print; exit }')"
[[ -n "$line" ]] || { echo "[pg] no cluster on port $PGPORT" >&2; exit 1; }
read -r version name _ <<<"$line"
echo "[pg] $action cluster $version/$name on port $PGPORT" >&2
if [[ "$action" == stop ]]; then
    pg_ctlcluster "$version" "$name" stop -m fast
    exit 0
fi
if [[ "$action" == restart ]]; then
    pg_ctlcluster "$version" "$name" restart -m fast
else
    pg_ctlcluster "$version" "$name" start
fi
for _ in $(seq 1 120); do
    if pg_isready -q -h 127.0.0.1 -p "$PGPORT"; then exit 0; fi
    sleep 0.25
done
echo "[pg] the cluster did not come back within 30s" >&2
exit 1
