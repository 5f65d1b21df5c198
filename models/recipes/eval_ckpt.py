#!/usr/bin/env python3
"""Quick quality check of a unified checkpoint (EMA weights) on a dataset split, in PyTorch.

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/eval_ckpt.py --ckpt runs/unified/unified.ckpt --data data/val
Understanding: caption exact match and VQA accuracy (greedy). Generation: a crude palette reader checks the
background and each object's colour in its cell (shape is not checked) for t2i (caption prompts) and edits.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyperbagel.utils import setup_threads, positive_int, non_negative_int  # noqa: E402
from hyperbagel.ckpts import require_unified, require_vae, check_vae_matches  # noqa: E402

setup_threads()
import numpy as np  # noqa: E402
import torch  # noqa: E402

from hyperbagel.config import ModelConfig  # noqa: E402
from hyperbagel.model import Unified, VAE  # noqa: E402
from hyperbagel.tokenizer import WordTokenizer  # noqa: E402
from hyperbagel.data import ShapesData, to_pixels, CAPTION_PROMPT  # noqa: E402
from hyperbagel.sample import answer, generate, scene_match  # noqa: E402


def load(ckpt_path, use_ema=True, vae_path=None):
    ck = require_unified(ckpt_path, "--ckpt", raw=not use_ema, vae=not vae_path)
    vck = require_vae(vae_path or ck["vae"], "--vae" if vae_path else "--ckpt's VAE (pass --vae to use another)")
    # the VAE the model was trained with, up to its decoder (same encoder and latent scale)
    check_vae_matches(ck, vae_path or ck["vae"], float(vck["scale"]), "--vae" if vae_path else "--ckpt's VAE",
                      "pass that VAE or a decoder fine-tune of it (train_vae.py --init VAE --decoder-only)")
    tok_path = os.path.join(os.path.dirname(ckpt_path), "tokenizer.json")
    if not os.path.isfile(tok_path):
        raise SystemExit(f"--ckpt: no tokenizer.json next to {ckpt_path} (train_unified.py and import_pack.py write it there)")
    c = ModelConfig.from_dict(ck["config"])
    m = Unified(c)
    m.load_state_dict(ck["ema" if use_ema else "model"])
    m.eval()
    vae = VAE(ModelConfig.from_dict(vck["config"]))
    vae.load_state_dict(vck["ema"])
    vae.eval()
    tok = WordTokenizer.load(tok_path)
    return m, vae, float(vck["scale"]), tok, ck


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="runs/unified/unified.ckpt")
    ap.add_argument("--data", default="data/val")
    ap.add_argument("--vae", default=None, help="VAE checkpoint (default: the one the unified run used; needed for a lite "
                                                "checkpoint); it must have that VAE's encoder and latent scale")
    ap.add_argument("--n-und", type=non_negative_int, default=100)
    ap.add_argument("--n-gen", type=non_negative_int, default=24)
    ap.add_argument("--steps", type=positive_int, default=50)
    ap.add_argument("--raw", action="store_true", help="use the raw (non-EMA) weights")
    ap.add_argument("--out", default=None, help="write samples (npy) here")
    a = ap.parse_args()
    m, vae, scale, tok, ck = load(a.ckpt, not a.raw, a.vae)
    if not os.path.isfile(os.path.join(a.data, "records.jsonl")):
        sys.exit(f"--data: {a.data!r} is not a dataset folder (no records.jsonl)")
    ds = ShapesData(a.data, tok, limit=max(a.n_und, a.n_gen))
    t0 = time.time()
    cap_ok, qa_ok, qa_n, ex = 0, 0, 0, []
    per_kind = {}
    for i in range(min(a.n_und, ds.n)):
        px = to_pixels(ds.images[i:i + 1], 64)
        cap = answer(m, tok, px, CAPTION_PROMPT)
        cap_ok += cap == ds.records[i]["caption"]
        if i < 3:
            ex.append((cap, ds.records[i]["caption"]))
        for q in ds.records[i]["qa"][:4]:
            got = answer(m, tok, px, q["question"], max_new=4)
            ok = got == q["answer"]
            qa_ok += ok
            qa_n += 1
            k = per_kind.setdefault(q["kind"], [0, 0])
            k[0] += ok
            k[1] += 1
    nu = max(1, min(a.n_und, ds.n))
    res = {"step": ck["step"], "caption_exact": cap_ok / nu, "vqa": qa_ok / max(1, qa_n),
           "vqa_by_kind": {k: round(v[0] / v[1], 3) for k, v in per_kind.items()}}
    print(json.dumps(res), flush=True)
    for got, want in ex:
        print(f"  caption: {got!r}\n     want: {want!r}")
    G = vae_G = ModelConfig.from_dict(ck["config"]).gen_image_size
    t2i, ed, samples = [], [], []
    for i in range(min(a.n_gen, ds.n)):
        r = ds.records[i]
        img = generate(m, tok, vae, scale, r["caption"], steps=a.steps, cfg_text=4.0, interval=(0.0, 1.0), seed=i)
        t2i.append(scene_match(img, r["scene"]))
        src64 = to_pixels(ds.images[i:i + 1], 64)
        src_lat = vae.encode(to_pixels(ds.images[i:i + 1], vae_G))[0] * scale
        eimg = generate(m, tok, vae, scale, r["edit"]["instruction"], source64=src64, source_lat=src_lat,
                        steps=a.steps, cfg_text=4.0, cfg_img=1.5, interval=(0.4, 1.0), seed=i)
        ed.append(scene_match(eimg, r["edit"]["scene"]))
        samples.append((img.numpy(), eimg.numpy()))
    if not t2i:
        return
    t2i, ed = np.array(t2i, dtype=float), np.array(ed, dtype=float)
    res2 = {"t2i_background": t2i[:, 0].mean(), "t2i_colors_in_cells": t2i[:, 1].mean(), "t2i_exact_colors": t2i[:, 2].mean(),
            "edit_background": ed[:, 0].mean(), "edit_colors_in_cells": ed[:, 1].mean(), "edit_exact_colors": ed[:, 2].mean(),
            "seconds": round(time.time() - t0)}
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res2.items()}), flush=True)
    if a.out:
        np.save(a.out, np.stack([np.stack(s) for s in samples]))


if __name__ == "__main__":
    main()
