#!/usr/bin/env bash
# The whole feedrec story on embedded defaults (no servers: in-process cache, MLflow in ./mlflow.db,
# events in ./events/demo): generate data, train MF and GNN, compare them offline, serve both
# (exported to ONNX at load), drive A/B traffic at it from the ground-truth simulator, write the report.
#   make demo                       # this script
#   DEMO_KEEP_SERVING=1 make demo   # leave the service running at the end (or: make serve)
#   DEMO_FROM=5 make demo           # resume at step 5 (models already trained and registered)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DEMO_DATA:-data/small}
PORT=${DEMO_PORT:-8000}
EVENTS=${DEMO_EVENTS:-events/demo}
URL="http://127.0.0.1:${PORT}"
FROM=${DEMO_FROM:-1}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
todo() { [ "$1" -ge "$FROM" ]; }

step "1/7 synthetic social network ($DATA)"
if [ -f "$DATA/manifest.json" ] || ! todo 1; then
  $PY -m data_gen summary "$DATA"
else
  $PY -m data_gen --preset small --seed 7 --out "$DATA"
fi

step "2/7 matrix factorisation baseline (implicit ALS) -> mf@champion"
todo 2 && $PY -m training.train_mf --config configs/train/mf_small.yaml --set data.source="$DATA" --alias champion

step "3/7 GNN (LightGCN over recency-weighted engagements + follows) -> gnn@champion"
todo 3 && $PY training/train_gnn.py --config configs/train/gnn_small.yaml --set data.source="$DATA" \
  --max-minutes "${DEMO_GNN_MINUTES:-8}" --alias champion

step "4/7 offline comparison (test window, cold-user slice, oracle fraction)"
todo 4 && $PY -m training.evaluate --dataset "$DATA" --models gnn@champion,mf@champion,popular

step "5/7 start the service on $URL: it exports each registry model to ONNX (parity-checked) and routes users by configs/experiments/gnn-vs-mf.yaml"
rm -rf "$EVENTS"; mkdir -p "$(dirname "$EVENTS")"
# Served under the registry refs the experiment arms name (configs/experiments/gnn-vs-mf.yaml).
export FEEDREC_MODELS="gnn=gnn@champion,mf=mf@champion" FEEDREC_DEFAULT_MODEL=mf
export FEEDREC_EXPERIMENTS_DIR=configs/experiments FEEDREC_EVENTS_DIR="$EVENTS"
export FEEDREC_DATA_DIR="$DATA" FEEDREC_ALLOW_SIM_TIME=true
$PY -m serving --port "$PORT" --log-level warning > "${EVENTS%/*}/demo-service.log" 2>&1 &
SERVER=$!
if [ -z "${DEMO_KEEP_SERVING:-}" ]; then trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT; fi
for _ in $(seq 1 300); do
  curl -fsS "$URL/readyz" >/dev/null 2>&1 && break
  kill -0 $SERVER 2>/dev/null || { echo "service exited; see ${EVENTS%/*}/demo-service.log"; exit 1; }
  sleep 1
done

step "6/7 closed-loop A/B traffic from the ground-truth user simulator"
$PY -m abtest simulate --url "$URL" --data "$DATA" --events "$EVENTS" --experiment gnn-vs-mf \
  --days "${DEMO_DAYS:-7}" --max-requests "${DEMO_REQUESTS:-3000}" --out reports/

step "7/7 A/B report"
$PY -m abtest report --experiment gnn-vs-mf --events "$EVENTS" --metrics-url "$URL/metrics" --out reports/
# After the report, so this wall-clock request is not mixed into the simulated days.
step "the service answers"
USER_ID=$($PY -c "import pyarrow.parquet as pq; print(pq.read_table('$DATA/users.parquet', columns=['user_id']).column(0)[0].as_py())")
echo "\$ curl $URL/recommend/$USER_ID?k=5"
curl -fsS "$URL/recommend/$USER_ID?k=5"; echo
echo "HTML report: $PWD/reports/gnn-vs-mf.html"
if [ -n "${DEMO_KEEP_SERVING:-}" ]; then
  echo "service still running on $URL (pid $SERVER)"
fi
