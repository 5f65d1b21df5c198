"""Checkpoint kinds, checked up front: a VAE checkpoint (train_vae.py, import_pack's OUT/vae.ckpt), a full
unified one (train_unified.py: raw + EMA weights, optimizer, VAE path) or a lite unified one (--save-lite,
gpu_leg.sh's lite.ckpt: EMA weights, step, config; no VAE path). Each check exits with one clear line."""
import os

from .utils import require_ckpt

VAE_HINT = "pass the VAE checkpoint (train_vae.py's RUN/vae.ckpt or import_pack.py's OUT/vae.ckpt)"
UNIFIED_HINT = "pass a unified checkpoint (train_unified.py's RUN/unified.ckpt or import_pack.py's OUT/unified.ckpt)"


def is_vae(ck):
    return any(k.startswith("enc.") for k in ck["ema"])


def require_vae(path, what):
    ck = require_ckpt(path, what, ("ema", "config", "scale"))
    if not is_vae(ck):
        raise SystemExit(f"{what}: {path!r} is a unified checkpoint, not a VAE one: {VAE_HINT}")
    return ck


def require_unified(path, what, raw=False, vae=False):
    """`raw`: the raw (non-EMA) weights are needed; `vae`: the checkpoint must name its VAE (else a lite one
    is refused with what to pass instead)."""
    ck = require_ckpt(path, what, ("ema", "config", "step"))
    if is_vae(ck):
        raise SystemExit(f"{what}: {path!r} is a VAE checkpoint, not a unified one: {UNIFIED_HINT}")
    lite = "model" not in ck
    if raw and lite:
        raise SystemExit(f"{what}: {path!r} is a lite checkpoint (EMA weights only): drop --raw, or {UNIFIED_HINT} "
                         "of a training run")
    if vae and "vae" not in ck:
        raise SystemExit(f"{what}: {path!r} is a lite checkpoint (it does not name its VAE): also pass --vae VAE.ckpt")
    return ck


def require_data(dirs, what="--data", files=("meta.json", "images.npy", "edited.npy", "records.jsonl")):
    """The dataset folders (`npx hyperbagel dataset --out DIR`) must exist and hold the dataset's files."""
    if not dirs:
        raise SystemExit(f"{what}: no dataset folder given")
    for d in dirs:
        missing = [f for f in files if not os.path.isfile(os.path.join(d, f))]
        if missing:
            raise SystemExit(f"{what}: {d!r} is not a dataset folder (no {', '.join(missing)}; make one with "
                             "`npx hyperbagel dataset --out DIR`)")
    return dirs
