#!/usr/bin/env python3
"""Distillation of the generation expert, one stage per command (seeded, resumable from RUN/ckpt.pt, CSV loss
RUN/loss.csv). The context is always prefilled by the ORIGINAL model (Hyper-Bagel's deployment); only the
generation path of the student is trained.

  6-NFE:  --stage cfg   (CFG distillation: text/image-scale embedders, scales ~U[1,5] / U[1,2.5])
          --stage tscd  --init RUN_cfg/ckpt.pt   (3-segment TSCD: consistency MSE + adversarial, multi-head latent disc.)
          --stage dmdo  --init RUN_tscd/ckpt.pt  (DMD over the student's own 6-step Euler ODE; fake on x_T - x_0;
                 defaults: 300 critic-only steps, generator lr 5e-5, anchor MSE to the TSCD student, t' ~ U[0.02, 0.5].
                 The first runs, --fake-warmup 0 --gen-lr 0 --anchor-weight 0 --dmd-tmax 0.98 --dmd-shift 3,
                 lowered GenEval 0.237 -> 0.160; docs/results.md)
  1-NFE:  --stage adp   --init RUN_dmdo/ckpt.pt  (adversarial pre-training on 6-NFE ODE pairs, latent + pixel D)
          --stage refl  --init RUN_adp/ckpt.pt --teacher6 RUN_dmdo/ckpt.pt --reward RUN_reward/reward.pt
          --stage dmdo --nfe 1 --init RUN_refl/ckpt.pt --teacher6 RUN_dmdo/ckpt.pt  (not the paper's: DMD on the
                 1-step student, the fake model started from the 6-NFE student, the anchor its output on the same noise)

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/accel/train_gen.py --stage cfg \
      --target runs/unified/unified.ckpt --data data/train --run runs/gen/cfg --steps 2000"""
import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accel.common import target_from_args, load_sets, GenBatch, PromptIndex, teacher_cfg, gen_velocity, grid, shifted, torch  # noqa: E402
from accel.gen import Student, LatentDisc, PixelDisc, student_from, load_reward, hinge_d, hinge_g, is_gen_param  # noqa: E402
from hyperbagel.ckpts import require_training_split  # noqa: E402
from hyperbagel.model import unpatchify  # noqa: E402
from hyperbagel.utils import (seed_all, save_ckpt, require_ckpt, CsvLog, Timer, positive_int, non_negative_int,  # noqa: E402
                              positive_float)

F = torch.nn.functional
STAGES = ["cfg", "tscd", "dmdo", "adp", "refl"]
SIX_STAGES = ("tscd", "dmdo", "dmdo1", "adp", "refl")  # every stage but cfg ("dmdo1": --stage dmdo --nfe 1)
# Options only some stages read, with their defaults: given to another stage they would be silently ignored, so
# they are refused ("dmdo1" is --stage dmdo --nfe 1, whose fake model and anchor come from --teacher6; 6-NFE DMDO
# anchors to --init)
STAGE_OPTIONS = {
    "teacher6": (("adp", "refl", "dmdo1"), None),
    "reward": (("refl",), None),
    "alpha": (("refl",), None),
    "reward_text": (("refl",), "caption"),
    "refl_edit_weight": (("refl",), 0.0),
    "nfe": (("dmdo", "dmdo1"), 6),
    "fake_warmup": (("dmdo", "dmdo1"), 300),
    "gen_lr": (("dmdo", "dmdo1"), 5e-5),
    "anchor_weight": (("dmdo", "dmdo1"), 0.5),  # release 3: 0.5 beat 1.0 (docs/recipes-acceleration.md)
    "dmd_tmax": (("dmdo", "dmdo1"), 0.5),
    "dmd_shift": (("dmdo", "dmdo1"), 1.0),
    "dmd_noise": (("dmdo", "dmdo1"), "trajectory"),
    "teacher_steps": (("tscd",), 4),
    "consistency_weight": (("tscd",), 1.0),
    "adv_weight": (("tscd",), 0.1),
    "d_lr": (("tscd", "adp"), 2e-4),
    "mse_weight": (("adp", "refl"), 1.0),
    "pixel_mse_weight": (("adp", "refl"), 0.0),
    "grid_shift": (SIX_STAGES, 3.0),
    "text_scale_range": (SIX_STAGES, "1,5"),
}


