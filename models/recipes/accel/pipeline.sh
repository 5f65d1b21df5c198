#!/usr/bin/env bash
# The acceleration pipeline on one finished target, as two one-core lanes that run side by side:
#   lane draft: draft data (train + test) -> the four draft variants -> Table-1 eval
#   lane gen:   CFG distillation -> TSCD -> DMDO (6-NFE) -> reward model -> ADP -> ReFL (1-NFE)
# Every stage is resumable (re-running the script skips finished stages and resumes unfinished ones),
# so the script itself can be re-run after an interruption.
#
#   nohup models/recipes/accel/pipeline.sh runs/unified/unified.ckpt runs/accel > runs/accel.log 2>&1 &
#
# Step counts come from the environment (defaults below); both lanes log to OUT/<lane>.log.
set -euo pipefail
usage() {
  cat <<EOF
usage: $0 TARGET.ckpt [OUT]   (run from the repository root: reads data/train and data/val)
  TARGET.ckpt  a finished train_unified checkpoint (tokenizer.json next to it)
  OUT          output folder (default runs/accel): OUT/draft, OUT/gen, OUT/<lane>.log, OUT/.done-<stage>
Step counts and options come from the environment: DRAFT_IMAGES DRAFT_TEST_IMAGES DRAFT_STEPS DRAFT_VARIANTS
CFG_STEPS TSCD_STEPS DMDO_STEPS REWARD_STEPS ADP_STEPS REFL_STEPS REFL_MSE SIX_FINAL(dmdo|tscd) ADP_INIT GEN_LIMIT
IMAGE_OFFSET (DX,DY: the draft's data reads images as a pack with vision.understand_offset DX,DY does;
  default: the offset the target checkpoint records, as import_pack.py writes it, else none)
EOF
}
case ${1:-} in -h|--help) usage; exit 0 ;; "") usage >&2; exit 2 ;; -*) echo "$0: unknown option $1" >&2; usage >&2; exit 2 ;; esac
[ $# -le 2 ] || { echo "$0: too many arguments" >&2; usage >&2; exit 2; }
T=$1; OUT=${2:-runs/accel}
A=$(dirname "$0")
# check the inputs before creating folders or starting either lane
[ -f "$T" ] || { echo "$0: no target checkpoint at '$T'" >&2; exit 2; }
[ -f "$(dirname "$T")/tokenizer.json" ] || { echo "$0: no tokenizer.json next to '$T'" >&2; exit 2; }
for d in data/train data/val; do
  [ -f "$d/records.jsonl" ] || { echo "$0: no dataset at ./$d (run from the repository root)" >&2; exit 2; }
done
case $OUT in -*) echo "$0: OUT '$OUT' looks like an option" >&2; exit 2 ;; esac
PY="env OPENBLAS_NUM_THREADS=1 /usr/bin/python3"
DRAFT_IMAGES=${DRAFT_IMAGES:-8000}; DRAFT_TEST_IMAGES=${DRAFT_TEST_IMAGES:-500}
DRAFT_STEPS=${DRAFT_STEPS:-2000}; DRAFT_VARIANTS=${DRAFT_VARIANTS:-full eagle3 noinit noce}
# the pack's vision.understand_offset, when it declares one: the draft learns the features of the images as they are read
IMAGE_OFFSET=${IMAGE_OFFSET:-}
[ -z "$IMAGE_OFFSET" ] || [[ $IMAGE_OFFSET =~ ^-?[0-9]+,-?[0-9]+$ ]] || { echo "$0: IMAGE_OFFSET must be DX,DY (two integers), not '$IMAGE_OFFSET'" >&2; exit 2; }
# (the = form: argparse would read a value that starts with "-" as an option)
DRAFT_OFFSET=(); [ -z "$IMAGE_OFFSET" ] || DRAFT_OFFSET=("--image-offset=$IMAGE_OFFSET")
# DMDO 4500: resuming DMDO raised the scores on release 3 (1500 -> 3000: GEdit 0.722 -> 0.741, GenEval 0.390
# both) and release 4 (3000 -> 4500: GenEval 0.473 -> 0.503, GEdit 0.810 -> 0.817); 6000 was no better (0.483 / 0.808)
CFG_STEPS=${CFG_STEPS:-2500}; TSCD_STEPS=${TSCD_STEPS:-1500}; DMDO_STEPS=${DMDO_STEPS:-4500}
# ADP 14000: the 1-NFE scores still rose from 800 to 2400 to 4000 steps (release 2), 4000 to 6000 (release 3),
# and on release 5 6000 -> 10000 -> 14000 (after ReFL, val GenEval / GEdit 0.347 / 0.774 -> 0.420 / 0.784 ->
# 0.410 / 0.832; docs/results.md). ≈ 0.3-0.45 s per step on one core.
REWARD_STEPS=${REWARD_STEPS:-800}; ADP_STEPS=${ADP_STEPS:-14000}; REFL_STEPS=${REFL_STEPS:-300}
# ReFL's regression to the 6-NFE output, 2.5x the ADP weight: with 1.0 ReFL cost editing (release 4: GEdit
# 0.713 after ADP -> 0.662); 2.5 gave 0.413 / 0.720, 5 gave 0.370 / 0.742, 10 gave 0.353 / 0.750
REFL_MSE=${REFL_MSE:-2.5}
# the 6-NFE stage the 1-NFE stages start from and regress to: dmdo (the paper's order) or tscd (skips
# DMDO, which lowered the scores on release 1; docs/results.md stage table)
SIX_FINAL=${SIX_FINAL:-dmdo}
# ADP_INIT=ckpt.pt starts the 1-NFE student from an earlier target's ADP (or ReFL) student instead of this
# target's 6-NFE one; the ODE pairs and the ReFL regression still come from this target's 6-NFE student.
# ADP needs ~14k steps from the 6-NFE init; a warm start from a related target needs fewer (release 6 tried 4,000; docs/results.md).
ADP_INIT=${ADP_INIT:-}
[ -z "$ADP_INIT" ] || [ -f "$ADP_INIT" ] || { echo "$0: ADP_INIT: no checkpoint at '$ADP_INIT'" >&2; exit 2; }
case $SIX_FINAL in dmdo|tscd) ;; *) echo "$0: SIX_FINAL must be dmdo or tscd, not '$SIX_FINAL'" >&2; exit 2 ;; esac
# the generation stages load this many training scenes (loading all 40k costs ~80 s per stage)
GEN_LIMIT=${GEN_LIMIT:-10000}
mkdir -p "$OUT/draft" "$OUT/gen"

