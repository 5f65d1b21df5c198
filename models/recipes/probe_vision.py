#!/usr/bin/env python3
"""A controlled experiment on the vision encoder alone: does it recognise objects in combinations it never
saw (the held-out split: unseen colour x shape and shape x cell pairs)?

The default model's VisionEncoder (conv stem to a 4x4 token grid, ViT, connector) is trained from scratch
with a small read-out that shares its classifier across cells, as the decoder shares its vocabulary:
one learned query per cell attends over the 16 image tokens, and the same MLP names the object there
(shape or nothing, colour, size). Trained on train-split images only; scored per object on the val split
and on the held-out objects of the held-out split (an object is right when shape, colour and size all
are). `--shift-aug N` translates training images by up to N pixels per axis (data.shifted); `--gray-aug P`
shows a training image in grey with probability P, its colours unlabelled.

  OPENBLAS_NUM_THREADS=1 /usr/bin/python3 models/recipes/probe_vision.py --train data/train \
      --val data/val --heldout data/heldout --steps 3000 --shift-aug 3 --json
"""
import argparse
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyperbagel.utils import setup_threads, seed_all, positive_int, non_negative_int, positive_float  # noqa: E402

setup_threads()
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hyperbagel.config import DEFAULT, TINY, ModelConfig  # noqa: E402
from hyperbagel.data import shifted, to_pixels  # noqa: E402
from hyperbagel.model import VisionEncoder  # noqa: E402
from hyperbagel.vocabulary import CELLS, COLORS, SHAPES, SIZES  # noqa: E402

# the held-out combinations (src/world/splits.ts)
HELDOUT_COLOR_SHAPE = {("yellow", "star"), ("cyan", "triangle"), ("pink", "square")}
HELDOUT_SHAPE_CELL = {("circle", "bottom right"), ("triangle", "top left")}


def heldout_kinds(o):
    k = []
    if (o["color"], o["shape"]) in HELDOUT_COLOR_SHAPE:
        k.append(f"{o['color']} {o['shape']}")
    if (o["shape"], o["cell"]) in HELDOUT_SHAPE_CELL:
        k.append(f"{o['shape']} at {o['cell']}")
    return k


def load(folder, limit=None):
    recs = [json.loads(x) for x in open(os.path.join(folder, "records.jsonl")) if x.strip()][:limit]
    images = np.load(os.path.join(folder, "images.npy"), mmap_mode="r")[: len(recs)]
    # per cell: shape index + 1 (0 = empty), colour, size (-100 where empty)
    shape = np.zeros((len(recs), 9), np.int64)
    color = np.full((len(recs), 9), -100, np.int64)
    size = np.full((len(recs), 9), -100, np.int64)
    for i, r in enumerate(recs):
        for o in r["scene"]["objects"]:
            c = CELLS.index(o["cell"])
            shape[i, c] = SHAPES.index(o["shape"]) + 1
            color[i, c] = COLORS.index(o["color"])
            size[i, c] = SIZES.index(o["size"])
    return recs, np.ascontiguousarray(images), shape, color, size


class Probe(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.vision = VisionEncoder(c)
        d = c.hidden
        self.query = nn.Parameter(torch.randn(9, d) * 0.02)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1 + len(SHAPES) + len(COLORS) + len(SIZES)))

    def forward(self, pixels):
        t = self.vision(pixels)  # [B,16,D]
        att = torch.softmax(torch.einsum("qd,bnd->bqn", self.query, self.k(t)) / t.shape[-1] ** 0.5, dim=-1)
        z = self.head(torch.einsum("bqn,bnd->bqd", att, self.v(t)))  # [B,9,K]: one shared head for every cell
        n1 = 1 + len(SHAPES)
        return z[..., :n1], z[..., n1:n1 + len(COLORS)], z[..., n1 + len(COLORS):]


