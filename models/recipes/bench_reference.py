#!/usr/bin/env python3
"""PyTorch reference timing of the generation loops, through the recipes' reference sampler (issue 5).

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/bench_reference.py \
      --ckpt runs/unified/unified-13600.ckpt --vae runs/vae_dec/vae-3000.ckpt --runs 5 --json

Times hyperbagel.sample.generate(...) unchanged: t2i 50-step CFG baseline, edit 50-step baseline with text+image
CFG on the interval (0.4, 1], and the same sampler with 6 Euler steps (steps=7: sample.py evaluates steps-1 times),
both with the baselines' CFG (*_6step, what the engine's "euler-6" runs when a pack has no distilled graph) and
without CFG (*_6nfe, 6 NFE: the cost of a distilled 6-NFE student). NFE are counted
by wrapping Ctx.velocity; "sampling" is first velocity call -> VAE decode call (the Euler loop only), "e2e" is the
whole generate() call (3 context prefills or 1-2, loop, VAE decode; no source encode, no image encode).
All rows run the base (EMA) weights; there is no distilled student here.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyperbagel.utils import setup_threads  # noqa: E402

setup_threads()
import torch  # noqa: E402

from hyperbagel import sample  # noqa: E402
from hyperbagel.config import ModelConfig  # noqa: E402
from hyperbagel.model import Unified, VAE  # noqa: E402
from hyperbagel.tokenizer import WordTokenizer  # noqa: E402

PROMPT = "a large red circle at the top left on a white background"
INSTRUCTION = "make the circle blue"


def load(ckpt_path, vae_path):
    ck = torch.load(ckpt_path, map_location="cpu")
    m = Unified(ModelConfig.from_dict(ck["config"]))
    m.load_state_dict(ck["ema"])
    m.eval()
    vck = torch.load(vae_path or ck["vae"], map_location="cpu")
    vae = VAE(ModelConfig.from_dict(vck["config"]))
    vae.load_state_dict(vck["ema"])
    vae.eval()
    tok = WordTokenizer.load(os.path.join(os.path.dirname(ckpt_path), "tokenizer.json"))
    return m, vae, float(vck["scale"]), tok, ck


class Probe:
    """Counts velocity calls and stamps the first one and the VAE decode call."""

    def __init__(self, vae):
        self.vae = vae
        self._vel = sample.Ctx.velocity
        self._dec = vae.decode
        probe = self

        def velocity(ctx, xt, t):
            if probe.nfe == 0:
                probe.t_first = time.perf_counter()
            probe.nfe += 1
            return probe._vel(ctx, xt, t)

        def decode(z):
            probe.t_dec = time.perf_counter()
            return probe._dec(z)

        sample.Ctx.velocity = velocity
        vae.decode = decode
        self.reset()

    def reset(self):
        self.nfe, self.t_first, self.t_dec = 0, None, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", default="runs/unified/unified-13600.ckpt")
    ap.add_argument("--vae", default=None, help="VAE checkpoint (default: the one named in the unified ckpt)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (recipes use 1)")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m, vae, scale, tok, ck = load(a.ckpt, a.vae)
    c = m.c
    g = torch.Generator().manual_seed(0)
    src64 = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1  # content does not change the cost
    with torch.no_grad():
        src_lat = vae.encode(torch.rand(1, 3, c.gen_image_size, c.gen_image_size, generator=g) * 2 - 1)[0] * scale
    probe = Probe(vae)
    paths = {
        "t2i_baseline": dict(prompt=PROMPT, steps=50, cfg_text=4.0, interval=(0.0, 1.0)),
        "edit_baseline": dict(prompt=INSTRUCTION, source64=src64, source_lat=src_lat, steps=50, cfg_text=4.0,
                              cfg_img=1.5, interval=(0.4, 1.0)),
        "t2i_6step": dict(prompt=PROMPT, steps=7, cfg_text=4.0, interval=(0.0, 1.0)),
        "edit_6step": dict(prompt=INSTRUCTION, source64=src64, source_lat=src_lat, steps=7, cfg_text=4.0,
                           cfg_img=1.5, interval=(0.4, 1.0)),
        "t2i_6nfe": dict(prompt=PROMPT, steps=7, cfg_text=1.0),
        "edit_6nfe": dict(prompt=INSTRUCTION, source64=src64, source_lat=src_lat, steps=7, cfg_text=1.0, cfg_img=1.0),
    }

    def once(kw, seed):
        probe.reset()
        t0 = time.perf_counter()
        sample.generate(m, tok, vae, scale, seed=seed, **kw)
        t1 = time.perf_counter()
        return (t1 - t0) * 1e3, (probe.t_dec - probe.t_first) * 1e3, probe.nfe

    for w in range(a.warmup):
        for kw in paths.values():
            once(kw, w)
    res = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"), "runs": a.runs,
           "ckpt": a.ckpt, "step": ck.get("step"), "vae": a.vae or ck["vae"],
           "sampling_ms": {}, "e2e_ms": {}, "nfe": {}, "ms_per_nfe": {}}
    for name, kw in paths.items():
        e2e, loop, nfe = [], [], None
        for r in range(a.runs):
            e, s, nfe = once(kw, 100 + r)
            e2e.append(e)
            loop.append(s)
        res["sampling_ms"][name] = round(statistics.median(loop), 2)
        res["e2e_ms"][name] = round(statistics.median(e2e), 2)
        res["nfe"][name] = nfe
        res["ms_per_nfe"][name] = round(statistics.median(loop) / nfe, 3)
    sm = res["sampling_ms"]
    for k in ("t2i", "edit"):
        res[f"{k}_sampling_speedup_6step"] = round(sm[f"{k}_baseline"] / sm[f"{k}_6step"], 2)
        res[f"{k}_sampling_speedup_6nfe"] = round(sm[f"{k}_baseline"] / sm[f"{k}_6nfe"], 2)
    print(json.dumps(res) if a.json else json.dumps(res, indent=2), flush=True)


if __name__ == "__main__":
    main()
