#!/usr/bin/env python3
"""Writes the random-weight tiny pack (test/fixtures/tiny-pack) with parity references. Deterministic (seed 0).

  /usr/bin/python3 models/recipes/make_fixture.py [--out test/fixtures/tiny-pack] [--meta data/train/meta.json]
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import torch  # noqa: E402

from hyperbagel.config import TINY, ModelConfig  # noqa: E402
from hyperbagel.model import Unified, VAE  # noqa: E402
from hyperbagel.tokenizer import WordTokenizer  # noqa: E402
from hyperbagel import export as ex  # noqa: E402

# The Shapes world's vocabulary (src/world/vocabulary.ts), used when no dataset meta.json is given.
WORLD_VOCAB = ["a", "above", "add", "an", "and", "are", "at", "background", "beige", "below", "black", "blue", "bottom",
               "center", "change", "circle", "circles", "color", "colour", "cyan", "describe", "four", "gray", "green",
               "how", "image", "in", "is", "it", "large", "left", "make", "many", "move", "no", "now", "object",
               "objects", "of", "on", "one", "orange", "photo", "picture", "pink", "purple", "red", "remove", "right",
               "shape", "size", "small", "square", "squares", "star", "stars", "the", "there", "this", "three", "to",
               "top", "triangle", "triangles", "two", "what", "where", "white", "yellow", "yes", "zero"]


def randomize(module, gen):
    """Fixture weights: every parameter random (no zero-init heads), so every output is informative."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() == 1 and ("norm" in name or name.endswith("ln1.weight") or name.endswith("ln2.weight")):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[1] if p.dim() > 1 else p.shape[0]
                if p.dim() == 4:
                    fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                std = 1.0 if "embed.weight" == name else 1.0 / max(1, fan_in) ** 0.5
                p.copy_(torch.randn(p.shape, generator=gen) * std)


def build(vocab_words, cfg: ModelConfig = TINY, seed=0):
    torch.manual_seed(seed)
    tok = WordTokenizer(vocab_words)
    c = ModelConfig.from_dict(cfg.to_dict())
    c.vocab = len(tok)
    gen = torch.Generator().manual_seed(seed)
    model, vae = Unified(c), VAE(c)
    randomize(model, gen)
    randomize(vae, gen)
    return tok, c, model.eval(), vae.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="test/fixtures/tiny-pack")
    ap.add_argument("--meta", default=None, help="dataset meta.json whose vocabulary to use")
    ap.add_argument("--force", action="store_true", help="replace a pack in --out that is not a tiny-pack fixture")
    a = ap.parse_args()
    man = os.path.join(a.out, "manifest.json")
    if os.path.isfile(man) and not a.force:
        try:
            name = json.load(open(man)).get("name")
        except (OSError, ValueError):
            name = None
        if name != "tiny-pack":
            sys.exit(f"--out {a.out!r} holds a pack named {name!r}, not the tiny-pack fixture: random weights would "
                     "replace it (--force to do so anyway)")
    torch.set_num_threads(1)
    words = json.load(open(a.meta))["vocabulary"] if a.meta else WORLD_VOCAB
    tok, c, model, vae = build(words)
    os.makedirs(a.out, exist_ok=True)
    specs = ex.export_graphs(model, vae, 1.0, a.out)
    tok.save(os.path.join(a.out, "tokenizer.json"))
    g = torch.Generator().manual_seed(7)
    imgs = torch.nn.functional.interpolate(torch.rand(8, 3, 4, 4, generator=g) * 2 - 1, size=c.gen_image_size)
    preview = ex.fit_preview(vae, 1.0, imgs)
    ex.write_manifest(a.out, c, tok, specs, 1.0, preview, "tiny-pack",
                      "Random-weight tiny pack for engine tests (same graphs and manifest as shapes-mot). "
                      "Outputs are meaningless.", extra={"prompts": {"caption": "describe the image"}})
    ex.write_parity(model, vae, 1.0, a.out)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(a.out) for f in fs)
    print(f"wrote {a.out}: {total / 1024:.0f} KB, vocab {c.vocab}")


if __name__ == "__main__":
    main()
