#!/usr/bin/env python3
"""Monitoring for the stage table (PyTorch; NOT the project's evaluator, which is `npx hyperbagel eval
geneval|gedit --mode 6nfe|1nfe`): on seeded val conditions (t2i + edit), compares the baseline sampler
(original model, 50 steps, shift 3, dual CFG 4.0/1.5 with interval [0.4,1] and global renorm, 2-3 contexts)
with distilled students (their own grid, one context) from the same noise. Prints JSON per model: latent MSE
to the baseline's output, NFE, and the crude analytic scene reader's match rates (background / objects
present / exact) against the requested scene.

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/accel/eval_gen.py --target runs/unified/unified.ckpt \
      --data data/val --students 6nfe-cfg=runs/gen/cfg/ckpt.pt,6nfe-tscd=runs/gen/tscd/ckpt.pt,6nfe=runs/gen/dmdo/ckpt.pt,1nfe=runs/gen/refl/ckpt.pt"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accel.common import SERVE_ONE_TEXT_SCALE, SERVE_SIX_SHIFT, target_from_args, load_sets, GenBatch, teacher_cfg, gen_velocity, shifted, torch  # noqa: E402
from hyperbagel.ckpts import require_out_folder  # noqa: E402
from accel.train_gen import euler, decode, load_student  # noqa: E402
from hyperbagel.sample import scene_match  # noqa: E402
from hyperbagel.utils import require_ckpt, non_negative_int  # noqa: E402


@torch.no_grad()
def baseline(m, xT, gb, st, si, steps=50, edit_interval=(0.4, 1.0)):
    """sample.py's reference loop: guidance over the whole trajectory for text-to-image (GenEval's
    setting, as the engine and eval_ckpt), over `edit_interval` for edits (GEdit's)."""
    ts = shifted(torch.linspace(1, 0, steps), 3.0)
    x = xT
    B = x.shape[0]
    edit = gb.is_edit.view(B, 1, 1)
    for i in range(steps - 1):
        t, u = float(ts[i]), float(ts[i + 1])
        tt = torch.full((B,), t)
        v = teacher_cfg(m, x, tt, gb, st, si)
        if not edit_interval[0] < t <= edit_interval[1]:
            v = torch.where(edit, gen_velocity(m, x, tt, gb.full), v)
        x = x + (u - t) * v
    return x


def rates(vae, scale, c, x, scenes):
    px = decode(vae, scale, c, x).clamp(-1, 1)
    r = [scene_match(px[b], scenes[b]) for b in range(len(scenes))]
    return {k: sum(int(z[i]) for z in r) / len(r) for i, k in enumerate(("background", "present", "exact"))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default=None)
    ap.add_argument("--data", required=True)
    ap.add_argument("--students", default="", help="name=ckpt.pt,... (nfe from the ckpt's stage)")
    ap.add_argument("--t2i", type=non_negative_int, default=16)
    ap.add_argument("--edit", type=non_negative_int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.t2i + a.edit < 1:
        ap.error("--t2i + --edit must be at least 1")
    require_out_folder(a.out)  # before the evaluation, whose results it would otherwise lose
    # every student spec is checked before the (slow) baseline sampling
    students = []
    for spec in [s for s in a.students.split(",") if s]:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            ap.error(f"--students: {spec!r} is not NAME=ckpt.pt")
        if name in ("baseline", "data_vae_recon") or name in [n for n, _, _ in students]:
            ap.error(f"--students: the name {name!r} is taken")
        students.append((name, path, require_ckpt(path, f"--students {name}", ("student",))))
    m, tok, vae, scale = target_from_args(a)
    if vae is None:
        sys.exit(f"--target {a.target}: its VAE checkpoint (the 'vae' path inside it) is missing")
    # the students must fit the target before the baseline runs
    loaded = [(name, ck, load_student(m, path, f"--students {name}").eval()) for name, path, ck in students]
    c = m.c
    sets = load_sets(a.data, tok, vae, scale)
    gb = GenBatch(m, tok, sets, random.Random(a.seed), a.t2i, a.edit)
    g = torch.Generator().manual_seed(a.seed)
    xT = torch.randn(gb.x0.shape, generator=g)
    st = torch.full((gb.B,), 4.0)
    si = torch.where(gb.is_edit, torch.full((gb.B,), 1.5), torch.ones(gb.B))
    ref = baseline(m, xT, gb, st, si)
    res = {"baseline": {"steps": 50, **rates(vae, scale, c, ref, gb.scenes)}}
    res["data_vae_recon"] = rates(vae, scale, c, gb.x0, gb.scenes)
    for name, ck, s in loaded:
        nfe = ck.get("nfe", 6)
        # as served: the 6-NFE graph on its serving grid, the 1-NFE graph at its serving text scale
        st_s = torch.full((gb.B,), SERVE_ONE_TEXT_SCALE) if nfe == 1 else st
        with torch.no_grad():
            x = euler(s, xT, gb, st_s, si, nfe, SERVE_SIX_SHIFT)[0][-1]
        res[name] = {"stage": ck.get("stage"), "steps": ck.get("step"), "nfe": nfe,
                     "latent_mse_to_baseline": float(((x - ref) ** 2).mean()), **rates(vae, scale, c, x, gb.scenes)}
    if a.out:
        json.dump(res, open(a.out, "w"), indent=2)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