def stage_name(key):
    return {"dmdo1": "dmdo --nfe 1", "dmdo": "dmdo (6-NFE)"}.get(key, key)


def stages_label(stages):
    """'tscd, dmdo, adp' for the stages of STAGE_OPTIONS (dmdo: both --nfe values)."""
    both = "dmdo" in stages and "dmdo1" in stages
    return ", ".join("dmdo" if both and k == "dmdo" else stage_name(k) for k in stages if not (both and k == "dmdo1"))


def check_stage_options(a):
    """Refuses (one line) an option of STAGE_OPTIONS given to a stage that does not read it; fills the defaults
    of those not given."""
    key = "dmdo1" if a.stage == "dmdo" and a.nfe == 1 else a.stage
    for dest, (stages, default) in STAGE_OPTIONS.items():
        if getattr(a, dest) is None:
            setattr(a, dest, default)
        elif key not in stages:
            sys.exit(f"--{dest.replace('_', '-')} is read only by --stage {stages_label(stages)}: "
                     f"--stage {stage_name(key)} would ignore it; leave it out")


def weights_digest(state, keep=lambda k: True):
    """A short digest of a state dict's tensors (names, shapes, values) for which keep(name)."""
    import hashlib
    h = hashlib.sha1()
    for k in sorted(state):
        v = state[k]
        if keep(k) and torch.is_tensor(v):
            h.update(f"{k}:{tuple(v.shape)}:{v.dtype}".encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


_NAMED = {}


def named_ckpt(path, what):
    """A student checkpoint named on the command line (exits with one clear line when missing or of another kind),
    read once."""
    if path not in _NAMED:
        _NAMED[path] = require_ckpt(path, what, ("student",))
    return _NAMED[path]


def load_student(m, path, what="--init"):
    """A student of target m: from a previous stage's ckpt.pt (its generation path; gen.student_from), or fresh.
    A missing file or a checkpoint of another kind exits with one clear line."""
    return student_from(m, named_ckpt(path, what)["student"], f"{what} {path}") if path else Student(m)


def student_input(path, what):
    """(digest, description) of the frozen student load_student(m, path, what) builds: what it takes from the
    checkpoint is the generation path (the rest is the target's, checked as the target)."""
    if not path:
        return "fresh", f"no {what} (a fresh, undistilled student)"
    d = weights_digest(named_ckpt(path, what)["student"], is_gen_param)
    return d, f"{what} {path} (weights {d})"


def check_run_inputs(ckpt_path, ck, inputs):
    """A resumed run must train against what it was trained against. inputs: key -> (value, label, description
    of this command's); ckpt.pt records {"value", "shown"} per key ("inputs"; older checkpoints record only
    grid_shift, and an input a checkpoint does not record is not checked). One line naming the first that
    differs."""
    have = dict(ck.get("inputs") or {})
    if "grid_shift" not in have and "grid_shift" in ck:
        have["grid_shift"] = {"value": float(ck["grid_shift"]), "shown": f"--grid-shift {float(ck['grid_shift']):g}"}
    for key, (value, label, shown) in inputs.items():
        old = have.get(key)
        if old is None or old["value"] == value:
            continue
        sys.exit(f"{ckpt_path} was trained against {label} {old['shown']}; this command's is {shown}: resuming is "
                 "refused (pass the run's own options, or use another --run)")


def non_negative_float(text):
    """argparse type: a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not 0 <= v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def v_student(s, x, t, gb, st, si, ctx=None):
    return gen_velocity(s, x, t, ctx or gb.full, (st, si))


def euler(s, xT, gb, st, si, nfe, shift=3.0):
    """The distilled sampler: nfe Euler steps on grid(nfe, shift). Returns the list of states (nfe+1)."""
    ts = grid(nfe, shift)
    xs = [xT]
    x = xT
    B = xT.shape[0]
    for i in range(nfe):
        t, u = float(ts[i]), float(ts[i + 1])
        x = x + (u - t) * v_student(s, x, torch.full((B,), t), gb, st, si)
        xs.append(x)
    return xs, ts


def teacher_euler(m, x, t, end, gb, st, si, n):
    """Teacher CFG Euler solve from per-sample t to per-sample end with n uniform sub-steps."""
    for j in range(n):
        a = t + (end - t) * j / n
        b = t + (end - t) * (j + 1) / n
        x = x + (b - a).view(-1, 1, 1) * teacher_cfg(m, x, a, gb, st, si)
    return x


def decode(vae, scale, c, x):
    return vae.decode(unpatchify(x, c.latent_channels, c.latent_size, c.latent_size, c.latent_patch) / scale)


def reward_text(gb, mode):
    """Per sample, the text the reward scores it against (--reward-text)."""
    if mode == "caption":
        return gb.desc
    return [d if e else p for p, d, e in zip(gb.prompts, gb.desc, gb.is_edit.tolist())]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", required=True, choices=STAGES)
    ap.add_argument("--target", default=None)
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--init", default=None, help="previous stage's ckpt.pt (student)")
    ap.add_argument("--teacher6", default=None, help="refl/adp: the 6-NFE student ckpt (default: --init)")
    ap.add_argument("--reward", default=None,
                    help="refl: reward.pt from train_reward.py, or several, comma-separated: an ensemble (the hinge is "
                         "averaged over its members, each at its own threshold), which one direction of reward hacking "
                         "cannot satisfy as easily as one model")
    ap.add_argument("--steps", type=positive_int, default=1000)
    ap.add_argument("--t2i", type=non_negative_int, default=6)
    ap.add_argument("--edit", type=non_negative_int, default=6)
    ap.add_argument("--lr", type=positive_float, default=2e-4)
    ap.add_argument("--d-lr", type=positive_float, default=None)
    ap.add_argument("--teacher-steps", type=positive_int, default=None, help="tscd: teacher Euler sub-steps to the segment end")
    ap.add_argument("--mse-weight", type=non_negative_float, default=None, help="adp/refl: regression to the 6-NFE output")
    ap.add_argument("--consistency-weight", type=non_negative_float, default=None,
                    help="tscd: weight of the consistency term MSE(student jump, teacher segment end); 0 = adversarial only")
    ap.add_argument("--adv-weight", type=non_negative_float, default=None, help="tscd: weight of the adversarial (hinge) generator term")
    ap.add_argument("--fake-warmup", type=non_negative_int, default=None,
                    help="dmdo: fake-model-only steps before the generator's first update (the critic must track the student first)")
    ap.add_argument("--gen-lr", type=non_negative_float, default=None, help="dmdo: the generator's lr (0 = --lr)")
    ap.add_argument("--anchor-weight", type=non_negative_float, default=None,
                    help="dmdo: MSE of the generator's x0 prediction to the frozen --init student's on the same state (keeps DMD from drifting)")
    ap.add_argument("--dmd-tmax", type=float, default=None,
                    help="dmdo: t' (where real and fake are compared) ~ shift(U[0.02, tmax]); at high t the teacher's x0 is a blurred mean")
    ap.add_argument("--dmd-shift", type=positive_float, default=None, help="dmdo: timestep shift applied to t'")
    ap.add_argument("--dmd-noise", choices=["trajectory", "fresh"], default=None,
                    help="dmdo: the noise x0_hat is re-noised with at t', and what the fake model learns. 'trajectory' "
                         "(the paper's DMDO): the student's own x_T, the fake model trained on its (x_T, x_0) couplings; "
                         "at high t' the fake then predicts the student's sharp x0 and the teacher a blurred mean, so "
                         "--dmd-tmax stays low. 'fresh' (DMD's): new noise, the fake model trained by flow matching on "
                         "the student's outputs, so real and fake are both posterior means and layout (high t') is compared")
    ap.add_argument("--nfe", type=int, default=None, choices=[1, 6],
                    help="dmdo: the student's steps. 1 distils a 1-NFE student by DMD (not in the paper, which uses "
                         "ADP -> ReFL): its fake model starts from --teacher6, and --anchor-weight regresses its output "
                         "to --teacher6's 6-step output from the same noise, as ADP and ReFL do")
    ap.add_argument("--grid-shift", type=positive_float, default=None,
                    help="the 6-NFE grid the stages train on (TSCD's segments, DMDO's own trajectories, the ADP/ReFL "
                         "teacher's): grid(6, shift). Every run before session 14 used 3 (BAGEL's shift); the shipped "
                         "student serves on the uniform grid, shift 1 (export_accel.py --six-shift)")
    ap.add_argument("--prompt-balance", action="store_true",
                    help="draw text-to-image conditions kind-balanced (scene captions and each GenEval-style prompt "
                         "category equally often, accel.common.PromptIndex) instead of a uniform scene and prompt")
    ap.add_argument("--alpha", type=float, default=None, help="refl hinge threshold (default: the reward ckpt's)")
    ap.add_argument("--reward-text", choices=["caption", "prompt"], default=None,
                    help="refl: what the reward scores a text-to-image sample against: the full caption of the training "
                         "scene the prompt was drawn from (default; it scored better on release 4, docs/results.md), or "
                         "the prompt itself, as HPS-style ReFL does. Edits always use the edited scene's caption.")
    ap.add_argument("--refl-edit-weight", type=non_negative_float, default=None,
                    help="refl: weight of the reward term on edit samples (the reward model scores the image against "
                         "the edited scene's caption only, so it cannot reward preserving the source; edits keep the "
                         "regression to the 6-NFE output)")
    ap.add_argument("--pixel-mse-weight", type=non_negative_float, default=None,
                    help="adp/refl: weight of a regression to the 6-NFE output in pixel space (both decoded by the VAE). "
                         "The 1-NFE student's commonest GenEval miss is the right colour at the right place in the wrong "
                         "shape; a latent MSE weighs a shape's thin edges little")
    ap.add_argument("--ema", type=non_negative_float, default=0.0,
                    help="decay of an exponential moving average of the student's weights (0 = off), kept in ckpt.pt and "
                         "written as RUN/ema.pt in the student format every checkpoint. Adversarial and reward steps at a "
                         "constant lr leave the last iterate noisy; the average is what a GAN generator ships")
    ap.add_argument("--limit", type=positive_int, default=None)
    ap.add_argument("--text-scale-range", default=None,
                    help="LO,HI: the text-guidance scales a stage trains at, drawn from U[LO,HI] within CFG distillation's "
                         "[1,5] (the cfg stage always uses all of it): a later stage can focus on the scale it serves at")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=positive_int, default=100)
    ap.add_argument("--log-every", type=positive_int, default=10)
    for act in ap._actions:  # the stage-specific options' defaults and stages, in --help
        if act.dest in STAGE_OPTIONS:
            stages, default = STAGE_OPTIONS[act.dest]
            dflt = f"default {default}; " if default is not None else ""
            act.help = f"{act.help or ''} ({dflt}--stage {stages_label(stages)} only)".lstrip()
    a = ap.parse_args()
    _NAMED.clear()
    check_stage_options(a)
    try:
        text_range = tuple(float(x) for x in a.text_scale_range.split(","))
    except ValueError:
        text_range = ()
    if len(text_range) != 2 or not 1.0 <= text_range[0] <= text_range[1] <= 5.0:
        sys.exit(f"--text-scale-range {a.text_scale_range!r}: want LO,HI with 1 <= LO <= HI <= 5")
    if a.stage == "cfg":  # CFG distillation always trains on the whole range
        text_range = (1.0, 5.0)
    if a.t2i + a.edit < 1:
        ap.error("--t2i + --edit must be at least 1")
    if a.ema >= 1:
        ap.error(f"--ema {a.ema}: a decay in [0, 1)")
    if not 0.02 < a.dmd_tmax <= 1:
        ap.error(f"--dmd-tmax {a.dmd_tmax}: want 0.02 < tmax <= 1")
    if a.stage == "refl" and not a.reward:
        ap.error("--stage refl needs --reward (reward.pt from train_reward.py)")
    if a.stage != "cfg" and not a.init:
        print(f"warning: --stage {a.stage} without --init starts from a fresh (undistilled) student", file=sys.stderr)
    one_step_dmd = a.stage == "dmdo" and a.nfe == 1
    if one_step_dmd and not a.teacher6:
        sys.exit("--stage dmdo --nfe 1 needs --teacher6 (the fake model's start and the anchor)")
    # every checkpoint named is checked (exists, right kind) before any work
    for what, path in (("--init", a.init), ("--teacher6", a.teacher6)):
        if path:
            named_ckpt(path, what)
    if a.stage == "refl":
        for p in a.reward.split(","):
            require_ckpt(p, "--reward", ("model", "vocab", "alpha"))
    for d in (x for x in a.data.split(",") if x):
        require_training_split(d)  # before any work: an evaluation export is not training data
    ckpt_path = os.path.join(a.run, "ckpt.pt")
    ck = require_ckpt(ckpt_path, "resume", ("student", "step", "rng", "stage")) if os.path.exists(ckpt_path) else None
    # what defines the run besides its stage: the frozen models it trains against (digests of their weights), the
    # grid and the guidance scales; recorded in ckpt.pt and checked on resume (the target: once it is loaded)
    stage_key = "dmdo1" if one_step_dmd else a.stage
    inputs = {}
    if stage_key in SIX_STAGES:
        inputs["grid_shift"] = (float(a.grid_shift), "the 6-NFE grid", f"--grid-shift {float(a.grid_shift):g}")
        inputs["text_scale_range"] = (list(text_range), "the text-guidance scales",
                                      f"--text-scale-range {text_range[0]:g},{text_range[1]:g}")
    if stage_key == "dmdo" and a.anchor_weight > 0:
        anc = student_input(a.init, "--init")
        inputs["anchor"] = (anc[0], "the DMDO anchor", anc[1])
    if stage_key in ("adp", "refl", "dmdo1"):
        t6 = student_input(a.teacher6, "--teacher6") if a.teacher6 else student_input(a.init, "--init")
        inputs["teacher6"] = (t6[0], "the 6-NFE teacher (--teacher6, else --init)", t6[1])
    if a.stage == "refl":
        rd = ",".join(weights_digest(require_ckpt(p, "--reward", ("model",))["model"]) for p in a.reward.split(","))
        inputs["reward"] = (rd, "the reward model", f"--reward {a.reward} (weights {rd})")
    if ck:
        nfe = 1 if a.stage in ("adp", "refl") or one_step_dmd else 6
        if ck["stage"] != a.stage or ck.get("nfe", nfe) != nfe:
            sys.exit(f"{ckpt_path} is a --stage {ck['stage']} (nfe {ck.get('nfe')}) run; resuming it as --stage {a.stage} "
                     f"(nfe {nfe}) is refused (use another --run)")
        if ck["step"] >= a.steps:
            print(f"{ckpt_path} is at step {ck['step']}, --steps {a.steps}: nothing to train (unchanged)", flush=True)
            return
        check_run_inputs(ckpt_path, ck, inputs)
    seed_all(a.seed)
    m, tok, vae, scale = target_from_args(a)
    os.makedirs(a.run, exist_ok=True)  # after the target loaded: a bad --target leaves no folder behind
    c = m.c
    if vae is None:
        sys.exit(f"--target {a.target}: its VAE checkpoint (the 'vae' path inside it) is missing")
    if ck and isinstance(ck.get("config"), dict) and ck["config"] != c.to_dict():
        sys.exit(f"{ckpt_path} was trained against a target of another architecture than --target {a.target}")
    td = weights_digest(m.state_dict())
    inputs["target"] = (td, "the target", f"--target {a.target} (weights {td})" if a.target else f"the random target (weights {td})")
    if ck:
        check_run_inputs(ckpt_path, ck, {"target": inputs["target"]})
    sets = load_sets(a.data, tok, vae, scale, cache_dir=a.run, limit=a.limit)
    stu = load_student(m, a.init)
    mods = {"student": stu}
    if a.stage in ("tscd", "adp"):
        mods["disc"] = LatentDisc(m)
    if a.stage == "adp":
        mods["pdisc"] = PixelDisc(c.vocab)
    if a.stage == "dmdo":
        mods["fake"] = load_student(m, a.teacher6 if one_step_dmd else a.init, "--teacher6" if one_step_dmd else "--init")
    frozen_mods = {}
    if a.stage == "dmdo" and a.anchor_weight > 0 and not one_step_dmd:
        anchor = load_student(m, a.init).eval()
        for p in anchor.parameters():
            p.requires_grad_(False)
        frozen_mods["anchor"] = anchor
    if a.stage in ("adp", "refl") or one_step_dmd:
        t6 = load_student(m, a.teacher6 or a.init, "--teacher6" if a.teacher6 else "--init").eval()
        for p in t6.parameters():
            p.requires_grad_(False)
        frozen_mods["t6"] = t6
    _NAMED.clear()  # the named checkpoints are built into modules now
    if a.stage == "refl":
        rews = [load_reward(p) for p in a.reward.split(",")]
        alphas = [r_alpha if a.alpha is None else a.alpha for _, r_alpha in rews]
    opts = {k: torch.optim.AdamW([p for p in v.parameters() if p.requires_grad],
                                 lr=(a.gen_lr or a.lr) if k == "student" and a.stage == "dmdo" else a.lr if k in ("student", "fake") else a.d_lr, betas=(0.9, 0.99) if k != "student"
                                 else (0.9, 0.95), weight_decay=0.0) for k, v in mods.items()}
    step = 0
    rng = random.Random(a.seed * 1000003)
    gen = torch.Generator().manual_seed(a.seed * 7919)
    if ck:
        for k in mods:
            mods[k].load_state_dict(ck[k])
            opts[k].load_state_dict(ck["opt_" + k])
        step = ck["step"]
        torch.set_rng_state(ck["rng"])
        if "data_rng" in ck and "gen_rng" in ck:  # samplers go on where they stopped: resumed == uninterrupted
            rng.setstate(ck["data_rng"])
            gen.set_state(ck["gen_rng"])
        else:  # checkpoints from before data_rng: re-seeded from the step, as they were
            rng = random.Random(a.seed * 1000003 + step)
            gen = torch.Generator().manual_seed(a.seed * 7919 + step)
        print(f"resumed from {ckpt_path} at step {step}", flush=True)
    # the average covers the trainable generation path (the frozen rest is the target's and never moves); it
    # starts from the weights this run starts from, or goes on from the checkpoint's
    ema = None
    if a.ema:
        ema = (ck or {}).get("student_ema") or {k: p.detach().clone() for k, p in stu.named_parameters() if p.requires_grad}
    n_tr = sum(p.numel() for p in stu.parameters() if p.requires_grad)
    print(f"stage {a.stage}: student trainable {n_tr / 1e6:.3f}M", flush=True)
    fields = ["step", "loss", "g", "d", "fake", "mse", "pmse", "reward", "elapsed"]
    # rows logged after the checkpoint (by a run stopped before its next one) are dropped on resume
    log = CsvLog(os.path.join(a.run, "loss.csv"), fields, resume_step=step)  # a fresh run (0) starts a new log
    timer = Timer()
    g6 = grid(6, a.grid_shift)
    prompt_index = PromptIndex(sets) if a.prompt_balance else None

    def save():
        obj = {k: v.state_dict() for k, v in mods.items()}
        obj.update({"opt_" + k: v.state_dict() for k, v in opts.items()})
        obj.update({"step": step, "rng": torch.get_rng_state(), "data_rng": rng.getstate(), "gen_rng": gen.get_state(),
                    "stage": a.stage, "config": c.to_dict(),
                    "init": a.init, "nfe": 1 if a.stage in ("adp", "refl") or one_step_dmd else 6,
                    "grid_shift": a.grid_shift, "teacher6": a.teacher6, "reward": a.reward,
                    "inputs": {k: {"value": v, "shown": shown} for k, (v, _, shown) in inputs.items()}})
        if ema is not None:
            obj["student_ema"] = ema
        save_ckpt(ckpt_path, obj)
        if ema is not None:
            sd = dict(stu.state_dict())
            sd.update(ema)
            save_ckpt(os.path.join(a.run, "ema.pt"), {"student": sd, "step": step, "stage": a.stage, "config": c.to_dict(),
                                                      "init": a.init, "ema": a.ema, "nfe": obj["nfe"]})

    def gstep(loss):
        opts["student"].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in stu.parameters() if p.requires_grad], 1.0)
        opts["student"].step()
        if ema is not None:
            with torch.no_grad():
                for k, p in stu.named_parameters():
                    if k in ema:
                        ema[k].mul_(a.ema).add_(p.detach(), alpha=1 - a.ema)

    def dstep(key, loss):
        opts[key].zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in mods[key].parameters() if p.requires_grad], 1.0)
        opts[key].step()

    acc = []
    while step < a.steps:
        gb = GenBatch(m, tok, sets, rng, a.t2i, a.edit, prompt_index)
        B = gb.B
        st, si = gb.sample_scales(gen, text_range)
        x0 = gb.x0
        eps = torch.randn(x0.shape, generator=gen)
        out = {}
        for v in mods.values():
            v.train()
        if a.stage == "cfg":
            t = shifted(torch.sigmoid(torch.randn(B, generator=gen)), 3.0)
            xt = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * eps
            tgt = teacher_cfg(m, xt, t, gb, st, si)
            loss = F.mse_loss(v_student(stu, xt, t, gb, st, si), tgt)
            gstep(loss)
            out["mse"] = float(loss)
        elif a.stage == "tscd":
            k = torch.randint(0, 3, (B,), generator=gen)
            start, end = g6[2 * k], g6[2 * k + 2]
            t = end + torch.rand(B, generator=gen) * (start - end)
            xt = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * eps
            real = teacher_euler(m, xt, t, end, gb, st, si, a.teacher_steps)
            fake = xt + (end - t).view(-1, 1, 1) * v_student(stu, xt, t, gb, st, si)
            D = mods["disc"]
            ld = hinge_d(D(real, end, gb.full), D(fake.detach(), end, gb.full))
            dstep("disc", ld)
            lg = hinge_g(D(fake, end, gb.full))
            # consistency + adversarial: adversarial-only TSCD drifted away from the teacher in the
            # evaluator's stage table (GenEval 0.20 -> 0.10 after 1,500 steps), see docs/recipes-acceleration.md
            mse = F.mse_loss(fake, real)
            loss = a.adv_weight * lg + a.consistency_weight * mse
            gstep(loss)
            out.update(g=float(lg), d=float(ld), mse=float(mse))
        elif a.stage == "dmdo":
            fk = mods["fake"]
            with torch.no_grad():
                xs, ts = euler(stu, eps, gb, st, si, a.nfe, a.grid_shift)
            xT, xe = xs[0], xs[-1]
            # the noise DMD pairs with the student's x0: its own x_T (the paper's trajectory coupling), or fresh
            dmd_noise = lambda: xT if a.dmd_noise == "trajectory" else torch.randn(x0.shape, generator=gen)  # noqa: E731
            # fake model: flow matching on the student's outputs with that noise, target noise - x_0
            tf = shifted(torch.rand(B, generator=gen), 3.0)
            nf = dmd_noise()
            xtf = (1 - tf.view(-1, 1, 1)) * xe + tf.view(-1, 1, 1) * nf
            lf = F.mse_loss(v_student(fk, xtf, tf, gb, st, si), nf - xe)
            dstep("fake", lf)
            loss = lf
            out.update(fake=float(lf))
            if step >= a.fake_warmup:  # critic-only steps first, until it tracks the student's couplings
                # generator: re-run a stored trajectory state with gradients -> x0_hat, DMD gradient at t'
                k = torch.randint(0, a.nfe, (B,), generator=gen)
                xk = torch.stack([xs[int(k[b])][b] for b in range(B)])
                tk = ts[k]
                x0h = xk - tk.view(-1, 1, 1) * v_student(stu, xk, tk, gb, st, si)
                tp = shifted(0.02 + (a.dmd_tmax - 0.02) * torch.rand(B, generator=gen), a.dmd_shift).view(-1, 1, 1)
                xtp = ((1 - tp) * x0h + tp * dmd_noise()).detach()
                with torch.no_grad():
                    x0r = xtp - tp * teacher_cfg(m, xtp, tp.view(-1), gb, st, si)
                    x0f = xtp - tp * v_student(fk, xtp, tp.view(-1), gb, st, si)
                    w = 1.0 / (x0h - x0r).abs().mean(dim=(1, 2), keepdim=True).clamp_min(1e-3)
                    grad = (x0f - x0r) * w
                lg = 0.5 * F.mse_loss(x0h, (x0h - grad).detach())
                loss = lg
                if a.anchor_weight > 0:
                    with torch.no_grad():
                        if one_step_dmd:  # the 6-NFE student's output from the same noise (xk = x_T here)
                            x0a = euler(frozen_mods["t6"], xk, gb, st, si, 6, a.grid_shift)[0][-1]
                        else:
                            x0a = xk - tk.view(-1, 1, 1) * v_student(frozen_mods["anchor"], xk, tk, gb, st, si)
                    mse = F.mse_loss(x0h, x0a)
                    loss = lg + a.anchor_weight * mse
                    out.update(mse=float(mse))
                gstep(loss)
                out.update(g=float(lg), fake=float(lf))
        elif a.stage == "adp":
            t6 = frozen_mods["t6"]
            with torch.no_grad():
                xs, _ = euler(t6, eps, gb, st, si, 6, a.grid_shift)
            xT, xe = xs[0], xs[-1]
            t = torch.where(torch.rand(B, generator=gen) < 0.5, torch.ones(B),
                            shifted(torch.rand(B, generator=gen), 3.0))
            xt = (1 - t.view(-1, 1, 1)) * xe + t.view(-1, 1, 1) * xT
            x0h = xt - t.view(-1, 1, 1) * v_student(stu, xt, t, gb, st, si)
            td = 0.6 * torch.rand(B, generator=gen)
            nz = torch.randn(x0.shape, generator=gen)
            ren = lambda x: (1 - td.view(-1, 1, 1)) * x + td.view(-1, 1, 1) * nz  # noqa: E731
            D, P = mods["disc"], mods["pdisc"]
            with torch.no_grad():
                preal = decode(vae, scale, c, xe)
            ld = hinge_d(D(ren(xe), td, gb.full), D(ren(x0h.detach()), td, gb.full))
            dstep("disc", ld)
            lp = hinge_d(P(preal, gb.desc), P(decode(vae, scale, c, x0h.detach()), gb.desc))
            dstep("pdisc", lp)
            mse = F.mse_loss(x0h, xe)
            px = decode(vae, scale, c, x0h)
            lg = hinge_g(D(ren(x0h), td, gb.full)) + hinge_g(P(px, gb.desc)) + a.mse_weight * mse
            if a.pixel_mse_weight > 0:
                pmse = F.mse_loss(px, preal)
                lg = lg + a.pixel_mse_weight * pmse
                out.update(pmse=float(pmse))
            gstep(lg)
            loss = lg
            out.update(g=float(lg), d=float(ld + lp), mse=float(mse))
        elif a.stage == "refl":
            t6 = frozen_mods["t6"]
            with torch.no_grad():
                xs, _ = euler(t6, eps, gb, st, si, 6, a.grid_shift)
            x0h = eps - v_student(stu, eps, torch.ones(B), gb, st, si)
            px = decode(vae, scale, c, x0h)
            img, txt = px.clamp(-1, 1), reward_text(gb, a.reward_text)
            rs = [rew(img, txt) for rew, _ in rews]
            r = sum(rs) / len(rs)
            hinge = sum(F.relu(al - rk) for al, rk in zip(alphas, rs)) / len(rs)
            mse = F.mse_loss(x0h, xs[-1])
            w = torch.where(gb.is_edit, torch.full((B,), a.refl_edit_weight), torch.ones(B))
            loss = (w * hinge).mean() + a.mse_weight * mse
            if a.pixel_mse_weight > 0:
                with torch.no_grad():
                    pt = decode(vae, scale, c, xs[-1])
                pmse = F.mse_loss(px, pt)
                loss = loss + a.pixel_mse_weight * pmse
                out.update(pmse=float(pmse))
            gstep(loss)
            out.update(reward=float(r.mean()), mse=float(mse))
        step += 1
        out["loss"] = float(loss)
        acc.append(out)
        if step % a.log_every == 0 or step == a.steps:
            row = {k: sum(o[k] for o in acc if k in o) / max(1, sum(1 for o in acc if k in o))
                   for k in fields[1:-1] if any(k in o for o in acc)}
            acc = []
            log.write({"step": step, **{k: f"{v:.5f}" for k, v in row.items()}, "elapsed": f"{timer():.0f}"})
            print(f"step {step} " + " ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
        if step % a.ckpt_every == 0:
            save()
    save()
    print(f"done at step {step}", flush=True)


if __name__ == "__main__":
    main()
