#!/usr/bin/env bash
# The stage table of issue 4: each distillation stage's student exported into a scratch copy of the
# base pack and scored by the project's evaluator (full fixed suites), next to the 100/132-NFE
# baseline and the undistilled 6-step fallback (base denoiser + CFG).
#
#   models/recipes/accel/stage_table.sh runs/unified/unified-27000.ckpt runs/accel models/shapes-mot > runs/accel/stages.jsonl
#
# One JSON line per row: {"row", "suite", "split", "mode", "result"}. SUITE=val scores the validation suites.
set -euo pipefail
usage() {
  cat <<EOF
usage: $0 TARGET.ckpt [OUT] [BASE_PACK] > stages.jsonl   (run from the repository root)
  TARGET.ckpt  the target the students were distilled from
  OUT          pipeline.sh's output folder (default runs/accel; rows for OUT/gen/STAGE/ckpt.pt that exist)
  BASE_PACK    the pack exported from TARGET (default models/shapes-mot); copied to SCRATCH per stage
Environment: ROWS (base six one) SUITE (test|val) LIMIT SCRATCH (default /tmp/hb-stages)
EOF
}
case ${1:-} in -h|--help) usage; exit 0 ;; "") usage >&2; exit 2 ;; -*) echo "$0: unknown option $1" >&2; usage >&2; exit 2 ;; esac
[ $# -le 3 ] || { echo "$0: too many arguments" >&2; usage >&2; exit 2; }
T=$1; OUT=${2:-runs/accel}; BASE=${3:-models/shapes-mot}
A=$(dirname "$0"); SCRATCH=${SCRATCH:-/tmp/hb-stages}
[ -f "$T" ] || { echo "$0: no target checkpoint at '$T'" >&2; exit 2; }
[ -f "$BASE/manifest.json" ] || { echo "$0: no pack at '$BASE' (no manifest.json)" >&2; exit 2; }
[ -d "$OUT" ] || { echo "$0: no pipeline output folder '$OUT'" >&2; exit 2; }
case ${SUITE:-test} in test|val) ;; *) echo "$0: SUITE must be test or val" >&2; exit 2 ;; esac
PY="env OPENBLAS_NUM_THREADS=1 /usr/bin/python3"
HB="node $(dirname "$0")/../../../bin/hyperbagel.js"
LIMIT=${LIMIT:+--limit $LIMIT}
ROWS=${ROWS:-base six one}  # which groups of rows to score
SUITE=${SUITE:-test}  # val to pick stages and variants, test to report them (docs/results.md)

score() { # row pack mode
  for suite in geneval gedit; do
    local j err; err=$(mktemp)
    # the evaluator's stderr is kept: a failed row says why (set -e would otherwise end the table silently)
    if ! j=$($HB eval "$suite" --mode "$3" --suite "$SUITE" --json --pack "$2" ${LIMIT:-} 2>"$err" | tail -1) || [ -z "$j" ]; then
      echo "stage_table.sh: row \"$1\" ($suite, --pack $2): the evaluator failed: $(tail -3 "$err")" >&2
      rm -f "$err"; exit 1
    fi
    rm -f "$err"
    echo "{\"row\":\"$1\",\"suite\":\"$suite\",\"split\":\"$SUITE\",\"mode\":\"$3\",\"result\":$j}"
  done
}

if [[ " $ROWS " == *" base "* ]]; then
  score "baseline (100/132 NFE)" "$BASE" baseline
  score "6-step base denoiser + CFG (no distillation)" "$BASE" 6nfe
  score "1-step base denoiser + CFG (no distillation)" "$BASE" 1nfe
fi
# stage_row STAGE KIND(six|one) MODE LABEL: the stage's student exported into a scratch copy of the pack, scored
stage_row() {
  [ -f "$OUT/gen/$1/ckpt.pt" ] || return 0
  rm -rf "$SCRATCH/$1"; mkdir -p "$SCRATCH"; cp -r "$BASE" "$SCRATCH/$1"
  # a failed export must not score the base pack's graphs under the stage's name
  $PY "$A/export_accel.py" --target "$T" --pack "$SCRATCH/$1" --"$2" "$OUT/gen/$1/ckpt.pt" > "$SCRATCH/$1.export.log" 2>&1 ||
    { echo "$0: export of $1 failed (see $SCRATCH/$1.export.log):" >&2; tail -n 1 "$SCRATCH/$1.export.log" >&2; exit 1; }
  score "$4 after $1" "$SCRATCH/$1" "$3"
}
if [[ " $ROWS " == *" six "* ]]; then for st in cfg tscd dmdo; do stage_row "$st" six 6nfe 6-NFE; done; fi
if [[ " $ROWS " == *" one "* ]]; then for st in adp refl; do stage_row "$st" one 1nfe 1-NFE; done; fi
