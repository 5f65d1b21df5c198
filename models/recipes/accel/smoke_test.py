#!/usr/bin/env python3
"""Smoke test of every acceleration stage on tiny synthetic data from a RANDOM-INIT TINY target (< 2 min on
2 cores): draft data regeneration -> train_draft (full, then resume; eagle3/noinit/noce a few steps) ->
TTT-vs-KV-cache consistency -> eval_draft (chain, K=10, lossless check) -> reward -> cfg (then resume) -> tscd
-> dmdo -> adp -> refl -> export_pack (base graphs) + export_accel (draft / 6-NFE / 1-NFE) with parity into --out.
Writes OUT/accel_smoke.json with the measured numbers.

  /usr/bin/python3 models/recipes/accel/smoke_test.py --out /tmp/accel-smoke"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPES = os.path.dirname(HERE)
sys.path.insert(0, RECIPES)
from hyperbagel.smoke import refused  # noqa: E402


def run(args, expect=None):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "2"))
    t = time.time()
    p = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"failed: {' '.join(args)}")
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    print(f"[{time.time() - t:5.1f}s] {os.path.basename(args[0])} {args[2] if args[1] == '--stage' else ''}: "
          f"{lines[-1] if lines else ''}", flush=True)
    if expect:
        assert expect in p.stdout, f"{args[0]}: expected '{expect}' in output"
    return p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="pack output folder")
    ap.add_argument("--work", default=None, help="scratch folder (default: OUT-work, emptied first)")
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    work = a.work or out.rstrip("/") + "-work"
    if not a.work and os.path.isdir(work):
        # the runs must start fresh (a run at its --steps already is left as it is, not resumed)
        shutil.rmtree(work)
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    from accel.common import random_target, save_target, torch
    from accel.draft import Draft, DraftConfig, check_ttt
    from hyperbagel import synth
    data, val = os.path.join(work, "data"), os.path.join(work, "val")
    synth.write(data, 40, seed=0)
    synth.write(val, 8, seed=1)
    # one shared vocabulary: the train set's (val words are a subset of the synthetic grammar)
    words = sorted(set(json.load(open(os.path.join(data, "meta.json")))["vocabulary"]) |
                   set(json.load(open(os.path.join(val, "meta.json")))["vocabulary"]))
    m, tok, vae, scale = random_target(words, seed=0)
    T = os.path.join(work, "target", "unified.ckpt")
    save_target(T, m, tok, vae, scale)
    res = {}
    P = lambda f: os.path.join(HERE, f)  # noqa: E731
    W = lambda f: os.path.join(work, f)  # noqa: E731
    # ---- draft ----
    run([P("draft_data.py"), "--target", T, "--data", data, "--out", W("draft_train.jsonl"), "--count", "40",
         "--max-new", "16"])
    run([P("draft_data.py"), "--target", T, "--data", val, "--out", W("draft_test.jsonl"), "--count", "8",
         "--max-new", "16"])
    dcommon = [P("train_draft.py"), "--target", T, "--train", W("draft_train.jsonl"), "--batch", "8",
               "--log-every", "5", "--ckpt-every", "10", "--ttt", "3"]
    # a dataset's records.jsonl is draft_data.py's input, not draft data: one line, and no run folder left behind
    p = subprocess.run([sys.executable, P("train_draft.py"), "--target", T, "--train", os.path.join(data, "records.jsonl"),
                        "--run", W("draft_bad"), "--steps", "1"], capture_output=True, text=True)
    assert p.returncode != 0 and "not draft data" in p.stderr and "Traceback" not in p.stderr and not os.path.exists(W("draft_bad")), p.stderr[-300:]
    run(dcommon + ["--run", W("draft_full"), "--variant", "full", "--steps", "10"])
    run(dcommon + ["--run", W("draft_full"), "--variant", "full", "--steps", "20"], expect="resumed from")
    for v in ("eagle3", "noinit", "noce"):
        run(dcommon + ["--run", W(f"draft_{v}"), "--variant", v, "--steps", "10"])
    for v in ("full", "eagle3"):
        d = Draft(m, DraftConfig.of(v))
        with torch.no_grad():
            for p in d.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
        diff = check_ttt(d)
        print(f"draft {v}: training-time-test unroll vs KV-cache inference path max |diff| {diff:.2e}", flush=True)
        assert diff < 1e-4, diff
        res[f"ttt_consistency_{v}"] = diff
    o = run([P("eval_draft.py"), "--target", T, "--test", W("draft_test.jsonl"), "--limit", "4", "--max-new", "16", "--out",
             W("draft_eval.json"), "--drafts", ",".join(W(f"draft_{v}") for v in ("eagle3", "full", "noinit", "noce"))])
    ev = json.load(open(W("draft_eval.json")))
    assert all(r["lossless"] for r in ev["ablation"]), "speculative output differs from plain greedy"
    # a pack that reads images at an offset (vision.understand_offset): its rows record it, training and eval read it
    run([P("draft_data.py"), "--target", T, "--data", val, "--out", W("draft_off.jsonl"), "--count", "3",
         "--max-new", "16", "--image-offset", "2,-1"])
    # a negative first move in the = form (pipeline.sh passes it so); a move the engine would refuse is refused
    run([P("draft_data.py"), "--target", T, "--data", val, "--out", W("draft_neg.jsonl"), "--count", "1",
         "--max-new", "4", "--image-offset=-2,1"])
    assert json.loads(open(W("draft_neg.jsonl")).readline())["offset"] == [-2, 1]
    p = subprocess.run([sys.executable, P("draft_data.py"), "--target", T, "--data", val, "--out", W("draft_far.jsonl"),
                        "--count", "1", "--image-offset", "9,0"], capture_output=True, text=True)
    assert p.returncode != 0 and "each move at most 8 pixels" in p.stderr and not os.path.exists(W("draft_far.jsonl")), p.stderr[-300:]
    from accel.train_draft import DraftData
    off = DraftData(W("draft_off.jsonl"), tok)
    assert all(r["offset"] == [2, -1] for r in off.rows) and off.seq(0, m.c.vit_grid ** 2).vit[0][2:] == (2, -1)
    p = subprocess.run([sys.executable, P("draft_data.py"), "--target", T, "--data", val, "--out", W("draft_off.jsonl"),
                        "--count", "4", "--max-new", "16"], capture_output=True, text=True)
    assert p.returncode != 0 and "read images at offset [2, -1], not 0,0" in p.stderr and "Traceback" not in p.stderr, p.stderr[-300:]
    # two runs of one variant (a copy here; two lengths or seeds in use) are two rows, each with its run
    shutil.copytree(W("draft_full"), W("draft_full_copy"))
    run([P("eval_draft.py"), "--target", T, "--test", W("draft_off.jsonl"), "--limit", "2", "--max-new", "16", "--out",
         W("draft_eval_off.json"), "--drafts", W("draft_full") + "," + W("draft_full_copy")])
    rows_off = json.load(open(W("draft_eval_off.json")))["ablation"]
    assert all(r["lossless"] for r in rows_off) and [r["run"] for r in rows_off] == [W("draft_full"), W("draft_full_copy")], rows_off
    res["draft_eval"] = ev
    # ---- generation ----
    from accel.common import load_sets
    from accel.gen import check_student_init
    diff = check_student_init(m, tok, load_sets(data, tok, vae, scale))
    print(f"fresh 6-NFE student vs teacher conditional velocity: max |diff| {diff:.2e}", flush=True)
    assert diff < 1e-5, diff
    res["student_init_vs_teacher"] = diff
    run([P("train_reward.py"), "--target", T, "--data", data, "--run", W("reward"), "--steps", "20", "--batch", "16",
         "--log-every", "10", "--ckpt-every", "10"])
    import random as _r
    from accel.hard_negatives import perturb
    for p in ("a photo of a green star and a red square", "a photo of a star right of a square", "a photo of three circles"):
        ns = perturb(p.split(), _r.Random(0), 3)
        assert ns and all(len(n) == len(p.split()) and n != p.split() for n in ns), (p, ns)
    # "a star and a square" = "a square and a star": unbound shapes must not be swapped
    assert "a photo of a square and a star".split() not in perturb("a photo of a star and a square".split(), _r.Random(0), 9)
    # the order-aware reward with hard negatives (a ReFL option, not the pipeline's default)
    run([P("train_reward.py"), "--target", T, "--data", data, "--run", W("reward_seq"), "--steps", "10", "--batch", "16",
         "--log-every", "5", "--ckpt-every", "5", "--arch", "seq", "--hard-negatives", "2"])
    run([P("train_reward.py"), "--target", T, "--data", data, "--run", W("reward_seq"), "--eval"], expect="'arch': 'seq'")
    g = [P("train_gen.py"), "--target", T, "--data", data, "--t2i", "2", "--edit", "2", "--log-every", "2",
         "--ckpt-every", "2"]
    # a fresh run starts a new loss log: one left by a run whose checkpoint was deleted is not appended to
    os.makedirs(W("g_cfg"), exist_ok=True)
    with open(W("g_cfg/loss.csv"), "w") as f:
        f.write("step,loss\n2,9\n")
    run(g + ["--stage", "cfg", "--run", W("g_cfg"), "--steps", "3"])
    run(g + ["--stage", "cfg", "--run", W("g_cfg"), "--steps", "6"], expect="resumed from")
    # a resumed run equals an uninterrupted one (the samplers' states are in the checkpoint), and its loss log
    # has each step once
    run(g + ["--stage", "cfg", "--run", W("g_cfg_straight"), "--steps", "6"])
    resumed, straight = (torch.load(W(f"{r}/ckpt.pt"), map_location="cpu") for r in ("g_cfg", "g_cfg_straight"))
    assert all(torch.equal(v, straight["student"][k]) for k, v in resumed["student"].items()), "resumed != straight"
    import csv
    steps_logged = [r["step"] for r in csv.DictReader(open(W("g_cfg/loss.csv")))]
    assert steps_logged == sorted(set(steps_logged), key=int), steps_logged
    run(g + ["--stage", "tscd", "--run", W("g_tscd"), "--init", W("g_cfg/ckpt.pt"), "--steps", "3",
             "--teacher-steps", "2"])
    run(g + ["--stage", "dmdo", "--run", W("g_dmdo"), "--init", W("g_tscd/ckpt.pt"), "--steps", "3",
             "--fake-warmup", "1", "--anchor-weight", "1.0", "--gen-lr", "1e-4", "--grid-shift", "1"])
    assert torch.load(W("g_dmdo/ckpt.pt"), map_location="cpu")["grid_shift"] == 1.0, "dmdo records its grid"
    # a resume trains against what the run was trained against: the anchor (--init), the grid, the target
    gm = g[1:] + ["--stage", "dmdo", "--run", W("g_dmdo"), "--steps", "4", "--fake-warmup", "1", "--anchor-weight", "1.0",
                  "--gen-lr", "1e-4"]
    refused("accel.train_gen", gm + ["--grid-shift", "1"], "fresh, undistilled student")
    refused("accel.train_gen", gm + ["--init", W("g_tscd/ckpt.pt")], "the 6-NFE grid --grid-shift 1")
    m_other = random_target(words, seed=1)[0]
    save_target(W("target-other/unified.ckpt"), m_other, tok, vae, scale)
    refused("accel.train_gen", [x if x != T else W("target-other/unified.ckpt") for x in gm]
            + ["--init", W("g_tscd/ckpt.pt"), "--grid-shift", "1"], "the target --target")
    # options a stage never reads are refused, not ignored
    tscd = g[1:] + ["--stage", "tscd", "--run", W("g_tscd_bad"), "--init", W("g_cfg/ckpt.pt"), "--steps", "1"]
    for extra, msg in ((["--teacher6", W("g_cfg/ckpt.pt")], "--teacher6 is read only by --stage adp, refl, dmdo --nfe 1"),
                       (["--nfe", "1"], "--nfe is read only by --stage dmdo"),
                       (["--fake-warmup", "5"], "--fake-warmup is read only by --stage dmdo"),
                       (["--reward", W("reward/reward.pt")], "--reward is read only by --stage refl")):
        refused("accel.train_gen", tscd + extra, msg)
    refused("accel.train_gen", g[1:] + ["--stage", "dmdo", "--run", W("g_dmdo_bad"), "--init", W("g_tscd/ckpt.pt"),
                                        "--teacher6", W("g_tscd/ckpt.pt")], "--stage dmdo (6-NFE) would ignore it")
    assert not any(os.path.exists(W(r)) for r in ("g_tscd_bad", "g_dmdo_bad")), "a refused run left its folder"
    # DMD's fresh-noise variant (the fake model learns the student's marginal, t' up to 0.98), kind-balanced prompts
    run(g + ["--stage", "dmdo", "--run", W("g_dmdo_fresh"), "--init", W("g_tscd/ckpt.pt"), "--steps", "2",
             "--fake-warmup", "1", "--dmd-noise", "fresh", "--dmd-tmax", "0.98", "--prompt-balance"])
    assert torch.load(W("g_dmdo_fresh/ckpt.pt"), map_location="cpu")["step"] == 2
    run(g + ["--stage", "adp", "--run", W("g_adp"), "--init", W("g_dmdo/ckpt.pt"), "--steps", "3"])
    run(g + ["--stage", "refl", "--run", W("g_refl"), "--init", W("g_adp/ckpt.pt"), "--teacher6",
             W("g_dmdo/ckpt.pt"), "--reward", W("reward/reward.pt"), "--steps", "3", "--pixel-mse-weight", "1",
             "--text-scale-range", "4,5"])
    # --text-scale-range: the text scales a stage trains at, inside CFG distillation's [1, 5]
    from accel.common import GenBatch
    stub = type("Batch", (), {"B": 64, "is_edit": torch.arange(64) % 2 == 0})()
    st, si = GenBatch.sample_scales(stub, torch.Generator().manual_seed(0), (4.0, 5.0))
    assert st.min() >= 4.0 and st.max() <= 5.0 and st.std() > 0 and (si[1::2] == 1).all() and (si[::2] >= 1).all()
    p = subprocess.run([sys.executable, *g, "--stage", "refl", "--run", W("g_refl_bad"), "--text-scale-range", "0,6"],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "--text-scale-range" in p.stderr, p.stderr[-300:]
    # 1-step DMD from the ReFL student: the fake model starts as the 6-NFE student, the anchor is its output
    run(g + ["--stage", "dmdo", "--nfe", "1", "--run", W("g_dmd1"), "--init", W("g_refl/ckpt.pt"), "--teacher6",
             W("g_dmdo/ckpt.pt"), "--steps", "3", "--fake-warmup", "1", "--grid-shift", "1"])
    d1 = torch.load(W("g_dmd1/ckpt.pt"), map_location="cpu")
    refl_student = torch.load(W("g_refl/ckpt.pt"), map_location="cpu")["student"]
    assert d1["nfe"] == 1 and d1["step"] == 3, (d1["nfe"], d1["step"])
    assert any(not torch.equal(v, refl_student[k]) for k, v in d1["student"].items()), "1-step DMD did not train"
    from accel.gen import student_from, is_gen_param
    # a two-model reward ensemble, with an average of the student's weights (--ema), one step, then resumed
    refl_seq = g + ["--stage", "refl", "--run", W("g_refl_seq"), "--init", W("g_adp/ckpt.pt"), "--teacher6",
                    W("g_dmdo/ckpt.pt"), "--reward", W("reward/reward.pt") + "," + W("reward_seq/reward.pt"),
                    "--reward-text", "prompt", "--ema", "0.5", "--ckpt-every", "1"]
    init = torch.load(W("g_adp/ckpt.pt"), map_location="cpu")["student"]
    emas = []
    for n in (1, 2):
        run(refl_seq + ["--steps", str(n)])
        ck = torch.load(W("g_refl_seq/ckpt.pt"), map_location="cpu")
        e = torch.load(W("g_refl_seq/ema.pt"), map_location="cpu")
        assert e["step"] == n and set(ck["student_ema"]) and all(torch.equal(e["student"][k], v) for k, v in ck["student_ema"].items())
        prev = init if n == 1 else emas[-1]
        for k, v in ck["student_ema"].items():  # ema = 0.5 * previous + 0.5 * this step's weights
            assert torch.allclose(v, 0.5 * prev[k] + 0.5 * ck["student"][k], atol=1e-6), f"ema {k} at step {n}"
        emas.append(e["student"])
    student_from(m, emas[-1], "ema.pt")  # the average is a student checkpoint like any other
    # a run resumed from a checkpoint without an average starts it from the resumed weights, not from --init
    os.makedirs(W("g_adp_ema"), exist_ok=True)
    shutil.copy(W("g_adp/ckpt.pt"), W("g_adp_ema/ckpt.pt"))
    run(g + ["--stage", "adp", "--run", W("g_adp_ema"), "--init", W("g_dmdo/ckpt.pt"), "--steps", "4", "--ema", "0.5"])
    ck = torch.load(W("g_adp_ema/ckpt.pt"), map_location="cpu")
    assert ck["step"] == 4 and all(torch.allclose(v, 0.5 * init[k] + 0.5 * ck["student"][k], atol=1e-6)
                                   for k, v in ck["student_ema"].items()), "resumed average"
    # a student seeds one for a target with another vision encoder (pipeline ADP_INIT across releases): the
    # generation path comes from the student, everything else stays the new target's
    c2 = type(m.c).from_dict({**m.c.to_dict(), "vit_input": "rgb+mask", "vit_colour": True})
    m2, _, _, _ = random_target(words, seed=1, cfg=c2)
    src = torch.load(W("g_adp/ckpt.pt"), map_location="cpu")["student"]
    s2 = student_from(m2, src, "g_adp")
    got = s2.state_dict()
    gen_keys = [k for k in src if ".gen." in k]
    vis_keys = [k for k in m2.state_dict() if k.startswith("vision.")]
    assert gen_keys and all(torch.equal(got[k], src[k]) for k in gen_keys), "generation path not carried"
    assert "vision.colour.weight" in vis_keys and all(torch.equal(got["m." + k], m2.state_dict()[k]) for k in vis_keys), \
        "vision not the target's"
    for st in ("cfg", "tscd", "dmdo", "adp", "refl"):
        rows = list(csv.DictReader(open(W(f"g_{st}/loss.csv"))))
        res[f"gen_{st}_last"] = rows[-1]
    assert float(res["gen_refl_last"]["pmse"]) > 0, "refl --pixel-mse-weight logs its term"
    # the monitoring paths sample the students as served (6-NFE grid, 1-NFE text scale) and run end to end
    run([P("eval_gen.py"), "--target", T, "--data", val, "--students", f"six={W('g_dmdo/ckpt.pt')},one={W('g_refl/ckpt.pt')}",
         "--t2i", "2", "--edit", "2", "--out", W("eval_gen.json")])
    eg = json.load(open(W("eval_gen.json")))
    assert (eg["six"]["nfe"], eg["one"]["nfe"]) == (6, 1) and all(0 <= eg[k]["exact"] <= 1 for k in ("baseline", "six", "one")), eg
    from accel.common import SERVE_ONE_TEXT_SCALE, SERVE_SIX_SHIFT
    assert (SERVE_SIX_SHIFT, SERVE_ONE_TEXT_SCALE) == (1.0, 5.0), "the shipped serving settings (docs/recipes.md)"
    br = json.loads(run([os.path.join(RECIPES, "bench_reference.py"), "--ckpt", T, "--six", W("g_dmdo/ckpt.pt"), "--one",
                         W("g_refl/ckpt.pt"), "--runs", "1", "--warmup", "0", "--json"]).strip().splitlines()[-1])
    res["bench_reference_keys"] = sorted(br)
    # ---- export ----
    run([os.path.join(RECIPES, "export_pack.py"), "--ckpt", T, "--data", data, "--out", out, "--name",
         "accel-smoke", "--parity"])
    run([P("export_accel.py"), "--target", T, "--pack", out, "--draft", W("draft_full"), "--six",
         W("g_dmdo/ckpt.pt"), "--one", W("g_refl/ckpt.pt"), "--parity"])  # the 1-NFE scale defaults to the shipped 5
    man = json.load(open(os.path.join(out, "manifest.json")))
    for k in ("draft", "denoise_6nfe", "denoise_1nfe"):
        assert os.path.exists(os.path.join(out, man["graphs"][k]["file"])), k
    # an export interrupted after its first graph (here: the 6-NFE one fails) leaves the pack as it was: no graph of
    # the new draft (another architecture) under the old manifest, no temporary files
    import accel.export_accel as ea

    def snapshot(folder):
        return {os.path.relpath(os.path.join(dp, f), folder): open(os.path.join(dp, f), "rb").read()
                for dp, _, fs in os.walk(folder) for f in fs}
    pack0, real_export, calls = snapshot(out), ea._export, []

    def interrupted(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("the second graph")
        return real_export(*args, **kw)
    ea._export = interrupted
    try:
        ea.export_into(out, m.c, ea.load_draft_run(m, W("draft_eagle3"))[0], ea.load_student_ckpt(m, W("g_dmdo/ckpt.pt"))[0],
                       parity=True)
        raise AssertionError("the interrupted export went through")
    except KeyboardInterrupt:
        pass
    finally:
        ea._export = real_export
    assert len(calls) == 2 and snapshot(out) == pack0, "an interrupted export_accel changed the pack"
    assert (man["distilled"]["denoise_1nfe"]["cfg_text_scale"], man["distilled"]["denoise_6nfe"]["cfg_text_scale"]) == (5.0, 4.0)
    p = subprocess.run([sys.executable, P("export_accel.py"), "--target", T, "--pack", W("no-pack"), "--one-text-scale", "6"],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "outside the distilled range" in p.stderr, p.stderr[-300:]
    # a shift that is not a finite positive number would write -Infinity into the manifest (not JSON): refused
    man_before = open(os.path.join(out, "manifest.json")).read()
    p = subprocess.run([sys.executable, P("export_accel.py"), "--target", T, "--pack", out, "--six", W("g_dmdo/ckpt.pt"), "--six-shift", "-2"],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "--six-shift -2.0" in p.stderr and open(os.path.join(out, "manifest.json")).read() == man_before, p.stderr[-300:]
    # a pack exported from a target of another architecture is refused before anything is written
    mis = W("mismatched-pack")
    os.makedirs(mis, exist_ok=True)
    man_mis = dict(man, decoder=dict(man["decoder"], hidden=man["decoder"]["hidden"] + 16), graphs={})
    man_mis.pop("draft", None)
    json.dump(man_mis, open(os.path.join(mis, "manifest.json"), "w"))
    p = subprocess.run([sys.executable, P("export_accel.py"), "--target", T, "--pack", mis, "--draft", W("draft_full")],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "was not exported from this --target" in p.stderr, p.stderr[-300:]
    assert not os.path.exists(os.path.join(mis, "draft.onnx")) and json.load(open(os.path.join(mis, "manifest.json"))) == man_mis
    # ---- import: training checkpoints rebuilt from the pack's graphs (the run folder is never committed) ----
    o = run([os.path.join(RECIPES, "import_pack.py"), "--pack", out, "--out", W("imported")])
    assert "bitwise re-export" in o, o
    imp = torch.load(W("imported/unified.ckpt"), map_location="cpu")
    tck = torch.load(T, map_location="cpu")
    assert imp["config"] == tck["config"] and all(torch.equal(imp["ema"][k], v) for k, v in tck["ema"].items()), \
        "imported target differs from the exported one"
    for fname, src in (("six.pt", "g_dmdo/ckpt.pt"), ("one.pt", "g_refl/ckpt.pt")):
        want = torch.load(W(src), map_location="cpu")["student"]
        got = torch.load(W(f"imported/{fname}"), map_location="cpu")["student"]
        gen = [k for k in want if is_gen_param(k)]
        assert gen and all(torch.equal(got[k], want[k]) for k in gen), f"imported {fname} differs from {src}"
    want = torch.load(W("draft_full/draft.ckpt"), map_location="cpu")
    got = torch.load(W("imported/draft/draft.ckpt"), map_location="cpu")
    assert got["dc"] == want["dc"] and all(torch.equal(got["model"][k], v) for k, v in want["model"].items()), \
        "imported draft differs from the exported one"
    # the imported checkpoints are usable as they are: a student stage starts from them
    run([x if x != T else W("imported/unified.ckpt") for x in g] + ["--stage", "adp", "--run", W("g_adp_imported"),
                                                                   "--init", W("imported/six.pt"), "--steps", "2",
                                                                   "--pixel-mse-weight", "1"])
    # ... and the unified model trains on from them (a leg seeded from a release pack)
    urun = W("unified-imported")
    os.makedirs(urun, exist_ok=True)
    shutil.copy(W("imported/tokenizer.json"), urun)
    run([os.path.join(RECIPES, "train_unified.py"), "--data", data, "--vae", W("imported/vae.ckpt"), "--run", urun,
         "--init-weights", W("imported/unified.ckpt"), "--steps", "2", "--warmup", "1", "--und", "2", "--t2i", "2",
         "--edit", "2", "--think", "0", "--log-every", "1"], expect="initialised from the EMA weights")
    # the shipped release can be trained on from its pack alone (runs/ is never committed)
    o = run([os.path.join(RECIPES, "import_pack.py"), "--pack", os.path.join(os.path.dirname(RECIPES), "shapes-mot"),
             "--out", W("imported-release")])
    assert "bitwise re-export, 12 parity references" in o and '"students": ["one.pt", "six.pt"], "draft": true' in o, o
    # the release's declarations go along: its session context (image) for a re-export; a pack without one is the
    # engine's default (conversation), which a re-export must not change
    rel = torch.load(W("imported-release/unified.ckpt"), map_location="cpu")
    assert rel["session_context"] == "image"
    # and the offset its understanding reads images at, chosen for these weights
    assert rel["understand_offset"] == json.load(open(os.path.join(os.path.dirname(RECIPES), "shapes-mot", "manifest.json")))["vision"]["understand_offset"]
    # ... which the draft's data then reads images at, unless told otherwise
    run([P("draft_data.py"), "--target", W("imported-release/unified.ckpt"), "--data", val, "--out", W("draft_rel.jsonl"),
         "--count", "1", "--max-new", "4"], expect="recorded understand_offset")
    assert json.loads(open(W("draft_rel.jsonl")).readline())["offset"] == rel["understand_offset"]
    assert imp["session_context"] == json.load(open(os.path.join(out, "manifest.json")))["prompts"].get("session_context", "conversation")
    # a pack whose references disagree with its graphs is refused, with the reason
    bad = W("bad-pack")
    shutil.rmtree(bad, ignore_errors=True)
    shutil.copytree(out, bad)
    pf = os.path.join(bad, "parity", "decoder_decode.json")
    pj = json.load(open(pf))
    pj["outputs"]["logits"]["data"][0] += 1.0
    json.dump(pj, open(pf, "w"))
    p = subprocess.run([sys.executable, os.path.join(RECIPES, "import_pack.py"), "--pack", bad, "--out", W("bad-import")],
                       capture_output=True, text=True)
    assert p.returncode != 0 and "parity decoder_decode.json: output logits" in p.stderr, p.stderr[-500:]
    assert not os.path.exists(W("bad-import/unified.ckpt")), "a refused import wrote checkpoints"
    res["seconds"] = round(time.time() - t0, 1)
    json.dump(res, open(os.path.join(out, "accel_smoke.json"), "w"), indent=2)
    print(f"accel smoke test OK in {time.time() - t0:.1f}s: {out}", flush=True)


if __name__ == "__main__":
    main()
