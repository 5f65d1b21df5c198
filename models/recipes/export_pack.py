#!/usr/bin/env python3
"""Stage 3: export a trained model into a model pack (docs/model-pack.md), opset 17.

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/export_pack.py --ckpt runs/unified/unified.ckpt \
      --data data/train --out models/shapes-mot
Uses the EMA weights (--raw for the raw ones). --parity also writes parity/ reference tensors.
Every input is checked first and the pack is built in a temporary sibling folder of --out, which replaces --out only
when the export succeeded (a failed export leaves an existing pack as it was). --out must be new, empty or a
previous pack; the files of that pack the export does not write again (build_retrieval.py's retrieval.json,
export_accel.py's graphs, anything else) are only dropped with --force, and the output lists them.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyperbagel.utils import setup_threads, pixel_offset  # noqa: E402
from hyperbagel.ckpts import require_unified, require_vae, check_vae_matches  # noqa: E402

setup_threads()
import numpy as np  # noqa: E402
import torch  # noqa: E402

from hyperbagel.config import ModelConfig  # noqa: E402
from hyperbagel.model import Unified, VAE  # noqa: E402
from hyperbagel.tokenizer import WordTokenizer, untrained_words  # noqa: E402
from hyperbagel.data import to_pixels, record_texts, think_prefix, CAPTION_PROMPT  # noqa: E402
from hyperbagel import export as ex  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="runs/unified/unified.ckpt")
    ap.add_argument("--vae", default=None,
                    help="VAE checkpoint (default: the one the unified run used); another must have that VAE's encoder "
                         "and latent scale (a copy, or a decoder fine-tune: train_vae.py --init VAE --decoder-only)")
    ap.add_argument("--data", default="data/train", help="images for fitting the latent->RGB preview factors")
    ap.add_argument("--train-data", action="append", default=None,
                    help="a dataset folder the model was trained on (repeatable; default: --data): vocabulary words "
                         "none of their texts uses become the manifest's untrained_words, which the engine refuses. "
                         "Name every folder of the curriculum: a one-object stage alone lacks the counting words")
    ap.add_argument("--out", default="models/shapes-mot")
    ap.add_argument("--name", default="shapes-mot")
    ap.add_argument("--raw", action="store_true")
    ap.add_argument("--parity", action="store_true")
    ap.add_argument("--session-context", choices=["conversation", "image"], default=None,
                    help="declare prompts.session_context: what a session's later understanding turn reads (default: what "
                         "the checkpoint's pack declared, for one made by import_pack.py; else 'conversation' when it records "
                         "two-turn training samples (train_unified --followup), else 'image', the session's image alone)")
    ap.add_argument("--understand-offset", type=pixel_offset, default=None, metavar="DX,DY",
                    help="declare vision.understand_offset: understanding reads each image moved by DX,DY pixels (right "
                         "and down; pick it on the val suite, e.g. eval understand --shift N). Default: what the checkpoint's "
                         "pack declared, for one made by import_pack.py, else 0,0. The pixel bound is an eighth of the image. A "
                         "negative first move needs the = form: --understand-offset=-2,2")
    ap.add_argument("--think", action="store_true",
                    help="declare prompts.think (the run trained prompt expansion; implied when the checkpoint records think samples)")
    ap.add_argument("--note", default="", help="free text for manifest.training.note (e.g. measured quality)")
    ap.add_argument("--force", action="store_true",
                    help="replace a non-empty --out that is not a pack, or drop the files of a previous pack that this "
                         "export does not write (retrieval.json, acceleration graphs, ...)")
    a = ap.parse_args()
    # every input first: nothing is written before they all check out
    ck = require_unified(a.ckpt, "--ckpt", raw=a.raw, vae=not a.vae)
    vae_path = a.vae or ck["vae"]
    vck = require_vae(vae_path, "--vae" if a.vae else "--ckpt's VAE (pass --vae to use another)")
    # the model's latents are in its VAE's latent space at its scale: a VAE with another encoder or scale would
    # export a pack that decodes (and edits from) the wrong latents
    check_vae_matches(ck, vae_path, float(vck["scale"]), "--vae" if a.vae else "--ckpt's VAE",
                      "pass that VAE or a decoder fine-tune of it (train_vae.py --init VAE --decoder-only)")
    tok_path = os.path.join(os.path.dirname(a.ckpt), "tokenizer.json")
    if not os.path.isfile(tok_path):
        sys.exit(f"--ckpt: no tokenizer.json next to {a.ckpt} (train_unified.py and import_pack.py write it there)")
    tok = WordTokenizer.load(tok_path)
    for d in a.train_data or [a.data]:
        if not os.path.isfile(os.path.join(d, "records.jsonl")):
            flag = "--train-data" if a.train_data else "--data (the default --train-data)"
            sys.exit(f"{flag}: no records.jsonl in {d!r} (a dataset folder: `npx hyperbagel dataset --out DIR`)")
    c = ModelConfig.from_dict(ck["config"])
    if len(tok) != c.vocab:
        sys.exit(f"--ckpt: {tok_path} has {len(tok)} tokens, the checkpoint's vocabulary {c.vocab}")
    most = c.vit_image_size // 8  # the engine's bound (src/runtime/manifest.ts): off the grid, not off the frame
    if a.understand_offset and any(abs(v) > most for v in a.understand_offset):
        sys.exit(f"--understand-offset {','.join(map(str, a.understand_offset))}: each move at most {most} pixels "
                 f"(an eighth of the {c.vit_image_size}-pixel image)")
    img_path = os.path.join(a.data, "images.npy")
    if not os.path.isfile(img_path):
        sys.exit(f"--data: no images.npy in {a.data!r} (a dataset folder: `npx hyperbagel dataset --out DIR`)")
    try:
        imgs = np.load(img_path, mmap_mode="r")
    except Exception as e:  # noqa: BLE001
        sys.exit(f"--data: cannot read {img_path} ({type(e).__name__}: {e})")
    if not len(imgs):
        sys.exit(f"--data: {img_path} holds no images")
    out = os.path.realpath(a.out)
    old = previous_files(out, a.force)
    model = Unified(c)
    model.load_state_dict(ck["model" if a.raw else "ema"])
    model.eval()
    vae = VAE(ModelConfig.from_dict(vck["config"]))
    vae.load_state_dict(vck["ema"])
    vae.eval()
    scale = float(vck["scale"])
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.export-", dir=parent)
    try:
        training = build(a, model, vae, scale, c, ck, vck, tok, imgs, tmp)
        replaced = install(tmp, out, old, a.force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(out) for f in fs)
    print(json.dumps({"out": a.out, "bytes": total, **replaced, **training}))


def pack_files(folder):
    return sorted(os.path.relpath(os.path.join(dp, f), folder) for dp, _, fs in os.walk(folder) for f in fs)


def previous_files(out, force):
    """The files now in --out ([] when it is new or empty); refuses what would be lost without --force."""
    if os.path.exists(out) and not os.path.isdir(out):
        sys.exit(f"--out: {out} exists and is not a folder")
    old = pack_files(out) if os.path.isdir(out) else []
    if not old:
        return old
    try:
        is_pack = json.load(open(os.path.join(out, "manifest.json"))).get("format", "").startswith("hyperbagel-pack/")
    except (OSError, ValueError, AttributeError):
        is_pack = False
    if not is_pack and not force:
        sys.exit(f"--out: {out} is not empty and holds no model pack (manifest.json); pass --force to replace its "
                 f"{len(old)} files, or choose another folder")
    return old


def install(tmp, out, old, force):
    """Replaces --out with the finished pack in tmp; -> what was replaced, for the output."""
    new = set(pack_files(tmp))
    dropped = [f for f in old if f not in new]
    if dropped and not force:
        sys.exit(f"--out: {out} is a pack with files this export does not write ({', '.join(dropped[:8])}"
                 f"{' ...' if len(dropped) > 8 else ''}: e.g. build_retrieval.py's retrieval.json or export_accel.py's "
                 "graphs, which belong to the previous model); pass --force to drop them (then rerun those steps), "
                 "or export into another folder. Nothing was changed.")
    if os.path.isdir(out):
        trash = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.rmdir(trash)
        os.rename(out, trash)
        os.rename(tmp, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.rename(tmp, out)
    # mkdtemp made the folder private (0700); a pack folder gets the usual permissions
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(out, 0o777 & ~mask)
    info = {}
    if old:
        info["replaced"] = len(old)
        if dropped:
            info["dropped"] = dropped
            print(f"replaced the previous pack in {out}; dropped {len(dropped)} files it no longer has: "
                  f"{', '.join(dropped)}", file=sys.stderr, flush=True)
    return info


def build(a, model, vae, scale, c, ck, vck, tok, imgs, out):
    """Writes the pack into `out` (an empty folder); -> manifest.training."""
    specs = ex.export_graphs(model, vae, scale, out)
    tok.save(os.path.join(out, "tokenizer.json"))
    px = to_pixels(np.asarray(imgs[: min(512, len(imgs))]), c.gen_image_size)
    preview = ex.fit_preview(vae, scale, px)
    nparams = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in vae.parameters())
    training = {"unified_steps": ck["step"], "vae_steps": vck["step"], "params": nparams,
                "weights": "raw" if a.raw else "ema", "preview_rmse": round(preview[2], 4),
                # the full model config: import_pack.py rebuilds training checkpoints from the graphs with it
                "config": c.to_dict()}
    if a.note:
        training["note"] = a.note
    think = a.think or ck.get("think_samples", 0) > 0
    # what a session's later turn should read (docs/model-pack.md): a model never trained on a second turn
    # answers one poorly after a transcript of the first, so the engine gives it the image alone
    # (a checkpoint imported from a pack carries the pack's declaration; training runs record their samples)
    session_context = a.session_context or ck.get("session_context") or ("conversation" if ck.get("followup_samples", 0) > 0 else "image")
    # think prompts framed as the training ones were (docs/model-pack.md, prompts.think_prefix)
    prefix = think_prefix(a.train_data or [a.data]) if think else None
    prompts = {"caption": CAPTION_PROMPT, **({"think": True} if think else {}), **({"think_prefix": prefix} if prefix else {}),
               "session_context": session_context}
    texts = [CAPTION_PROMPT]
    for d in a.train_data or [a.data]:  # (checked in main())
        texts.extend(record_texts(d))
    refused = untrained_words(tok, texts)
    print(f"untrained_words (refused by the engine): {', '.join(refused) or 'none'}", file=sys.stderr, flush=True)
    # the offset belongs to these weights (chosen on val): only a re-export of the same weights carries it
    offset = a.understand_offset or tuple(ck.get("understand_offset") or (0, 0))
    ex.write_manifest(out, c, tok, specs, scale, preview, a.name,
                      f"Miniature BAGEL (MoT decoder {c.layers}x{c.hidden}, conv-stem ViT, conv VAE "
                      f"{c.gen_image_size}px -> {c.latent_channels}x{c.latent_size}x{c.latent_size}) trained on the "
                      f"Shapes world by models/recipes.",
                      extra={"prompts": prompts, "training": training, "untrained_words": refused},
                      understand_offset=offset)
    if a.parity:
        ex.write_parity(model, vae, scale, out)
    return training


if __name__ == "__main__":
    main()
