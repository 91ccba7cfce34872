#!/usr/bin/env bash
# make demo: the nightly example DAG, run by `airflow dags test` against the local AtScale emulator.
# Everything happens in a throwaway AIRFLOW_HOME (SQLite) and on 127.0.0.1; the emulator is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d -t atscale-demo-XXXXXX)
emulator_pid=""
cleanup() {
    if [ -n "$emulator_pid" ]; then
        kill "$emulator_pid" 2>/dev/null || true
        wait "$emulator_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

export AIRFLOW_HOME="$work/airflow"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER="$PWD/example_dags"
# The example DAG polls every 60 s; the demo's builds take seconds, so it polls every 2 s.
export ATSCALE_EXAMPLE_POLL_INTERVAL=2

python -m airflow_provider_atscale.emulator --port 0 --queue-seconds 1 --build-seconds 3 >"$work/emulator.log" 2>&1 &
emulator_pid=$!
# The emulator prints its URL, then its token, one write each: either line may be missing or half written
# when the log is read. Ready means both were read and a request with them is answered.
ready=""
for _ in $(seq 1 100); do
    kill -0 "$emulator_pid" 2>/dev/null || { cat "$work/emulator.log"; exit 1; }
    url=$(sed -n 's/^AtScale emulator listening on \(http[^ ]*\)$/\1/p' "$work/emulator.log")
    token=$(sed -n 's/^Demo API token: //p' "$work/emulator.log")
    if [ -n "$url" ] && [ -n "$token" ] && python - "$url" "$token" 2>/dev/null <<'PY'
import sys
import urllib.request

url, token = sys.argv[1:]
request = urllib.request.Request(f"{url}/v1/catalogs", headers={"Authorization": f"Bearer {token}"})
urllib.request.urlopen(request, timeout=5).close()
PY
    then
        ready=1
        break
    fi
    sleep 0.1
done
[ -n "$ready" ] || { echo "The emulator did not start:"; cat "$work/emulator.log"; exit 1; }
echo "AtScale emulator: $url"
export AIRFLOW_CONN_ATSCALE_DEFAULT="{\"conn_type\": \"atscale\", \"host\": \"$url\", \"password\": \"$token\"}"
# The URL the example's model asset names (its events go to the dashboard DAG scheduled on it).
export ATSCALE_URL="$url"

airflow db migrate >"$work/db.log" 2>&1 || { cat "$work/db.log"; exit 1; }
echo "Running: airflow dags test atscale_nightly_incremental_build"
if ! airflow dags test atscale_nightly_incremental_build >"$work/dags-test.log" 2>&1; then
    tail -n 60 "$work/dags-test.log"
    exit 1
fi
grep -E "Started incremental AtScale build|AtScale batch .* (is|finished)" "$work/dags-test.log" | sed 's/^/  /' || true

python - <<'PY'
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session

with create_session() as session:
    rows = (
        session.query(XComModel)
        .filter(XComModel.dag_id == "atscale_nightly_incremental_build", XComModel.task_id == "incremental_build")
        .all()
    )
    pushed = {row.key: XComModel.deserialize_value(row) for row in rows}
missing = {"batch_id", "batch_status"} - pushed.keys()
if missing:
    raise SystemExit(f"The task pushed no {', '.join(sorted(missing))}")
print(f"XCom batch_id:     {pushed['batch_id']}")
print(f"XCom batch_status: {pushed['batch_status']}")
if pushed["batch_status"] != "done":
    raise SystemExit("The build did not finish as done")
PY
echo "Demo finished."
