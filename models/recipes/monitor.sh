#!/usr/bin/env bash
# Every INTERVAL seconds: export the latest unified checkpoint (EMA) to a scratch pack and score it with the
# project's evaluator (small --limit), appending one JSON line per eval to RUN/evals.jsonl.
#   nohup models/recipes/monitor.sh runs/unified 600 > runs/unified/monitor.log 2>&1 &
set -u
RUN=${1:-runs/unified}; INTERVAL=${2:-600}; SNAP=${SNAP:-/tmp/hb-snap}
if [ ! -f data/val/records.jsonl ]; then
  echo "monitor.sh: data/val is missing; make it first: npx hyperbagel dataset --split val --count 1000 --out data/val" >&2
  exit 2
fi
last=""
while true; do
  step=$(/usr/bin/python3 -c "import torch,sys; print(torch.load('$RUN/unified.ckpt',map_location='cpu')['step'])" 2>/dev/null)
  if [ -n "$step" ] && [ "$step" != "$last" ]; then
    if ! OPENBLAS_NUM_THREADS=1 /usr/bin/python3 models/recipes/export_pack.py --ckpt "$RUN/unified.ckpt" --data data/val --out "$SNAP" > "$SNAP.log" 2>&1; then
      echo "monitor.sh: export of step $step failed (see $SNAP.log); not scored" >&2
      last=$step; sleep "$INTERVAL"; continue
    fi
    u=$(npx hyperbagel eval understand --json --pack "$SNAP" --limit 40 2>/dev/null | tail -1)
    g=$(npx hyperbagel eval geneval --mode baseline --json --pack "$SNAP" --limit 6 2>/dev/null | tail -1)
    e=$(npx hyperbagel eval gedit --mode baseline --json --pack "$SNAP" --limit 4 2>/dev/null | tail -1)
    echo "{\"step\":$step,\"time\":\"$(date -u +%H:%M:%S)\",\"understand\":$u,\"geneval\":$g,\"gedit\":$e}" >> "$RUN/evals.jsonl"
    last=$step
  fi
  sleep "$INTERVAL"
done
