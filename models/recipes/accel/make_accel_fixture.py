#!/usr/bin/env python3
"""Writes test/fixtures/tiny-pack-accel: a copy of test/fixtures/tiny-pack plus random-weight draft.onnx,
denoise_6nfe.onnx and denoise_1nfe.onnx (for the SAME random target as tiny-pack, rebuilt with make_fixture's
seed and checked against tiny-pack's decoder parity reference), manifest entries and parity references.
Deterministic.

  /usr/bin/python3 models/recipes/accel/make_accel_fixture.py [--src test/fixtures/tiny-pack] [--out test/fixtures/tiny-pack-accel]"""
import argparse
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accel.common import torch  # noqa: E402
from accel.draft import Draft, DraftConfig  # noqa: E402
from accel.gen import Student  # noqa: E402
from accel.export_accel import export_into  # noqa: E402
from make_fixture import WORLD_VOCAB, build, randomize  # noqa: E402


def check_same_target(model, src):
    """The rebuilt target must reproduce tiny-pack's decoder_prefill reference."""
    j = json.load(open(os.path.join(src, "parity", "decoder_prefill.json")))
    t = lambda v: torch.tensor(v["data"], dtype=torch.int64 if v["dtype"] == "int64" else torch.float32  # noqa: E731
                               ).reshape(v["dims"])
    ins = [t(v) for v in j["inputs"].values()]
    L = model.c.layers
    past = [(ins[3 + 2 * i], ins[4 + 2 * i]) for i in range(L)]
    with torch.no_grad():
        x, _, _ = model.expert_forward("und", ins[0], ins[1], ins[2], past)
        lg = model.lm_head(model.norm(x))
    d = float((lg - t(j["outputs"]["logits"])).abs().max())
    assert d < 1e-4, f"rebuilt target differs from {src} (max |diff| {d}); regenerate tiny-pack first"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", default="test/fixtures/tiny-pack")
    ap.add_argument("--out", default="test/fixtures/tiny-pack-accel")
    a = ap.parse_args()
    torch.set_num_threads(1)
    tok, c, model, vae = build(WORLD_VOCAB)
    check_same_target(model, a.src)
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    shutil.copytree(a.src, a.out)
    torch.manual_seed(0)
    d = Draft(model, DraftConfig.of("full"))
    randomize(d, torch.Generator().manual_seed(11))  # every weight random (no zero-init), outputs informative
    six, one = Student(model), Student(model)
    for s, seed in ((six, 12), (one, 13)):
        randomize(s.text_scale_embed, torch.Generator().manual_seed(seed))
        randomize(s.image_scale_embed, torch.Generator().manual_seed(seed + 100))
    with torch.no_grad():  # make the 1-NFE graph differ from the 6-NFE one beyond the embedders
        one.m.llm2vae.weight.mul_(1.1)
    export_into(a.out, c, d, six, one, parity=True, one_text_scale=4.0,  # the fixture's tests expect 4 for both graphs
                provenance={"fixture": "random weights (draft, scale embedders); meaningless outputs"})
    man = json.load(open(os.path.join(a.out, "manifest.json")))
    man["name"] = "tiny-pack-accel"
    man["description"] = ("tiny-pack plus random-weight draft.onnx / denoise_6nfe.onnx / denoise_1nfe.onnx for engine "
                          "tests. Outputs are meaningless.")
    json.dump(man, open(os.path.join(a.out, "manifest.json"), "w"), indent=2)
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(a.out) for f in fs)
    print(f"wrote {a.out}: {total / 1024:.0f} KB", flush=True)


if __name__ == "__main__":
    main()