# Runs a stage unless its marker says it already finished (delete OUT/.done-NAME to rerun or extend it).
stage() { local name=$1; shift; local mark="$OUT/.done-$name"
  if [ -f "$mark" ]; then echo "[$(date -u +%T)] skip $name (done)"; return; fi
  echo "[$(date -u +%T)] start $name"; "$@"; touch "$mark"; echo "[$(date -u +%T)] done $name"; }

lane_draft() {
  stage data-train $PY "$A/draft_data.py" --target "$T" --data data/train --out "$OUT/draft/data_train.jsonl" --count "$DRAFT_IMAGES" "${DRAFT_OFFSET[@]}"
  stage data-test $PY "$A/draft_data.py" --target "$T" --data data/val --out "$OUT/draft/data_test.jsonl" --count "$DRAFT_TEST_IMAGES" "${DRAFT_OFFSET[@]}"
  local runs=()
  for v in $DRAFT_VARIANTS; do
    stage "draft-$v" $PY "$A/train_draft.py" --target "$T" --train "$OUT/draft/data_train.jsonl" --run "$OUT/draft/$v" \
      --variant "$v" --steps "$DRAFT_STEPS"
    runs+=("$OUT/draft/$v")
  done
  stage draft-eval $PY "$A/eval_draft.py" --target "$T" --test "$OUT/draft/data_test.jsonl" \
    --drafts "$(IFS=,; echo "${runs[*]}")" --out "$OUT/draft/eval.json"
}

lane_gen() {
  local G=$OUT/gen
  stage cfg $PY "$A/train_gen.py" --stage cfg --target "$T" --data data/train --limit "$GEN_LIMIT" --run "$G/cfg" --steps "$CFG_STEPS"
  stage tscd $PY "$A/train_gen.py" --stage tscd --target "$T" --data data/train --limit "$GEN_LIMIT" --run "$G/tscd" --init "$G/cfg/ckpt.pt" --steps "$TSCD_STEPS"
  [ "$SIX_FINAL" = tscd ] ||
    stage dmdo $PY "$A/train_gen.py" --stage dmdo --target "$T" --data data/train --limit "$GEN_LIMIT" --run "$G/dmdo" --init "$G/tscd/ckpt.pt" --steps "$DMDO_STEPS"
  stage reward $PY "$A/train_reward.py" --target "$T" --data data/train --limit "$GEN_LIMIT" --run "$G/reward" --steps "$REWARD_STEPS"
  stage adp $PY "$A/train_gen.py" --stage adp --target "$T" --data data/train --limit "$GEN_LIMIT" --run "$G/adp" --init "${ADP_INIT:-$G/$SIX_FINAL/ckpt.pt}" \
    --teacher6 "$G/$SIX_FINAL/ckpt.pt" --steps "$ADP_STEPS"
  stage refl $PY "$A/train_gen.py" --stage refl --target "$T" --data data/train --limit "$GEN_LIMIT" --run "$G/refl" --init "$G/adp/ckpt.pt" \
    --teacher6 "$G/$SIX_FINAL/ckpt.pt" --reward "$G/reward/reward.pt" --steps "$REFL_STEPS" --mse-weight "$REFL_MSE"
}

lane_draft > "$OUT/draft.log" 2>&1 & d=$!
lane_gen > "$OUT/gen.log" 2>&1 & g=$!
rc=0; failed=()
# the stage a lane was in: its log's last "start NAME" (none if it died before its first stage)
last_stage() { { grep -o 'start [a-z0-9-]*' "$1" || true; } | tail -1 | cut -d' ' -f2; }
wait $d || { rc=1; failed+=("draft lane: $(last_stage "$OUT/draft.log") (see $OUT/draft.log)"); }
wait $g || { rc=1; failed+=("generator lane: $(last_stage "$OUT/gen.log") (see $OUT/gen.log)"); }
if [ $rc -ne 0 ]; then
  echo "[$(date -u +%T)] pipeline failed in: ${failed[*]}; rerun to resume after fixing it" >&2
else
  echo "[$(date -u +%T)] pipeline finished; export with export_accel.py --draft $OUT/draft/full --six $OUT/gen/$SIX_FINAL/ckpt.pt --one $OUT/gen/refl/ckpt.pt"
fi
exit $rc
