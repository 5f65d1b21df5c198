#!/usr/bin/env python3
"""PyTorch reference timing of the generation loops, through the recipes' reference samplers (issue 5).

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/bench_reference.py \
      --ckpt runs/unified/unified-62200.ckpt --vae runs/vae_dec/vae.ckpt \
      --six runs/dmdo6-4500/dmdo/ckpt.pt --one runs/refl6-mse2.5/ckpt.pt --runs 5 --json

Base (EMA) weights, through hyperbagel.sample.generate(...) unchanged: t2i 50-step CFG baseline, edit 50-step
baseline with text+image CFG on the interval (0.4, 1], and the same sampler with 6 Euler steps (steps=7: sample.py
evaluates steps-1 times), both with the baselines' CFG (*_6step, what the engine's "euler-6" runs when a pack has no
distilled graph) and without CFG (*_6nfe, 6 NFE of the base weights).

With --six / --one (train_gen.py student checkpoints, loaded with train_gen.load_student), the distilled students
through the students' own PyTorch path (as eval_gen.py runs them): one context prefilled by the target
(accel.common.Context, routed MoT prefill; edits: ViT + clean source latent), train_gen.euler (nfe Euler steps on
accel.common.grid(nfe, 3.0), BAGEL's shift; the grid does not change the cost; guidance scales as embedder inputs, no CFG contexts)
and train_gen.decode. Scales are the engine's defaults for its 6nfe/1nfe modes: text 4.0 (sampler_defaults), image
1.5 for edits and 1.0 for t2i. Rows t2i_distilled6 / edit_distilled6 (6 NFE) and t2i_distilled1 / edit_distilled1
(1 NFE; the engine's progressive preview is the t2i one).

NFE are counted by wrapping Ctx.velocity (base rows) or the student's expert_forward (student rows); "sampling" is
first velocity call -> VAE decode call (the Euler loop only), "e2e" is the whole request (context prefills with the
ViT encode for edits, noise, loop, VAE decode; no source VAE encode: the source latent is prepared beforehand; no
image encode).
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyperbagel.utils import setup_threads, positive_int, non_negative_int  # noqa: E402
from hyperbagel.ckpts import require_unified, require_vae  # noqa: E402

setup_threads()
import torch  # noqa: E402

from types import SimpleNamespace  # noqa: E402

from accel.common import SERVE_ONE_TEXT_SCALE, SERVE_SIX_SHIFT, Context  # noqa: E402
from accel.train_gen import decode, euler, load_student  # noqa: E402
from hyperbagel import sample  # noqa: E402
from hyperbagel.config import ModelConfig  # noqa: E402
from hyperbagel.model import Unified, VAE, patchify  # noqa: E402
from hyperbagel.tokenizer import WordTokenizer  # noqa: E402

PROMPT = "a large red circle at the top left on a white background"
INSTRUCTION = "make the circle blue"
CFG_TEXT, CFG_IMG = 4.0, 1.5  # the shipped pack's sampler_defaults; the engine passes them to its distilled graphs


def load(ckpt_path, vae_path):
    ck = require_unified(ckpt_path, "--ckpt", vae=not vae_path)
    m = Unified(ModelConfig.from_dict(ck["config"]))
    m.load_state_dict(ck["ema"])
    m.eval()
    vck = require_vae(vae_path or ck["vae"], "--vae" if vae_path else f"the VAE named in {ckpt_path}")
    if not os.path.isfile(os.path.join(os.path.dirname(ckpt_path), "tokenizer.json")):
        sys.exit(f"--ckpt {ckpt_path!r}: no tokenizer.json beside it (a training run's or import_pack.py's folder has one)")
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

    def watch(self, student):
        """Counts and stamps a student's velocity calls (one expert_forward each; the prefill runs the target)."""
        fwd = student.expert_forward
        probe = self

        def expert_forward(*a):
            if probe.nfe == 0:
                probe.t_first = time.perf_counter()
            probe.nfe += 1
            return fwd(*a)

        student.expert_forward = expert_forward


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True, help="a unified checkpoint with tokenizer.json beside it (e.g. import_pack.py's OUT/unified.ckpt)")
    ap.add_argument("--vae", default=None, help="VAE checkpoint (default: the one named in the unified ckpt)")
    ap.add_argument("--six", default=None, help="6-NFE student ckpt.pt (train_gen dmdo stage): rows *_distilled6")
    ap.add_argument("--one", default=None, help="1-NFE student ckpt.pt (train_gen refl stage): rows *_distilled1")
    ap.add_argument("--runs", type=positive_int, default=5)
    ap.add_argument("--warmup", type=non_negative_int, default=2)
    ap.add_argument("--threads", type=positive_int, default=1, help="torch intra-op threads (recipes use 1)")
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

    students, student_info = {}, {}
    for n, path in ((6, a.six), (1, a.one)):
        if path:
            students[n] = load_student(m, path).eval()
            probe.watch(students[n])
            info = torch.load(path, map_location="cpu")
            student_info[f"distilled{n}"] = {"ckpt": path, "stage": info.get("stage"), "step": info.get("step"),
                                             "nfe": info.get("nfe")}
            del info
            for k, src in (("t2i", None), ("edit", (src64[0], patchify(src_lat, c.latent_patch)[0]))):
                paths[f"{k}_distilled{n}"] = dict(student=n, prompt=PROMPT if src is None else INSTRUCTION, src=src)
    N, td = c.latent_grid ** 2, c.latent_token_dim

    @torch.no_grad()
    def distilled(student, prompt, src, seed):
        """One request through the students' PyTorch path (eval_gen.py's): target prefill, euler, decode."""
        item = {"prompt_ids": tok.encode(prompt), "src_pixels64": None if src is None else src[0],
                "src_tokens": None if src is None else src[1], "with_text": True, "with_img": True}
        gb = SimpleNamespace(full=Context(m, [item], tok))
        xT = torch.randn(1, N, td, generator=torch.Generator().manual_seed(seed))
        # as served: the 6-NFE graph on its serving grid, the 1-NFE graph at its serving text scale
        st = torch.full((1,), SERVE_ONE_TEXT_SCALE if student == 1 else CFG_TEXT)
        si = torch.full((1,), CFG_IMG if src is not None else 1.0)
        x = euler(students[student], xT, gb, st, si, student, SERVE_SIX_SHIFT)[0][-1]
        return decode(vae, scale, c, x)[0].clamp(-1, 1)

    def once(kw, seed):
        probe.reset()
        t0 = time.perf_counter()
        if "student" in kw:
            distilled(kw["student"], kw["prompt"], kw["src"], seed)
        else:
            sample.generate(m, tok, vae, scale, seed=seed, **kw)
        t1 = time.perf_counter()
        return (t1 - t0) * 1e3, (probe.t_dec - probe.t_first) * 1e3, probe.nfe

    for w in range(a.warmup):
        for kw in paths.values():
            once(kw, w)
    res = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"), "runs": a.runs,
           "ckpt": a.ckpt, "step": ck.get("step"), "vae": a.vae or ck["vae"],
           "students": student_info,
           "distilled_scales": {"cfg_text": CFG_TEXT, "cfg_text_1nfe": SERVE_ONE_TEXT_SCALE, "cfg_img_edit": CFG_IMG,
                                "cfg_img_t2i": 1.0, "six_grid_shift": SERVE_SIX_SHIFT},
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
        for n in (6, 1):
            if f"{k}_distilled{n}" in sm:
                res[f"{k}_sampling_speedup_distilled{n}"] = round(sm[f"{k}_baseline"] / sm[f"{k}_distilled{n}"], 2)
                res[f"{k}_e2e_speedup_distilled{n}"] = round(res["e2e_ms"][f"{k}_baseline"]
                                                             / res["e2e_ms"][f"{k}_distilled{n}"], 2)
    print(json.dumps(res) if a.json else json.dumps(res, indent=2), flush=True)


if __name__ == "__main__":
    main()
