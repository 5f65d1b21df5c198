"""Checkpoint kinds, checked up front: a VAE checkpoint (train_vae.py, import_pack's OUT/vae.ckpt), a full
unified one (train_unified.py: raw + EMA weights, optimizer, VAE path) or a lite unified one (--save-lite,
gpu_leg.sh's lite.ckpt: EMA weights, step, config; no VAE path). Each check exits with one clear line."""
import json
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


# the splits models are scored on (docs/world.md): a training run that reads one scores itself on its own data
EVAL_SPLITS = ("val", "test", "heldout")


def require_training_split(d, what="--data", instead="pass a train export (`npx hyperbagel dataset --split train --out DIR`)"):
    """A training run must not read an evaluation export: its meta.json `split` (written by `npx hyperbagel dataset
    --split`) must not be val, test or heldout. A folder without one (the recipes' synthetic data, `synthetic`) is
    not an evaluation export."""
    try:
        with open(os.path.join(d, "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SystemExit(f"{what}: {d!r}: meta.json cannot be read ({e}); export the dataset again")
    split = meta.get("split") if isinstance(meta, dict) else None
    if split in EVAL_SPLITS:
        raise SystemExit(f"{what}: {d!r} is the {split} split (meta.json \"split\": \"{split}\"), kept for evaluation; "
                         f"training on it would score the model on data it has seen: {instead}")


def require_data(dirs, what="--data", files=("meta.json", "images.npy", "edited.npy", "records.jsonl"), training=True):
    """The dataset folders (`npx hyperbagel dataset --out DIR`) must exist and hold the dataset's files; for
    `training`, none may be an evaluation split (require_training_split)."""
    if not dirs:
        raise SystemExit(f"{what}: no dataset folder given")
    for d in dirs:
        missing = [f for f in files if not os.path.isfile(os.path.join(d, f))]
        if missing:
            raise SystemExit(f"{what}: {d!r} is not a dataset folder (no {', '.join(missing)}; make one with "
                             "`npx hyperbagel dataset --out DIR`)")
        if training:
            require_training_split(d, what)
        check_dataset_rows(d, what, [f for f in files if f.endswith(".npy")])
    return dirs


def check_dataset_rows(d, what, arrays):
    """Every image array must read (not truncated) and hold a row per record: a short one trains on part of the
    data, or fails mid-run on an index."""
    import numpy as np
    try:
        with open(os.path.join(d, "records.jsonl")) as f:
            n = sum(1 for line in f if line.strip())
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"{what}: {d!r}: records.jsonl cannot be read ({e})")
    if n == 0:
        raise SystemExit(f"{what}: {d!r}: records.jsonl holds no records")
    for name in arrays:
        try:
            rows = np.load(os.path.join(d, name), mmap_mode="r").shape[0]
        except (OSError, ValueError) as e:
            raise SystemExit(f"{what}: {d!r}: {name} cannot be read ({e}); export the dataset again")
        if rows != n:
            raise SystemExit(f"{what}: {d!r}: {name} holds {rows} images for {n} records; export the dataset again")


def refuse_overwrite(out, what, inputs=(), training_ckpt=True, instead="write elsewhere"):
    """An output path must not be one of the inputs (resolved), and must not replace a training run's full
    checkpoint (it holds the optimizer state a resume needs): one line naming the problem and `instead`, before
    any work."""
    real = os.path.realpath(out)
    for name, p in inputs:
        if p and os.path.realpath(p) == real:
            raise SystemExit(f"{what} {out!r} is also {name}: it would be overwritten; write elsewhere")
    if os.path.isdir(out):
        raise SystemExit(f"{what} {out!r} is a folder; give a file path")
    if training_ckpt and os.path.isfile(out):
        from .utils import torch_load
        try:
            ck = torch_load(out)
        except Exception:  # noqa: BLE001 - not a checkpoint: an ordinary file to replace
            return
        if isinstance(ck, dict) and "opt" in ck:
            raise SystemExit(f"{what} {out!r} is a training run's checkpoint (with optimizer state): it would be "
                             f"replaced; {instead}")


def require_out_folder(out, what="--out"):
    """An output file's folder must exist before a long run writes into it at the end."""
    if out is None:
        return
    folder = os.path.dirname(os.path.abspath(out))
    if os.path.isdir(out):
        raise SystemExit(f"{what} {out!r} is a folder; give a file path")
    if not os.path.isdir(folder):
        raise SystemExit(f"{what} {out!r}: no folder {folder!r}")


def data_key(d):
    """What latents cached for dataset folder `d` depend on besides the VAE: the folder (resolved) and its image
    files as they are now (size, modification time), so a dataset exported again is encoded again."""
    import hashlib
    parts = [os.path.realpath(d)]
    for name in ("images.npy", "edited.npy"):
        p = os.path.join(d, name)
        st = os.stat(p) if os.path.exists(p) else None
        parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}" if st else f"{name}:-")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:10]


def check_vae_matches(ck, path, scale, what="--vae", fix=None):
    """The VAE a unified model runs with must be the one it was trained on, up to its decoder: the encoder
    defines the latent space (and a run's cached latents), the latent scale maps it to the model's. `ck` is the
    unified checkpoint (its `vae` path and `scale`, where it records them), `path`/`scale` the VAE used now.
    Passes for the same file (resolved path), or another file with the same encoder weights and scale (a copy,
    or a decoder fine-tune: train_vae.py --init VAE --decoder-only keeps both); where the checkpoint's VAE file
    is gone (a run moved to another machine), the scale alone is checked. Exits with one line naming `fix`."""
    import sys
    import torch
    from .utils import torch_load
    old = ck.get("vae")
    fix = fix or (f"pass --vae {old}" if old else "pass the VAE it was trained with")
    if "scale" in ck and float(ck["scale"]) != float(scale):
        raise SystemExit(f"{what} {path}: latent scale {float(scale)!r} differs from the one the model was trained with "
                         f"({float(ck['scale'])!r}, VAE {old or 'not recorded'}); {fix}")
    if not old or os.path.realpath(old) == os.path.realpath(path):
        return
    if os.path.isfile(old):
        enc = {k: v for k, v in torch_load(path)["ema"].items() if k.startswith("enc.")}
        prev = {k: v for k, v in torch_load(old)["ema"].items() if k.startswith("enc.")}
        if enc.keys() != prev.keys() or not all(torch.equal(v, prev[k]) for k, v in enc.items()):
            raise SystemExit(f"{what} {path}: the model was trained with the VAE {old}, whose encoder differs; {fix}")
        print(f"{what} {path}: same encoder and latent scale as the model's VAE {old}", file=sys.stderr, flush=True)
    else:
        print(f"note: the model's VAE {old} is gone; {what} {path} has the same latent scale", file=sys.stderr, flush=True)
