#!/usr/bin/env python3
"""Smoke test of every recipe stage on tiny synthetic data (< 2 min on 2 cores):
tiny dataset -> train_vae (few steps) -> train_unified (few steps, then resume) -> training/KV-cache consistency
check -> export_pack with parity references into --out.

  /usr/bin/python3 models/recipes/smoke_test.py --out /tmp/smoke
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from hyperbagel.smoke import refused  # noqa: E402


def run(args):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "2"))
    t = time.time()
    p = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"failed: {' '.join(args)}")
    last = [line for line in p.stdout.splitlines() if line.strip()][-1]
    print(f"[{time.time() - t:5.1f}s] {os.path.basename(args[0])}: {last}", flush=True)
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="pack output folder")
    ap.add_argument("--work", default=None, help="scratch folder (default: OUT/../<out>-work)")
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    work = a.work or out.rstrip("/") + "-work"
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    from hyperbagel.utils import setup_threads
    setup_threads()
    from hyperbagel import synth
    data = os.path.join(work, "data")
    synth.write(data, 48)
    run([os.path.join(HERE, "train_vae.py"), "--tiny", "--data", data, "--run", os.path.join(work, "vae"),
         "--steps", "12", "--batch", "16", "--log-every", "4", "--ckpt-every", "6"])
    # a decoder fine-tune keeps --init's encoder and latent scale (here on other data than --init's: --limit), so
    # a model trained on the VAE exports with it (the factorised pack below); resuming it as a full run is refused
    vae_ck, dec_ck = os.path.join(work, "vae", "vae.ckpt"), os.path.join(work, "vae-dec", "vae.ckpt")
    run([os.path.join(HERE, "train_vae.py"), "--tiny", "--data", data, "--run", os.path.dirname(dec_ck), "--init", vae_ck,
         "--decoder-only", "--steps", "1", "--batch", "4", "--limit", "16", "--log-every", "1"])
    import torch
    v0, v1 = (torch.load(x, map_location="cpu") for x in (vae_ck, dec_ck))
    assert v1["scale"] == v0["scale"] and v1["decoder_only"] and all(
        torch.equal(v, v0["ema"][k]) for k, v in v1["ema"].items() if k.startswith("enc.")), (v0["scale"], v1["scale"])
    refused("train_vae", ["--tiny", "--data", data, "--run", os.path.dirname(dec_ck), "--steps", "2"], "--decoder-only")
    refused("train_vae", ["--tiny", "--data", data, "--run", os.path.join(work, "v-neg"), "--obj-weight", "-1"],
            "argument --obj-weight: expected a finite number >= 0")
    urun = os.path.join(work, "unified")
    common = [os.path.join(HERE, "train_unified.py"), "--tiny", "--data", data, "--vae",
              os.path.join(work, "vae", "vae.ckpt"), "--run", urun, "--und", "4", "--t2i", "3", "--edit", "3", "--think", "2",
              "--log-every", "2", "--ckpt-every", "4", "--curriculum", "4,8"]
    run(common + ["--steps", "4"])
    from hyperbagel.utils import LITE_KEYS
    lite = os.path.join(work, "unified-lite.ckpt")
    with open(os.path.join(urun, "loss.csv"), "a") as f:  # a row of a run stopped after step 4's checkpoint
        f.write("6,9,9,9,0,0,0,0\n")
    o = run(common + ["--steps", "8", "--save-lite", lite])  # resumes from step 4
    assert "resumed from" in o, "train_unified did not resume"
    import csv
    steps = [r["step"] for r in csv.DictReader(open(os.path.join(urun, "loss.csv")))]
    assert steps == ["2", "4", "6", "8"], f"resumed loss log: {steps}"
    # resumed == uninterrupted (the data sampler's state is in the checkpoint)
    srun = os.path.join(work, "unified-straight")
    run([x if x != urun else srun for x in common] + ["--steps", "8"])
    got, want = (torch.load(os.path.join(r, "unified.ckpt"), map_location="cpu")["model"] for r in (urun, srun))
    assert all(torch.equal(v, want[k]) for k, v in got.items()), "4 steps + resume to 8 differ from 8 straight"
    # a resume with another VAE (here: another latent scale) is refused, the run left as it was
    vck0 = torch.load(os.path.join(work, "vae", "vae.ckpt"), map_location="cpu")
    other_vae = os.path.join(work, "vae-other.ckpt")
    torch.save({**vck0, "scale": vck0["scale"] * 2}, other_vae)
    p = subprocess.run([sys.executable, *[x if x != os.path.join(work, "vae", "vae.ckpt") else other_vae for x in common],
                        "--steps", "10"], capture_output=True, text=True)
    assert p.returncode != 0 and "latent scale" in p.stderr, p.stderr[-300:]
    # ... and so is an export or an evaluation with it, or with a VAE of another encoder at the same scale
    other_enc = os.path.join(work, "vae-other-enc.ckpt")
    torch.save({**vck0, "ema": {k: v + 0.01 if k.startswith("enc.") else v for k, v in vck0["ema"].items()}}, other_enc)
    for script, extra in (("export_pack", ["--out", out]), ("eval_ckpt", ["--n-und", "0", "--n-gen", "0"])):
        refused(script, ["--ckpt", os.path.join(urun, "unified.ckpt"), "--vae", other_vae, "--data", data, *extra], "latent scale")
        refused(script, ["--ckpt", os.path.join(urun, "unified.ckpt"), "--vae", other_enc, "--data", data, *extra], "encoder differs")
    # arguments checked before any work: a fourth --data set (the curriculum schedules 1, 2 or 3), a folder whose
    # vocabulary the tokenizer lacks (its words would be <unk>), sizes, a cool-down that never starts
    vdata = os.path.join(work, "data-vocab")
    shutil.copytree(data, vdata, dirs_exist_ok=True)
    vmeta = json.load(open(os.path.join(data, "meta.json")))
    json.dump(dict(vmeta, vocabulary=vmeta["vocabulary"] + ["zebra"]), open(os.path.join(vdata, "meta.json"), "w"))
    u0 = ["--tiny", "--vae", vae_ck, "--run", os.path.join(work, "u-refused"), "--steps", "4"]
    for args, msg in ((["--data", ",".join([data] * 4), "--curriculum", "1,2,3"], "the curriculum has schedules for 1, 2 or 3"),
                      (["--data", f"{data},{vdata}", "--curriculum", "2"], "words the tokenizer"),
                      (["--data", data, "--layers", "0"], "argument --layers: expected an integer >= 1"),
                      (["--data", data, "--hidden", "-1"], "argument --hidden: expected an integer >= 1"),
                      (["--data", data, "--shift-aug", "-2"], "argument --shift-aug: expected an integer >= 0"),
                      (["--data", data, "--cooldown-from", "4"], "--cooldown-from 4: the decay must start before --steps 4")):
        refused("train_unified", u0 + args, msg)
    assert not os.path.exists(os.path.join(work, "u-refused")), "a refused run left its folder"
    # the decay reaches 10 % at the last step (a checkpoint of the earlier schedule, mid-decay, keeps it)
    from train_unified import learning_rate
    assert abs(learning_rate(1.0, 9, 0, 1, 8, 10) - 0.1) < 1e-12 and abs(learning_rate(1.0, 8, 0, 1, 8, 10) - 0.55) < 1e-12
    assert abs(learning_rate(1.0, 9, 0, 1, 8, 10, schedule=1) - 0.55) < 1e-12 and learning_rate(1.0, 7, 0, 1, 8, 10) == 1.0
    # a run started from a lite checkpoint (EMA weights + step, no optimizer): how a GPU leg is seeded
    lrun = os.path.join(work, "unified-from-lite")
    # (also with translated understanding images and only the vision encoder trained)
    o = run([x if x != urun else lrun for x in common] + ["--steps", "10", "--warmup", "2", "--init-weights", lite,
                                                          "--shift-aug", "2", "--train-only", "vision"])
    assert "initialised from the EMA weights" in o, "train_unified ignored --init-weights"
    lck = torch.load(os.path.join(lrun, "unified.ckpt"), map_location="cpu")
    assert (lck["step"], lck["warm_from"], lck["train_only"]) == (10, 8, "vision"), (lck["step"], lck["warm_from"])
    # what a run trains is in its checkpoint: a resume that would train other parameters is refused
    refused("train_unified", [x if x != urun else lrun for x in common[1:]] + ["--steps", "12"], "--train-only vision")
    before = torch.load(lite, map_location="cpu")["ema"]
    moved = {k for k, v in lck["model"].items() if not torch.equal(v, before[k])}
    assert moved and all(k.startswith("vision.") for k in moved), f"--train-only vision moved {sorted(moved)[:5]}"
    # --train-only readout: only what writes text moves, and generation and editing stay bitwise the same
    rrun = os.path.join(work, "unified-readout")
    run([x if x != urun else rrun for x in common] + ["--steps", "11", "--warmup", "2", "--init-weights", lite,
                                                      "--train-only", "readout", "--t2i", "0", "--edit", "0"])
    rck = torch.load(os.path.join(rrun, "unified.ckpt"), map_location="cpu")
    from hyperbagel.config import ModelConfig
    from hyperbagel.model import Unified, VAE, readout_parameter, generation_parameter
    from hyperbagel.sample import generate
    from hyperbagel.tokenizer import WordTokenizer
    L = rck["config"]["layers"]
    for part in ("model", "ema"):
        moved = {k for k, v in rck[part].items() if not torch.equal(v, before[k])}
        assert moved and all(readout_parameter(k, L) for k in moved), \
            f"--train-only readout moved {sorted(k for k in moved if not readout_parameter(k, L))[:5]}"
        assert {"lm_head.weight", f"layers.{L - 1}.und.down.weight"} <= moved, sorted(moved)
    # the wider sets: never the generation path (its expert, norm, latent projections, timestep embedder)
    for only in ("vision+readout", "understanding"):
        orun = os.path.join(work, "unified-" + only.replace("+", "-"))
        run([x if x != urun else orun for x in common] + ["--steps", "10", "--warmup", "2", "--init-weights", lite,
                                                          "--train-only", only, "--t2i", "0", "--edit", "0"])
        ock = torch.load(os.path.join(orun, "unified.ckpt"), map_location="cpu")
        moved = {k for k, v in ock["model"].items() if not torch.equal(v, before[k])}
        gen = {k for k in moved if generation_parameter(k)}
        assert any(k.startswith("vision.") for k in moved) and "lm_head.weight" in moved and not gen, (only, sorted(gen)[:5])
        inner = {k for k in moved if ".und." in k and not readout_parameter(k, L)}
        assert bool(inner) == (only == "understanding"), (only, sorted(inner)[:5])
    # --train-only generation: only the generation path moves (so every text output stays the same)
    gorun = os.path.join(work, "unified-generation")
    run([x if x != urun else gorun for x in common] + ["--steps", "10", "--warmup", "2", "--init-weights", lite,
                                                       "--train-only", "generation", "--und", "0", "--think", "0"])
    moved = {k for k, v in torch.load(os.path.join(gorun, "unified.ckpt"), map_location="cpu")["model"].items()
             if not torch.equal(v, before[k])}
    assert moved and all(generation_parameter(k) for k in moved), \
        f"--train-only generation moved {sorted(k for k in moved if not generation_parameter(k))[:5]}"
    vck = torch.load(os.path.join(work, "vae", "vae.ckpt"), map_location="cpu")
    vae = VAE(ModelConfig.from_dict(vck["config"]))
    vae.load_state_dict(vck["ema"])
    # a latent cache that cannot be read (a run killed while writing one) is encoded again, and rewritten whole
    from hyperbagel.data import ShapesData as _SD
    cache = os.path.join(work, "latents-truncated.npz")
    with open(cache, "wb") as f:
        f.write(b"PK\x03\x04 a truncated zip")
    cds = _SD(data, None, limit=4)
    cds.attach_latents(vae.eval(), float(vck["scale"]), cache)
    import numpy as np
    assert np.load(cache)["latents"].shape[0] == 4 and not [f for f in os.listdir(work) if f.startswith("latents-truncated.npz.")], \
        "cache not rebuilt"
    rtok = WordTokenizer.load(os.path.join(rrun, "tokenizer.json"))
    rcfg = ModelConfig.from_dict(rck["config"])
    pair, g = [], torch.Generator().manual_seed(3)
    src = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        G = rcfg.gen_image_size
        src_lat = vae.encode(torch.nn.functional.interpolate(src, size=(G, G), mode="area"))[0] * float(vck["scale"])
    for weights in (before, rck["ema"]):
        mm = Unified(rcfg)
        mm.load_state_dict(weights)
        mm.eval()
        with torch.no_grad():
            t2i = generate(mm, rtok, vae, float(vck["scale"]), "a red circle", steps=3, seed=1)
            edit = generate(mm, rtok, vae, float(vck["scale"]), "make it blue", source64=src,
                            source_lat=src_lat, steps=3, seed=1)
            logits = mm.lm_head(mm.norm(mm.embed(torch.tensor([[rtok.bos]]))))
        pair.append((t2i, edit, logits))
    assert torch.equal(pair[0][0], pair[1][0]) and torch.equal(pair[0][1], pair[1][1]), "--train-only readout changed an image"
    assert not torch.equal(pair[0][2], pair[1][2]), "--train-only readout did not change the text head"
    # warm-starting the factorised vision inputs (foreground-mask channel + colour feature) from the RGB lite
    # checkpoint: the adapted model must compute what the checkpoint did before training moves it
    from hyperbagel.config import ModelConfig
    from hyperbagel.model import Unified, warm_start_state
    lite_ck = torch.load(lite, map_location="cpu")
    fc = ModelConfig.from_dict({**lite_ck["config"], "vit_input": "rgb+mask", "vit_colour": True})
    rgb_m, fac_m = Unified(ModelConfig.from_dict(lite_ck["config"])), Unified(fc)
    rgb_m.load_state_dict(lite_ck["ema"])
    fac_m.load_state_dict(warm_start_state(lite_ck["ema"], fac_m))
    px = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.allclose(rgb_m.vision(px), fac_m.vision(px), atol=1e-6), "warm start changed the vision encoder's output"
    frun = os.path.join(work, "unified-factor")
    o = run([x if x != urun else frun for x in common] + ["--steps", "10", "--warmup", "2", "--init-weights", lite,
                                                          "--vit-input", "rgb+mask", "--vit-colour", "--vit-rgb-drop", "0.5", "--shift-aug", "2",
                                                          "--attr-noise", "0.5", "--factor-drop", "0.5"])
    # --followup: two-turn sequences (data.followup_seq) train, and are laid out as the engine feeds a
    # session's second turn: ... a1 <eos> q2 <|im_start|> a2 <eos>, with both answers (and their EOS) as targets
    furun = os.path.join(work, "unified-followup")
    o = run([x if x != urun else furun for x in common] + ["--steps", "12", "--warmup", "2", "--init-weights", lite,
                                                           "--train-only", "readout", "--followup", "0.5"])
    assert os.path.exists(os.path.join(furun, "unified.ckpt")), o[-300:]
    # its checkpoint counts the two-turn samples, from which export_pack declares prompts.session_context "conversation"
    assert torch.load(os.path.join(furun, "unified.ckpt"), map_location="cpu")["followup_samples"] > 0
    p = subprocess.run([sys.executable] + [x if x != urun else furun for x in common] + ["--steps", "14", "--followup", "1.5"], capture_output=True, text=True)
    assert p.returncode != 0 and "--followup 1.5" in p.stderr, p.stderr[-300:]
    import random as _random
    from hyperbagel.data import followup_seq, ShapesData
    from hyperbagel.tokenizer import WordTokenizer as _WT
    ftok = _WT.load(os.path.join(furun, "tokenizer.json"))
    fds = ShapesData(data, ftok, limit=4)
    for k in range(8):
        sq = followup_seq(ftok, fds, k % 4, _random.Random(k), 4)
        ids, labels = sq.ids, sq.labels
        e1 = ids.index(ftok.eos)  # the first answer's EOS, read back as input
        assert ids[:2] == [ftok.bos, ftok.vision_start] and ids.count(ftok.im_start) == 2, ids
        assert labels[e1 - 1] == ftok.eos and labels[e1] == -100, (labels, e1)  # a1's last token predicts it; it predicts nothing
        i2 = len(ids) - 1 - ids[::-1].index(ftok.im_start)
        assert labels[-1] == ftok.eos and all(y != -100 for y in labels[i2:]), labels  # a2 and its EOS are targets
        assert sq.pos == sorted(sq.pos) and sq.pos[-1] == len(ids) - 4, "positions run on through both turns (the 4-token image block is one)"
    fck = torch.load(os.path.join(frun, "unified.ckpt"), map_location="cpu")
    assert fck["config"]["vit_input"] == "rgb+mask" and fck["config"]["vit_colour"], fck["config"]
    assert fck["model"]["vision.stem.0.weight"][:, 3].abs().sum() > 0 and fck["model"]["vision.colour.weight"].abs().sum() > 0, \
        "the new vision weights did not train"
    # growth: a deeper model warm-started from the lite checkpoint draws exactly what it did (identity layers
    # appended), then trains its new layers; a shallower one is refused
    L0 = lite_ck["config"]["layers"]
    deep = Unified(ModelConfig.from_dict({**lite_ck["config"], "layers": L0 + 1}))
    deep.load_state_dict(warm_start_state(lite_ck["ema"], deep))
    shallow = Unified(ModelConfig.from_dict(lite_ck["config"]))
    shallow.load_state_dict(lite_ck["ema"])
    with torch.no_grad():
        drawn = [generate(mm.eval(), rtok, vae, float(vck["scale"]), "a red circle", steps=3, seed=2) for mm in (shallow, deep)]
    assert torch.equal(drawn[0], drawn[1]), "growing the model changed what it draws"
    grun = os.path.join(work, "unified-grown")
    run([x if x != urun else grun for x in common] + ["--steps", "10", "--warmup", "2", "--init-weights", lite,
                                                      "--layers", str(L0 + 1), "--cooldown-from", "8"])
    gck = torch.load(os.path.join(grun, "unified.ckpt"), map_location="cpu")
    assert gck["config"]["layers"] == L0 + 1 and gck["model"][f"layers.{L0}.und.o_proj.weight"].abs().sum() > 0, \
        "the grown layer did not train"
    glr = [r["lr"] for r in csv.DictReader(open(os.path.join(grun, "loss.csv")))]
    assert glr[-1] == "1.00e-04", f"the cool-down did not reach 10 % at the last step: {glr}"
    p = subprocess.run([sys.executable, *[x if x != urun else grun + "-no" for x in common], "--steps", "10",
                        "--init-weights", lite, "--layers", str(L0 - 1)], capture_output=True, text=True)
    assert p.returncode != 0 and "cannot warm-start from a deeper checkpoint" in p.stderr, p.stderr[-300:]
    # interpolate_ckpt: base + alpha * (tuned - base) over the EMA weights; models that differ are refused
    wout = os.path.join(work, "unified-interp", "unified.ckpt")
    run([os.path.join(HERE, "interpolate_ckpt.py"), "--base", lite, "--tuned", os.path.join(furun, "unified.ckpt"),
         "--alpha", "0.25", "--out", wout])
    wa, wb, wi = lite_ck["ema"], torch.load(os.path.join(furun, "unified.ckpt"), map_location="cpu")["ema"], torch.load(wout, map_location="cpu")
    assert wi["step"] == lite_ck["step"] and wi["config"] == lite_ck["config"], "not the base's step and config"
    moved = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert moved and all(torch.allclose(wi["ema"][k], wa[k] + 0.25 * (wb[k] - wa[k])) for k in wa), "not base + 0.25 (tuned - base)"
    for bad, msg in ((["--alpha", "1.5"], "--alpha 1.5"), (["--tuned", os.path.join(grun, "unified.ckpt")], "different model configs")):
        args = {"--base": lite, "--tuned": os.path.join(furun, "unified.ckpt"), "--alpha": "0.5", "--out": wout + ".bad"}
        args.update(dict(zip(bad[::2], bad[1::2])))
        p = subprocess.run([sys.executable, os.path.join(HERE, "interpolate_ckpt.py"), *[x for kv in args.items() for x in kv]], capture_output=True, text=True)
        assert p.returncode != 0 and msg in p.stderr and not os.path.exists(wout + ".bad"), p.stderr[-300:]
    import numpy as np
    import random
    from hyperbagel.data import shifted, attribute_noise
    # attribute noise swaps colour/shape words within their group only, never other words
    groups = [(1, 2, 3), (7, 8)]
    seq = [1, 5, 7, 9, 2, 8]
    outs = [attribute_noise(seq, groups, random.Random(k), 1.0) for k in range(50)]
    assert all(o[1] == 5 and o[3] == 9 and o[0] in groups[0] and o[2] in groups[1] and o[4] in groups[0] for o in outs)
    assert any(o != seq for o in outs) and attribute_noise(seq, groups, random.Random(0), 0.0) == seq
    # --factor-drop: an image that hides colour reads the same whatever its objects' colour; one that hides
    # shape reads the same for two shapes of one colour covering the same pixels of one token; hide 0 is the
    # usual path, bitwise
    from hyperbagel.model import VisionEncoder
    from hyperbagel.data import understanding_seq, HIDE_SHAPE, HIDE_COLOUR
    assert (HIDE_SHAPE, HIDE_COLOUR) == (VisionEncoder.HIDE_SHAPE, VisionEncoder.HIDE_COLOUR)
    ve = fac_m.vision.eval()
    px = torch.full((4, 3, 64, 64), 0.9)
    px[0, :, 20:30, 20:30] = torch.tensor([0.9, -0.9, -0.9]).view(3, 1, 1)  # red square
    px[1, :, 20:30, 20:30] = torch.tensor([-0.9, -0.9, 0.9]).view(3, 1, 1)  # blue square
    px[2, :, 16:24, 16:24] = torch.tensor([0.9, -0.9, -0.9]).view(3, 1, 1)  # red, one sub-patch ...
    px[3, :, 24:32, 24:32] = torch.tensor([0.9, -0.9, -0.9]).view(3, 1, 1)  # ... another sub-patch of the same token
    with torch.no_grad():
        seen = ve(px)
        assert torch.equal(seen, ve(px, hide=torch.zeros(4, dtype=torch.long))), "hide 0 changed the encoder's output"
        hid = ve(px, hide=torch.tensor([HIDE_COLOUR, HIDE_COLOUR, HIDE_SHAPE, HIDE_SHAPE]))
    assert not torch.allclose(seen[0], seen[1]) and torch.allclose(hid[0], hid[1], atol=1e-5), "colour still shows"
    assert not torch.allclose(seen[2], seen[3]) and torch.allclose(hid[2], hid[3], atol=1e-5), "shape still shows"
    # a hiding sample is a caption (prompt id 11, not the question 4) without labels on the hidden group's words
    stub_ds = type("Data", (), {"cap_ids": [[5, 1, 7, 9, 2, 8]], "qa_ids": [[([4], [3])]]})()
    stub_tok = type("Tok", (), {"bos": 0, "vision_start": 0, "vision_end": 0, "im_start": 0, "eos": 6,
                                "encode": staticmethod(lambda text: [11])})()
    for k in range(20):
        fs = understanding_seq(stub_tok, stub_ds, 0, random.Random(k), 1, factor_drop=(groups, 1.0))
        hidden = groups[1] if fs.vit_hide[0] == HIDE_SHAPE else groups[0]
        labels = [y for y in fs.labels if y != -100]
        assert fs.vit_hide[0] in (HIDE_SHAPE, HIDE_COLOUR) and 11 in fs.ids and 4 not in fs.ids, "not a caption"
        assert not set(labels) & set(hidden) and labels == [y for y in [5, 1, 7, 9, 2, 8, 6] if y not in hidden], labels
    # --factor-drop-words: the hidden group's words as read are random ones of that group, the others are kept
    read = []
    for k in range(40):
        fs = understanding_seq(stub_tok, stub_ds, 0, random.Random(k), 1, factor_drop=(groups, 1.0, True))
        hidden = groups[1] if fs.vit_hide[0] == HIDE_SHAPE else groups[0]
        ans = fs.ids[-6:]
        assert all((r in hidden) if t in hidden else r == t for r, t in zip(ans, [5, 1, 7, 9, 2, 8])), ans
        read.append(tuple(ans))
    assert len(set(read)) > 2, "the hidden words were not randomised"
    # the two-turn samples carry the same regularisers: a hiding image opens with the caption and neither
    # answer trains the hidden words; attribute noise changes what is read in both answers, never the targets
    from hyperbagel.data import followup_seq
    for k in range(20):
        fs = followup_seq(stub_tok, stub_ds, 0, random.Random(k), 1, factor_drop=(groups, 1.0))
        hidden = groups[1] if fs.vit_hide[0] == HIDE_SHAPE else groups[0]
        labels = [y for y in fs.labels if y != -100]
        assert fs.vit_hide[0] in (HIDE_SHAPE, HIDE_COLOUR) and fs.ids.index(11) < fs.ids.index(4), "not caption first"
        assert labels == [y for y in [5, 1, 7, 9, 2, 8, 6, 3, 6] if y not in hidden], labels
    assert followup_seq(stub_tok, stub_ds, 0, random.Random(1), 1).vit_hide == [0], "no factor_drop hid an attribute"
    noisy = [followup_seq(stub_tok, stub_ds, 0, random.Random(k), 1, noise=(groups, 1.0)) for k in range(20)]
    assert all(sorted(y for y in fs.labels if y != -100) == sorted([5, 1, 7, 9, 2, 8, 6, 3, 6]) for fs in noisy), "targets changed"
    assert any(fs.ids[fs.ids.index(11) + 2:fs.ids.index(11) + 8] != [5, 1, 7, 9, 2, 8] for fs in noisy), "nothing read was noised"
    img = np.zeros((64, 64, 3), np.uint8)
    img[:] = 9
    img[10:20, 30:40] = 200
    sh = shifted(img, 3, -2)
    assert (sh[8:18, 33:43] == 200).all() and sh.sum() == img.sum() and (shifted(img, 0, 0) == img).all()
    # training forward == exported KV-cache path
    from hyperbagel.consistency import check
    from hyperbagel.data import ShapesData
    from hyperbagel.model import Unified
    from hyperbagel.config import ModelConfig
    from hyperbagel.tokenizer import WordTokenizer
    ck = torch.load(os.path.join(urun, "unified.ckpt"), map_location="cpu")
    m = Unified(ModelConfig.from_dict(ck["config"]))
    m.load_state_dict(ck["model"])
    tok = WordTokenizer.load(os.path.join(urun, "tokenizer.json"))
    ds = ShapesData(data, tok, limit=4)
    ds.latents = torch.randn(4, m.c.latent_channels, m.c.latent_size, m.c.latent_size).numpy()
    ds.edited_latents = ds.latents
    from make_fixture import randomize
    randomize(m, torch.Generator().manual_seed(0))  # random heads so the comparison is not trivially zero
    d = check(m, tok, ds)
    print(f"training forward vs KV-cache path: max |diff| {d:.2e}", flush=True)
    assert d < 1e-4, d
    run([os.path.join(HERE, "export_pack.py"), "--ckpt", os.path.join(urun, "unified.ckpt"), "--data", data,
         "--out", out, "--name", "smoke", "--parity"])
    # a failed export into an existing pack leaves it as it was
    def snapshot(folder):
        return {os.path.relpath(os.path.join(dp, f), folder): open(os.path.join(dp, f), "rb").read()
                for dp, _, fs in os.walk(folder) for f in fs}
    pack0 = snapshot(out)
    p = subprocess.run([sys.executable, os.path.join(HERE, "export_pack.py"), "--ckpt", os.path.join(frun, "unified.ckpt"),
                        "--data", os.path.join(work, "no-data"), "--out", out], capture_output=True, text=True)
    assert p.returncode != 0 and "--data" in p.stderr and snapshot(out) == pack0, p.stderr[-300:]
    # the factorised vision encoder through ONNX: onnxruntime-node checks its parity refs (test/recipes/smoke.test.ts)
    run([os.path.join(HERE, "export_pack.py"), "--ckpt", os.path.join(frun, "unified.ckpt"), "--data", data, "--vae", dec_ck,
         "--out", os.path.join(work, "factor-pack"), "--name", "smoke-factor", "--parity", "--understand-offset", "1,-1"])
    fman = json.load(open(os.path.join(work, "factor-pack", "manifest.json")))
    assert fman["vision"]["understand_offset"] == [1, -1], fman["vision"]
    # a checkpoint that records an offset (import_pack.py writes the pack's) exports it without the flag
    orun = os.path.join(work, "u-offset")
    os.makedirs(orun, exist_ok=True)
    shutil.copy(os.path.join(frun, "tokenizer.json"), orun)
    ock = torch.load(os.path.join(frun, "unified.ckpt"), map_location="cpu")
    torch.save({**{k: ock[k] for k in LITE_KEYS if k in ock}, "vae": ock["vae"], "understand_offset": [-2, 3]},
               os.path.join(orun, "unified.ckpt"))
    run([os.path.join(HERE, "export_pack.py"), "--ckpt", os.path.join(orun, "unified.ckpt"), "--data", data,
         "--out", os.path.join(work, "offset-pack"), "--name", "smoke-offset"])
    assert json.load(open(os.path.join(work, "offset-pack", "manifest.json")))["vision"]["understand_offset"] == [-2, 3]
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert man["prompts"].get("think") is True, "a run trained with --think must export prompts.think"
    # the words every think prompt began with (the engine frames a think prompt without them)
    assert man["prompts"].get("think_prefix") == "a photo of", man["prompts"]
    # word handling: untrained words are the vocabulary words no training text (nor the caption prompt) uses,
    # and pack_words.py, which brings an exported pack up to date, writes the same
    from hyperbagel.tokenizer import WordTokenizer as _WT2, fold
    from hyperbagel.data import record_texts
    seen = set(fold("describe the image").split()) | {w for t in record_texts(data) for w in fold(t).split()}
    vocab = _WT2.load(os.path.join(out, "tokenizer.json")).vocab
    assert man["untrained_words"] == sorted(w for w in vocab[10:] if w not in seen and fold(w) == w), man["untrained_words"]
    assert fold("Is there AN orange square NOW in this picture, colour?").split() == \
        ["is", "there", "a", "orange", "square", "in", "the", "image,", "color?"]
    pack1 = snapshot(out)
    run([os.path.join(HERE, "pack_words.py"), "--pack", out, "--data", data])
    after = snapshot(out)
    assert json.loads(after["manifest.json"]) == json.loads(pack1["manifest.json"]) and after["tokenizer.json"] == pack1["tokenizer.json"]
    p = subprocess.run([sys.executable, os.path.join(HERE, "export_pack.py"), "--ckpt", os.path.join(urun, "unified.ckpt"), "--data", data,
                        "--train-data", os.path.join(work, "no-data"), "--out", out], capture_output=True, text=True)
    assert p.returncode != 0 and "--train-data" in p.stderr and snapshot(out) == after, p.stderr[-300:]
    p = subprocess.run([sys.executable, os.path.join(HERE, "pack_words.py"), "--pack", out, "--data", os.path.join(work, "no-data")],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "--data" in p.stderr and snapshot(out) == after, p.stderr[-300:]
    assert man["prompts"].get("session_context") == "image", "a run without two-turn samples reads one question per image"
    # the retrieval datastore: captions, VQA answers and (the pack thinks) short prompt -> caption
    run([os.path.join(HERE, "build_retrieval.py"), "--records", os.path.join(data, "records.jsonl"), "--pack", out])
    rec = [json.loads(x) for x in open(os.path.join(data, "records.jsonl")) if x.strip()]
    want = {("describe the image", r["caption"]) for r in rec} | {(q["question"], q["answer"]) for r in rec for q in r["qa"]} \
        | {(p, r["caption"]) for r in rec for p in r["prompts"][1:]}
    store = json.load(open(os.path.join(out, "retrieval.json")))
    assert store["source"]["sequences"] == len(want), (store["source"], len(want))
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert man["retrieval"] == "retrieval.json"
    for g in man["graphs"].values():
        assert os.path.exists(os.path.join(out, g["file"])), g["file"]
    # the vision-encoder probe (docs/results.md, held-out captions): trains, scores, prints its JSON
    o = run([os.path.join(HERE, "probe_vision.py"), "--tiny", "--train", data, "--val", data, "--heldout", data,
             "--steps", "3", "--batch", "8", "--shift-aug", "2", "--clip-grad", "1.0", "--vit-input", "mask", "--vit-colour", "--json"])
    probe = json.loads(o.strip().splitlines()[-1])
    assert probe["shift_aug"] == 2 and probe["clip_grad"] == 1.0 and probe["vit_input"] == "mask" and 0 <= probe["val"]["all"] <= 1 and "all" in probe["heldout"], probe
    # malformed inputs: one line naming the problem, nothing overwritten (the file listed is unchanged)
    import numpy as np
    vae_ck = os.path.join(work, "vae", "vae.ckpt")
    short = os.path.join(work, "data-short")
    shutil.copytree(data, short, dirs_exist_ok=True)
    np.save(os.path.join(short, "images.npy"), np.load(os.path.join(data, "images.npy"))[:2])
    trunc = os.path.join(work, "data-trunc")
    shutil.copytree(data, trunc, dirs_exist_ok=True)
    with open(os.path.join(data, "images.npy"), "rb") as f:
        head = f.read(300)
    with open(os.path.join(trunc, "images.npy"), "wb") as f:
        f.write(head)
    for split in ("val", "test", "heldout"):  # evaluation exports (meta.json split) are refused as training data
        shutil.copytree(data, os.path.join(work, f"data-{split}"), dirs_exist_ok=True)
        with open(os.path.join(work, f"data-{split}", "meta.json"), "w") as f:
            json.dump(dict(json.load(open(os.path.join(data, "meta.json"))), split=split), f)
    bad_run = os.path.join(work, "u-corrupt")
    os.makedirs(bad_run, exist_ok=True)
    with open(os.path.join(bad_run, "unified.ckpt"), "wb") as f:
        f.write(b"not a checkpoint")
    cases = [
        (["train_unified.py", "--tiny", "--data", data, "--vae", vae_ck, "--run", os.path.join(work, "u-bad"), "--steps", "1",
          "--save-lite", vae_ck], "is also --vae", vae_ck),
        (["train_unified.py", "--tiny", "--data", short, "--vae", vae_ck, "--run", os.path.join(work, "u-bad2"), "--steps", "1"],
         "images.npy holds 2 images for", None),
        (["train_vae.py", "--tiny", "--data", trunc, "--run", os.path.join(work, "v-bad"), "--steps", "1"], "images.npy cannot be read", None),
        (["train_unified.py", "--tiny", "--data", f"{data},{os.path.join(work, 'data-test')}", "--vae", vae_ck, "--run",
          os.path.join(work, "u-test"), "--steps", "1"], 'is the test split (meta.json "split": "test")', None),
        (["train_vae.py", "--tiny", "--data", os.path.join(work, "data-heldout"), "--run", os.path.join(work, "v-heldout"), "--steps", "1"],
         "is the heldout split", None),
        (["train_vae.py", "--tiny", "--data", os.path.join(work, "data-val"), "--run", os.path.join(work, "v-val"), "--steps", "1"],
         "is the val split", None),
        (["interpolate_ckpt.py", "--base", lite, "--tuned", os.path.join(furun, "unified.ckpt"), "--alpha", "0.5", "--out", lite],
         "is also --base", lite),
        (["interpolate_ckpt.py", "--base", lite, "--tuned", os.path.join(furun, "unified.ckpt"), "--alpha", "0.5",
          "--out", os.path.join(urun, "unified.ckpt")], "training run's checkpoint", os.path.join(urun, "unified.ckpt")),
        (["import_pack.py", "--pack", out, "--out", urun], "training run's checkpoint", os.path.join(urun, "unified.ckpt")),
        (["import_pack.py", "--pack", out, "--out", out], "is the pack itself", os.path.join(out, "manifest.json")),
        (["build_retrieval.py", "--records", os.path.join(data, "records.jsonl"), "--pack", out, "--out", "decoder.onnx"],
         "a new .json file name", os.path.join(out, "decoder.onnx")),
        (["make_fixture.py", "--out", out], "not the tiny-pack fixture", os.path.join(out, "manifest.json")),
        (["train_unified.py", "--tiny", "--data", data, "--vae", vae_ck, "--run", bad_run, "--steps", "1"], "cannot read",
         os.path.join(bad_run, "unified.ckpt")),
        (["train_unified.py", "--tiny", "--data", data, "--vae", vae_ck, "--run", lite, "--steps", "1"], "is a file", lite),
        (["export_pack.py", "--ckpt", os.path.join(frun, "unified.ckpt"), "--data", data, "--out", out,
          "--understand-offset", "2"], "expected DX,DY", os.path.join(out, "manifest.json")),
        (["export_pack.py", "--ckpt", os.path.join(frun, "unified.ckpt"), "--data", data, "--out", out,
          "--understand-offset", "9,0"], "each move at most 8 pixels", os.path.join(out, "manifest.json")),
    ]
    for args, msg, kept in cases:
        before = open(kept, "rb").read() if kept else None
        p = subprocess.run([sys.executable, os.path.join(HERE, args[0]), *args[1:]], capture_output=True, text=True,
                           env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        assert p.returncode != 0 and msg in p.stderr and "Traceback" not in p.stderr, (args[0], p.stderr[-400:])
        assert kept is None or open(kept, "rb").read() == before, f"{args[0]} changed {kept}"
    assert not any(os.path.exists(os.path.join(work, r)) for r in ("u-test", "v-heldout", "v-val")), "a refused run left its folder"
    print(f"smoke test OK in {time.time() - t0:.1f}s: {out}", flush=True)


if __name__ == "__main__":
    main()
