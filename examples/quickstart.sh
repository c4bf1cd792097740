#!/usr/bin/env bash
# Set up, build the bundled food-kitchen example, start the gRPC service and answer sample
# queries. The service stays up afterwards; its pid is in xemb-data/serve.pid.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
CFG=examples/food-kitchen/xemb.yaml
XEMB=.venv/bin/xemb
PORT="${XEMB_PORT:-50051}"

echo "== build (first run: encodes 36k titles and trains; later runs reuse the cache)"
$XEMB build -c "$CFG"

if [ -f xemb-data/serve.pid ] && kill -0 "$(cat xemb-data/serve.pid)" 2>/dev/null; then
  kill "$(cat xemb-data/serve.pid)"; sleep 2
fi
echo "== serve on 127.0.0.1:$PORT (log: xemb-data/serve.log)"
nohup $XEMB serve -c "$CFG" --port "$PORT" > xemb-data/serve.log 2>&1 &
echo $! > xemb-data/serve.pid
Q="$XEMB query -c $CFG --target 127.0.0.1:$PORT"
for _ in $(seq 1 120); do
  if $Q health >/dev/null 2>&1; then break; fi
  sleep 0.5
done
$Q health

# a held-out test user: grocery and kitchen history, next item unknown to the service
HIST=$(.venv/bin/python - <<'PY'
import pyarrow.parquet as pq
t = pq.read_table("examples/food-kitchen/sequences.parquet").to_pylist()
row = next(r for r in t if r["split"] == "test")
print(",".join(str(i) for i in row["item_ids"][:-1][-20:]))
PY
)
echo "== ComposeUserIntent: a test user's last 20 items -> kitchen intent"
$Q compose --domain kitchen --history "$HIST"
echo "== Retrieve: top 5 kitchen items for that history"
RET=$($Q retrieve --domain kitchen -k 5 --history "$HIST")
echo "$RET"
echo "== the same, as titles"
HIST="$HIST" RET="$RET" .venv/bin/python - <<'PY'
import html, json, os
import pyarrow.parquet as pq
items = pq.read_table("examples/food-kitchen/items.parquet", columns=["item_id", "domain", "title"])
title = {r["item_id"]: (r["domain"], html.unescape(r["title"])[:80]) for r in items.to_pylist()}
hist = [int(i) for i in os.environ["HIST"].split(",")]
print("last 5 items of the history:")
for i in hist[-5:]:
    print(f"  {i:>6}  [{title[i][0]}] {title[i][1]}")
print("retrieved for kitchen:")
ret = json.loads(os.environ["RET"])
for i, s in zip(ret["item_ids"], ret["scores"]):
    print(f"  {i:>6}  {s:6.3f}  {title[i][1]}")
PY
echo "== EncodeItems: a brand-new item (cold start, ONNX only)"
$Q encode --domain kitchen "Enameled cast iron dutch oven, 6 quart"
echo "== service is up: pid $(cat xemb-data/serve.pid), port $PORT; stop it with: kill \$(cat xemb-data/serve.pid)"
