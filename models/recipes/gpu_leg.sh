#!/usr/bin/env bash
# A training leg of the unified model on a borrowed GPU machine, for a fixed wall-clock budget.
# Serving never needs a GPU; this only makes a leg faster (release 4: 51.8k -> 62.2k steps at 4x batch,
# 1.9 M sequences, in ~11 min on one H200; the 2-core CPU does ~0.3 s/step at 1x batch, ~1.1 s at 4x,
# so the same sequences would take ~3-4 h there).
#
#   pack (here):  models/recipes/gpu_leg.sh pack runs/unified/unified.ckpt gpu
#                 writes gpu/: the three training sets as one zstd tarball (1.9 GB -> 15 MB: the renders are
#                 flat colours), the checkpoint's EMA weights + step (lite.ckpt, no optimizer state),
#                 the VAE, the tokenizer and a zstd binary with its libraries (the GPU image has none)
#   train (there, from the repo root, with gpu/ carried):
#                 BUDGET=540 OUT=/some/dir models/recipes/gpu_leg.sh train gpu
#                 calibrates the step time, then trains --steps S0+N with the last 40% as cool-down and
#                 writes OUT/unified.ckpt.partNN (join with cat), loss.csv and the logs
# The leg starts from EMA weights with a fresh AdamW re-warmed over 300 steps (train_unified --init-weights).
# EXTRA="..." adds train_unified options to both runs, e.g. EXTRA="--shift-aug 3" (docs/results.md, held-out).
# MIX="..." replaces the batch mix (default: the 4x full mix); LEG_TMP=/tmp/NAME keeps two legs that share one
# machine apart (the data is unpacked once, into /tmp/d, by whichever starts first), e.g. a generation-only
# leg beside a full one: MIX="--und 0 --think 0 --t2i 56 --edit 40" EXTRA="--train-only generation ...".
set -uo pipefail
cmd=${1:?pack|train}
case $cmd in
pack)
  # stops at the first failing step with a non-zero status (the train leg below handles its own errors)
  set -e
  die() { echo "$0 pack: $*" >&2; exit 1; }
  CKPT=${2:?checkpoint}; DIR=${3:-gpu}; VAE=${VAE:-runs/vae/vae_final.ckpt}
  # every input is checked before anything is written
  [ -f "$CKPT" ] || die "no checkpoint at '$CKPT'"
  [ -f "$(dirname "$CKPT")/tokenizer.json" ] || die "no tokenizer.json next to '$CKPT'"
  # the VAE whose encoder made the cached latents: runs/vae/vae_final.ckpt, or import_pack.py's OUT/vae.ckpt
  [ -f "$VAE" ] || die "no VAE checkpoint at '$VAE' (set VAE=...)"
  for d in train1 train2 train; do [ -d "data/$d" ] || die "no data/$d (run from the repository root)"; done
  [ -x /usr/bin/zstd ] || die "no /usr/bin/zstd"
  for l in libzstd.so.1 liblzma.so.5 liblz4.so.1; do [ -e "/lib/x86_64-linux-gnu/$l" ] || die "no /lib/x86_64-linux-gnu/$l"; done
  mkdir -p "$DIR/bin" "$DIR/lib"
  # the lite checkpoint first: it also checks that CKPT is a unified checkpoint
  PYTHONPATH="$(dirname "$0")" /usr/bin/python3 - "$CKPT" "$DIR/lite.ckpt" <<'PY'
import sys
from hyperbagel.utils import require_ckpt, lite_ckpt, save_ckpt
ck = require_ckpt(sys.argv[1], "gpu_leg.sh pack CKPT", ("ema", "step", "config"))
if "lm_head.weight" not in ck["ema"]:
    raise SystemExit(f"gpu_leg.sh pack CKPT: {sys.argv[1]!r} is not a unified-model (train_unified) checkpoint")
