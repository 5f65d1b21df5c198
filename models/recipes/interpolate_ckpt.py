#!/usr/bin/env python3
"""Interpolates two unified checkpoints' EMA weights (WiSE-FT, Wortsman et al. 2022): BASE + ALPHA * (TUNED - BASE),
every floating-point tensor; the rest (step, config, tokenizer folder layout) is BASE's. A fine-tune that taught
one skill at the cost of another can be pulled part of the way back toward the model it started from.

  /usr/bin/python3 models/recipes/interpolate_ckpt.py --base runs/r8/unified.ckpt --tuned runs/fu22a/unified.ckpt \
      --alpha 0.8 --out runs/wa80/unified.ckpt        # then export_pack.py --ckpt runs/wa80/unified.ckpt ...

Both checkpoints must hold the same model (config and tensor names and shapes); OUT's folder also gets BASE's
tokenizer.json when it has one. Session 23 used it on readout fine-tunes (docs/results.md).
"""
import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyperbagel.ckpts import refuse_overwrite  # noqa: E402
from hyperbagel.utils import save_ckpt, torch_load  # noqa: E402


def interpolate(base, tuned, alpha):
    """BASE's checkpoint dict with EMA weights base + alpha * (tuned - base)."""
    a, b = base["ema"], tuned["ema"]
    if base.get("config") != tuned.get("config"):
        raise ValueError("the checkpoints hold different model configs")
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ValueError("the checkpoints' tensors differ in names or shapes")
    ema = {k: a[k] + alpha * (b[k] - a[k]) if a[k].is_floating_point() else a[k] for k in a}
    keep = ("step", "config", "think_samples", "followup_samples", "session_context", "vae", "scale")
    return {**{k: base[k] for k in keep if k in base}, "ema": ema}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="the checkpoint the fine-tune started from (alpha 0)")
    ap.add_argument("--tuned", required=True, help="the fine-tuned checkpoint (alpha 1)")
    ap.add_argument("--alpha", type=float, required=True, help="how far toward --tuned, in [0, 1]")
    ap.add_argument("--out", required=True, help="the interpolated checkpoint (a unified.ckpt path)")
    a = ap.parse_args()
    if not 0.0 <= a.alpha <= 1.0:
        sys.exit(f"--alpha {a.alpha}: a fraction in [0, 1]")
    for p in (a.base, a.tuned):
        if not os.path.isfile(p):
            sys.exit(f"{p}: no such checkpoint")
    refuse_overwrite(a.out, "--out", [("--base", a.base), ("--tuned", a.tuned)])
    try:
        ck = interpolate(torch_load(a.base), torch_load(a.tuned), a.alpha)
    except ValueError as e:
        sys.exit(f"{a.base} and {a.tuned}: {e}")
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    save_ckpt(a.out, ck)
    tok = os.path.join(os.path.dirname(a.base), "tokenizer.json")
    dest = os.path.join(os.path.dirname(os.path.abspath(a.out)), "tokenizer.json")
    if os.path.isfile(tok) and not (os.path.exists(dest) and os.path.samefile(tok, dest)):
        shutil.copy(tok, dest)
    print(f"wrote {a.out}: {a.base} + {a.alpha} x ({a.tuned} - base)", flush=True)


if __name__ == "__main__":
    main()
