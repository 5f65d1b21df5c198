#!/usr/bin/env python3
"""Stage 3: export a trained model into a model pack (docs/model-pack.md), opset 17.

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/export_pack.py --ckpt runs/unified/unified.ckpt \
      --data data/train --out models/shapes-mot
Uses the EMA weights (--raw for the raw ones). --parity also writes parity/ reference tensors.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyperbagel.utils import setup_threads  # noqa: E402

setup_threads()
import numpy as np  # noqa: E402
import torch  # noqa: E402

from hyperbagel.config import ModelConfig  # noqa: E402
from hyperbagel.model import Unified, VAE  # noqa: E402
from hyperbagel.tokenizer import WordTokenizer  # noqa: E402
from hyperbagel.data import to_pixels, CAPTION_PROMPT  # noqa: E402
from hyperbagel import export as ex  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="runs/unified/unified.ckpt")
    ap.add_argument("--vae", default=None, help="VAE checkpoint (default: the one the unified run used)")
    ap.add_argument("--data", default="data/train", help="images for fitting the latent->RGB preview factors")
    ap.add_argument("--out", default="models/shapes-mot")
    ap.add_argument("--name", default="shapes-mot")
    ap.add_argument("--raw", action="store_true")
    ap.add_argument("--parity", action="store_true")
    ap.add_argument("--think", action="store_true",
                    help="declare prompts.think (the run trained prompt expansion; implied when the checkpoint records think samples)")
    ap.add_argument("--note", default="", help="free text for manifest.training.note (e.g. measured quality)")
    a = ap.parse_args()
    ck = torch.load(a.ckpt, map_location="cpu")
    c = ModelConfig.from_dict(ck["config"])
    model = Unified(c)
    model.load_state_dict(ck["model" if a.raw else "ema"])
    model.eval()
    vck = torch.load(a.vae or ck["vae"], map_location="cpu")
    vae = VAE(ModelConfig.from_dict(vck["config"]))
    vae.load_state_dict(vck["ema"])
    vae.eval()
    scale = float(vck["scale"])
    tok = WordTokenizer.load(os.path.join(os.path.dirname(a.ckpt), "tokenizer.json"))
    assert len(tok) == c.vocab
    os.makedirs(a.out, exist_ok=True)
    specs = ex.export_graphs(model, vae, scale, a.out)
    tok.save(os.path.join(a.out, "tokenizer.json"))
    imgs = np.load(os.path.join(a.data, "images.npy"), mmap_mode="r")
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
    prompts = {"caption": CAPTION_PROMPT, **({"think": True} if think else {})}
    ex.write_manifest(a.out, c, tok, specs, scale, preview, a.name,
                      f"Miniature BAGEL (MoT decoder {c.layers}x{c.hidden}, conv-stem ViT, conv VAE "
                      f"{c.gen_image_size}px -> {c.latent_channels}x{c.latent_size}x{c.latent_size}) trained on the "
                      f"Shapes world by models/recipes.",
                      extra={"prompts": prompts, "training": training})
    if a.parity:
        ex.write_parity(model, vae, scale, a.out)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(a.out) for f in fs)
    print(json.dumps({"out": a.out, "bytes": total, **training}))


if __name__ == "__main__":
    main()