save_ckpt(sys.argv[2], lite_ckpt(ck))
print("lite checkpoint at step", ck["step"])
PY
  (cd data && tar -cf - train1 train2 train) | zstd -12 -T2 --long=27 -q -f -o "$DIR/data.tar.zst.tmp"
  mv -f "$DIR/data.tar.zst.tmp" "$DIR/data.tar.zst"
  cp /usr/bin/zstd "$DIR/bin/"; for l in libzstd.so.1 liblzma.so.5 liblz4.so.1; do cp -L "/lib/x86_64-linux-gnu/$l" "$DIR/lib/"; done
  cp "$VAE" "$DIR/vae_final.ckpt"; cp "$(dirname "$CKPT")/tokenizer.json" "$DIR/"
  du -sh "$DIR" ;;
train)
  DIR=${2:-gpu}; BUDGET=${BUDGET:-540}; MULT=${MULT:-4}; PY=${PY:-python3}; OUT=${OUT:?OUT}
  export PYTHONUNBUFFERED=1
  zstd() { LD_LIBRARY_PATH="$PWD/$DIR/lib" "$PWD/$DIR/bin/zstd" "$@"; }
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  # unpack once per machine (a second leg waits for the first's unpacking)
  if mkdir /tmp/d.lock 2>/dev/null; then
    mkdir -p /tmp/d && zstd -d -q --long=27 -c "$DIR/data.tar.zst" | tar -xf - -C /tmp/d || exit 1
    touch /tmp/d/.done
  fi
  while [ ! -e /tmp/d/.done ]; do sleep 1; done
  T=${LEG_TMP:-/tmp}
  S0=$($PY -c "import torch; print(torch.load('$DIR/lite.ckpt', weights_only=False)['step'])")
  MIX=${MIX:-"--und $((10*MULT)) --t2i $((14*MULT)) --edit $((10*MULT)) --think $((12*MULT))"}
  COMMON="--device ${DEVICE:-cuda} --data /tmp/d/train1,/tmp/d/train2,/tmp/d/train --vae $DIR/vae_final.ckpt --init-weights $DIR/lite.ckpt $MIX ${EXTRA:-}"
  mkdir -p $T/cal $T/run && cp "$DIR/tokenizer.json" $T/cal/ && cp "$DIR/tokenizer.json" $T/run/
  $PY models/recipes/train_unified.py $COMMON --run $T/cal --steps $((S0+${CAL:-300})) --log-every 50 --ckpt-every 100000 \
    2>&1 | tee "$OUT/calibrate.log" || exit 1
  cp $T/cal/latents_* $T/run/
  # the step time varies after calibration on the H200 (0.031-0.057 s/step, legs 1-3): plan with a margin
  # (MARGIN, default 1.35). 1.05 was too tight: leg 3 hit the timeout at 79.25k of 80k and was finished on the
  # CPU from its last checkpoint (same --steps/--cooldown-from, train_unified resumes the schedule)
  SPS=$(tail -n +2 $T/cal/loss.csv | tail -n 3 | awk -F, '{s+=$7; n++} END {print s/n}')  # rows, never the header
  LEFT=$((BUDGET - SECONDS - 25))
  N=$($PY -c "print(int($LEFT / ($SPS * ${MARGIN:-1.35}) // 100 * 100))")
  [ "$N" -ge 100 ] || { echo "no time left to train"; exit 1; }
  CD=$((S0 + N * 6 / 10))
  echo "sec/step $SPS, ${LEFT}s left -> $N steps ($S0 -> $((S0+N)), cool-down from $CD)"
  timeout $((LEFT + 10)) $PY models/recipes/train_unified.py $COMMON --run $T/run --steps $((S0+N)) --cooldown-from $CD \
    --ckpt-every 1000 --log-every 250 > "$OUT/train.log" 2>&1
  echo "train rc $? at ${SECONDS}s"; tail -n 3 "$OUT/train.log"
  cp $T/run/loss.csv "$OUT/"; split -b 15M -d $T/run/unified.ckpt "$OUT/unified.ckpt.part"; ls -la "$OUT" ;;
*) echo "usage: $0 pack CKPT DIR | train DIR" >&2; exit 2 ;;
esac