@torch.no_grad()
def score(model, data, batch=250):
    recs, images, shape, color, size = data
    model.eval()
    ok_obj = {"all": [0, 0]}
    part = {}  # held-out kind -> [shape right, colour right, count]: which attribute an error gets wrong
    for s in range(0, len(recs), batch):
        ps, pc, pz = (x.argmax(-1).numpy() for x in model(to_pixels(images[s:s + batch])))
        for j, r in enumerate(recs[s:s + batch]):
            for o in r["scene"]["objects"]:
                c = CELLS.index(o["cell"])
                right = ps[j, c] == shape[s + j, c] and pc[j, c] == color[s + j, c] and pz[j, c] == size[s + j, c]
                for k in ["all"] + heldout_kinds(o) + (["heldout objects"] if heldout_kinds(o) else []):
                    ok_obj.setdefault(k, [0, 0])
                    ok_obj[k][0] += int(right)
                    ok_obj[k][1] += 1
                for k in heldout_kinds(o):
                    pk = part.setdefault(k, [0, 0, 0])
                    pk[0] += int(ps[j, c] == shape[s + j, c])
                    pk[1] += int(pc[j, c] == color[s + j, c])
                    pk[2] += 1
    model.train()
    out = {k: round(a / n, 4) for k, (a, n) in sorted(ok_obj.items()) if n}
    if part:
        out["attributes"] = {k: {"shape": round(a / n, 3), "colour": round(b / n, 3)} for k, (a, b, n) in sorted(part.items())}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="data/train")
    ap.add_argument("--val", default="data/val")
    ap.add_argument("--heldout", default="data/heldout")
    ap.add_argument("--limit", type=positive_int, default=None, help="at most this many records per folder")
    ap.add_argument("--steps", type=positive_int, default=3000)
    ap.add_argument("--batch", type=positive_int, default=64)
    ap.add_argument("--lr", type=positive_float, default=1e-3)
    ap.add_argument("--shift-aug", type=non_negative_int, default=0)
    ap.add_argument("--gray-aug", type=float, default=0.0,
                    help="probability that a training image is shown in grey (luminance in all channels), its colours unlabelled")
    ap.add_argument("--clip-grad", type=float, default=0.0, help="clip the gradient norm to this (0 = off)")
    ap.add_argument("--vit-input", choices=["rgb", "mask", "rgb+mask"], default="rgb",
                    help="what the conv stem sees (ModelConfig.vit_input): pixels, a colour-free foreground mask, or both")
    ap.add_argument("--vit-colour", action="store_true",
                    help="add the shape-free per-token colour feature (ModelConfig.vit_colour)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON object at the end")
    a = ap.parse_args()
    seed_all(a.seed)
    rng = random.Random(a.seed)
    tr = load(a.train, a.limit)
    va = load(a.val, a.limit)
    ho = load(a.heldout, a.limit)
    c = ModelConfig.from_dict({**(TINY if a.tiny else DEFAULT).to_dict(), "vit_input": a.vit_input, "vit_colour": a.vit_colour})
    model = Probe(c)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    t0 = time.time()
    _, images, shape, color, size = tr
    for step in range(1, a.steps + 1):
        idx = [rng.randrange(len(images)) for _ in range(a.batch)]
        imgs = np.stack([shifted(images[i], rng.randint(-a.shift_aug, a.shift_aug), rng.randint(-a.shift_aug, a.shift_aug))
                         if a.shift_aug else images[i] for i in idx])
        col = color[idx].copy()
        for j in range(len(idx)):
            if a.gray_aug and rng.random() < a.gray_aug:
                lum = imgs[j].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
                imgs[j] = np.repeat(lum.round().clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
                col[j] = -100
        ls, lc, lz = model(to_pixels(imgs))
        loss = (F.cross_entropy(ls.reshape(-1, ls.shape[-1]), torch.from_numpy(shape[idx]).reshape(-1))
                + F.cross_entropy(lc.reshape(-1, lc.shape[-1]), torch.from_numpy(col).reshape(-1), ignore_index=-100)
                + F.cross_entropy(lz.reshape(-1, lz.shape[-1]), torch.from_numpy(size[idx]).reshape(-1), ignore_index=-100))
        lr = a.lr * min(1.0, step / 200) * (1.0 - 0.9 * step / a.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip_grad)
        opt.step()
        if step % 500 == 0 or step == a.steps:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    out = {"shift_aug": a.shift_aug, "gray_aug": a.gray_aug, "vit_input": a.vit_input, "vit_colour": a.vit_colour, "clip_grad": a.clip_grad, "steps": a.steps, "seed": a.seed, "val": score(model, va), "heldout": score(model, ho),
           "seconds": round(time.time() - t0)}
    print(json.dumps(out) if a.json else json.dumps(out, indent=1), flush=True)


if __name__ == "__main__":
    main()
