#!/usr/bin/env python3
"""Stage 2: train the unified MoT model jointly on captioning + VQA (CE) and text-to-image + editing
(flow-matching MSE), with a 1 -> 2 -> 4 object curriculum, condition dropout and EMA weights.
The VAE from stage 1 is frozen; latents are precomputed once per dataset (cached under RUN/).

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/train_unified.py \
      --data data/train1,data/train2,data/train --vae runs/vae/vae.ckpt --run runs/unified --steps 20000
Resumes from RUN/unified.ckpt. Writes RUN/loss.csv.
"""
import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyperbagel.utils import setup_threads, seed_all, save_ckpt, load_ckpt, lite_ckpt, CsvLog, EMA, Timer  # noqa: E402
from hyperbagel.utils import positive_int, non_negative_int, positive_float, fraction  # noqa: E402
from hyperbagel.ckpts import require_vae, require_unified, require_data, data_key, refuse_overwrite, is_vae, check_vae_matches  # noqa: E402

setup_threads()
import json  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from hyperbagel.config import DEFAULT, TINY, ModelConfig  # noqa: E402
from hyperbagel.model import Unified, VAE, warm_start_state, trainable_subset  # noqa: E402
from hyperbagel.tokenizer import WordTokenizer  # noqa: E402
from hyperbagel.data import ShapesData, understanding_seq, followup_seq, t2i_seq, edit_seq, think_seq, has_short_prompts, collate, attribute_groups  # noqa: E402
from hyperbagel.losses import joint_loss  # noqa: E402


CURRICULUM_SETS = (1, 2, 3)  # the numbers of --data folders curriculum() has a schedule for


def curriculum(step, n_sets, boundaries):
    """Mixture weights over the data sets (ordered from fewest to most objects): one set alone; two sets 70/30 %
    before the first boundary, then 20/80 %; three sets 70/30/0 %, 25/45/30 % from the first boundary, 10/25/65 %
    from the second (docs/recipes.md)."""
    if n_sets == 1:
        return [1.0]
    if n_sets == 2:
        return [0.7, 0.3] if step < boundaries[0] else [0.2, 0.8]
    if step < boundaries[0]:
        return [0.7, 0.3, 0.0]
    if step < boundaries[1]:
        return [0.25, 0.45, 0.3]
    return [0.1, 0.25, 0.65]


def load_vae(path):
    ck = require_vae(path, "--vae")
    c = ModelConfig.from_dict(ck["config"])
    vae = VAE(c)
    vae.load_state_dict(ck["ema"])
    vae.eval()
    for p in vae.parameters():
        p.requires_grad_(False)
    vae.image_size = c.gen_image_size
    return vae, float(ck["scale"]), c


def vae_key(path, scale):
    """What the cached latents depend on: the VAE (its resolved path) and the latent scale."""
    import hashlib
    return hashlib.sha1(f"{os.path.realpath(path)}|{scale!r}".encode()).hexdigest()[:10]


def check_resume_vae(ck, path, scale):
    """A resumed run must encode with the VAE it was trained on: its cached latents and its model's latent space
    come from it. The same file (resolved path) or, where the checkpoint's file is gone (a run moved to another
    machine) or is another copy, a VAE with the same encoder weights and latent scale (ckpts.check_vae_matches,
    which export_pack.py and eval_ckpt.py run too)."""
    old = ck.get("vae")
    check_vae_matches(ck, path, scale, "--vae", f"resume with --vae {old}, or start a new --run" if old else "start a new --run")


def learning_rate(lr, step, warm_from, warmup, cooldown_from, steps, schedule=2):
    """The lr of the step after `step` steps: a linear warm-up over `warmup` steps from `warm_from`, then, with
    `cooldown_from` S > 0, a linear decay from step S to 10 % at the last step (--steps): step k (1-based, k > S)
    trains at lr * (1 - 0.9 * (k - S) / (steps - S)). `schedule` 1 is the decay before it reached 10 %
    (lr * (1 - 0.9 * (k - 1 - S) / (steps - S))): a checkpoint from before `lr_schedule` was recorded that was
    already decaying keeps it, so a resumed run trains as the uninterrupted one did."""
    x = lr * min(1.0, (step + 1 - warm_from) / warmup)
    if cooldown_from and step >= cooldown_from:
        done = step + 1 - cooldown_from if schedule >= 2 else step - cooldown_from
        x *= 1.0 - 0.9 * done / max(1, steps - cooldown_from)
    return x


def train_only_flag(v):
    return f"--train-only {v}" if v else "no --train-only (every parameter)"


def build_model(args_tiny, vocab, vae_cfg, overrides=None):
    c = ModelConfig.from_dict((TINY if args_tiny else DEFAULT).to_dict())
    # the VAE geometry comes from the VAE checkpoint
    for k in ("gen_image_size", "vae_channels", "latent_channels"):
        setattr(c, k, getattr(vae_cfg, k))
    for k, v in (overrides or {}).items():
        setattr(c, k, v)
    c.vocab = vocab
    return c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/train1,data/train2,data/train")
    ap.add_argument("--vae", default="runs/vae/vae.ckpt")
    ap.add_argument("--run", default="runs/unified")
    ap.add_argument("--steps", type=positive_int, default=20000)
    ap.add_argument("--und", type=non_negative_int, default=12, help="understanding samples per step")
    ap.add_argument("--t2i", type=non_negative_int, default=10, help="text-to-image samples per step")
    ap.add_argument("--edit", type=non_negative_int, default=10, help="editing samples per step")
    ap.add_argument("--think", type=non_negative_int, default=0, help="prompt-expansion (short prompt -> caption) samples per step")
    ap.add_argument("--lr", type=positive_float, default=1e-3)
    ap.add_argument("--warmup", type=positive_int, default=300)
    ap.add_argument("--cooldown-from", type=non_negative_int, default=0,
                    help="linear lr decay from this step, reaching 10%% at the last step (--steps); below --steps "
                         "(0 = constant lr)")
    ap.add_argument("--ema", type=fraction, default=0.999)
    ap.add_argument("--curriculum", default="1500,4000")
    ap.add_argument("--limit", type=positive_int, default=None, help="use only the first N records of each set (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=positive_int, default=200)
    ap.add_argument("--log-every", type=positive_int, default=25)
    ap.add_argument("--tiny", action="store_true", help="TINY config (smoke test)")
    ap.add_argument("--hidden", type=positive_int, default=None)
    ap.add_argument("--layers", type=positive_int, default=None,
                    help="decoder layers; with --init-weights, grow a shallower checkpoint to this many (identity layers appended)")
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda); checkpoints are always saved as CPU tensors")
    ap.add_argument("--init-weights", default=None,
                    help="when RUN has no checkpoint: start from this checkpoint's EMA weights and step (e.g. a lite one "
                         "written by --save-lite), with a fresh optimizer re-warmed over --warmup steps")
    ap.add_argument("--shift-aug", type=non_negative_int, default=0,
                    help="understanding images translated by up to this many pixels per axis (0 = off)")
    ap.add_argument("--train-only", default=None, choices=["vision", "readout", "vision+readout", "understanding", "generation"],
                    help="update only these parameters (vision: the ViT and its connector; text-to-image is then "
                         "untouched, editing is not. readout: what only writes text (readout_parameter), so every "
                         "generation and editing output stays bitwise the same. vision+readout: both. understanding: everything but the "
                         "generation path (a diagnostic: the prompt's context for images then changes too). generation: only the "
                         "generation path (generation_parameter), so every text output stays bitwise the same")
    ap.add_argument("--vit-input", choices=["rgb", "mask", "rgb+mask"], default=None,
                    help="what the vision encoder's conv stem sees (ModelConfig.vit_input); for a new run, or to "
                         "warm-start rgb+mask from an RGB --init-weights checkpoint (the mask channel starts at zero)")
    ap.add_argument("--vit-colour", action="store_true",
                    help="add the shape-free per-token colour feature (ModelConfig.vit_colour; from --init-weights its "
                         "projection starts at zero)")
    ap.add_argument("--vit-rgb-drop", type=fraction, default=0.0,
                    help="with --vit-input rgb+mask: the fraction of training images whose RGB channels the stem does "
                         "not see (it still gets the mask and the colour feature), so a warm-started model learns to "
                         "read objects from the factorised inputs")
    ap.add_argument("--attr-noise", type=fraction, default=0.0,
                    help="understanding answers: the probability that the model reads a colour or shape word replaced by "
                         "a random one of its kind while learning to write the true one (data.attribute_noise)")
    ap.add_argument("--factor-drop", type=fraction, default=0.0,
                    help="with --vit-input rgb+mask: the fraction of understanding samples that are captions of an image "
                         "hiding its objects' shapes or their colours, with the hidden words untrained "
                         "(data.understanding_seq), so colour words are read without the shape and shape words without the colour")
    ap.add_argument("--factor-drop-words", action="store_true",
                    help="with --factor-drop: the hidden group's words are also random in the answer the model reads "
                         "(the targets stay true), so the text before a word cannot tell it either")
    ap.add_argument("--followup", type=float, default=0.0,
                    help="the fraction of understanding samples that are two turns about one image, as a session holds "
                         "them (data.followup_seq): the second question is answered after the first answer's EOS")
    ap.add_argument("--save-lite", default=None, help="also write the EMA weights, step and config (no optimizer) here at the end")
    a = ap.parse_args()
    if a.und + a.t2i + a.edit + a.think == 0:
        sys.exit("--und, --t2i, --edit and --think are all 0: nothing to train on")
    if not 0.0 <= a.followup <= 1.0:
        sys.exit(f"--followup {a.followup}: a fraction in [0, 1]")
    if a.cooldown_from and a.cooldown_from >= a.steps:
        sys.exit(f"--cooldown-from {a.cooldown_from}: the decay must start before --steps {a.steps} (it reaches 10 % "
                 "at the last step); a first segment that stops before it: leave --cooldown-from out (the lr is "
                 "constant until then either way)")
    named = [d for d in a.data.split(",") if d]
    if len(named) > max(CURRICULUM_SETS):
        sys.exit(f"--data: {len(named)} folders; the curriculum has schedules for 1, 2 or 3 data sets (fewest objects "
                 "first; docs/recipes.md): merge folders, or train in stages")
    dirs = require_data(named)
    try:
        bounds = [int(x) for x in a.curriculum.split(",")]
    except ValueError:
        sys.exit(f"--curriculum {a.curriculum!r}: expected comma-separated step numbers, e.g. 1500,4000")
    if len(dirs) > 1 and len(bounds) < len(dirs) - 1:
        sys.exit(f"--curriculum {a.curriculum!r}: {len(dirs)} data sets need {len(dirs) - 1} boundaries")
    dev = torch.device(a.device)
    ckpt_path = os.path.join(a.run, "unified.ckpt")
    if a.save_lite:  # checked before training: it is written at the end
        refuse_overwrite(a.save_lite, "--save-lite", [("--vae", a.vae), ("the run's checkpoint", ckpt_path), ("--init-weights", a.init_weights)])
        if not os.path.isdir(os.path.dirname(os.path.abspath(a.save_lite))):
            sys.exit(f"--save-lite {a.save_lite!r}: no folder {os.path.dirname(os.path.abspath(a.save_lite))!r}")
    if os.path.exists(a.run) and not os.path.isdir(a.run):
        sys.exit(f"--run {a.run!r} is a file: give a folder for the run")
    ck = load_ckpt(ckpt_path, f"--run {a.run!r}: its unified.ckpt (delete it to start afresh)", ("model", "ema", "opt", "step", "config"))
    if ck is not None and is_vae(ck):
        sys.exit(f"--run {a.run!r}: its unified.ckpt is a VAE checkpoint, not a unified run's")
    if ck and a.steps < ck["step"]:
        print(f"{ckpt_path} is already at step {ck['step']}, past --steps {a.steps}: nothing to do", flush=True)
        return
    # the parameters a run trains are in its optimizer state: a resume must train the same ones (checkpoints from
    # before train_only was recorded are checked when the optimizer state loads)
    if ck and "train_only" in ck and ck["train_only"] != a.train_only:
        want = f"pass --train-only {ck['train_only']}" if ck["train_only"] else "leave --train-only out"
        sys.exit(f"{ckpt_path} was trained with {train_only_flag(ck['train_only'])}; resuming it with "
                 f"{train_only_flag(a.train_only)} is refused ({want}, or start a new --run)")
    init = None
    if a.init_weights and not ck:
        init = require_unified(a.init_weights, "--init-weights")
        if a.steps < init["step"]:
            sys.exit(f"--steps {a.steps}: the --init-weights checkpoint is already at step {init['step']}")
    vae, scale, vcfg = load_vae(a.vae)
    if ck:
        check_resume_vae(ck, a.vae, scale)

    tok_path = os.path.join(a.run, "tokenizer.json")
    data_tok = WordTokenizer(json.load(open(os.path.join(dirs[0], "meta.json")))["vocabulary"])
    tok = WordTokenizer.load(tok_path) if os.path.exists(tok_path) else data_tok
    init_tok_path = os.path.join(os.path.dirname(os.path.abspath(a.init_weights)), "tokenizer.json") if init else None
    if init_tok_path and os.path.exists(init_tok_path):
        # the checkpoint's vocabulary (import_pack.py and gpu_leg.sh write tokenizer.json next to it) is what its
        # embeddings and LM head are indexed by: a data set (or run folder) with another one would scramble them
        init_tok = WordTokenizer.load(init_tok_path)
        if tok.vocab != init_tok.vocab:
            src = tok_path if os.path.exists(tok_path) else f"{dirs[0]}/meta.json"
            diff = sorted(set(tok.vocab) ^ set(init_tok.vocab))[:6]
            sys.exit(f"--init-weights: the vocabulary of {src} ({len(tok)} tokens) differs from the checkpoint's "
                     f"{init_tok_path} ({len(init_tok)} tokens; e.g. {diff or 'the order'}): use data made for that "
                     "model, or a matching tokenizer")
    # every folder is encoded with this one tokenizer: a word it lacks would train as <unk> in prompts and targets
    src = tok_path if os.path.exists(tok_path) else f"{dirs[0]}/meta.json"
    for d in dirs:
        meta = json.load(open(os.path.join(d, "meta.json")))
        missing = [w for w in (meta.get("vocabulary") or []) if w.strip().lower() and w.strip().lower() not in tok.ids]
        if missing:
            sys.exit(f"--data {d!r}: its vocabulary (meta.json) has {len(missing)} words the tokenizer ({src}, "
                     f"{len(tok)} tokens) lacks (e.g. {missing[:6]}): they would train as <unk>; use data of one "
                     "vocabulary (or name first the folder whose vocabulary holds the others')")
    if (ck or init) and len(tok) != (ck or init)["config"]["vocab"]:
        sys.exit(f"the tokenizer ({len(tok)} tokens) does not fit the checkpoint's vocabulary of "
                 f"{(ck or init)['config']['vocab']} tokens")
    os.makedirs(a.run, exist_ok=True)
    seed_all(a.seed)
    if not os.path.exists(tok_path):
        tok.save(tok_path)
    vae.to(dev)
    if ck or init:
        c = ModelConfig.from_dict((ck or init)["config"])
        if init and not ck:  # the factorised vision inputs can be added when warm-starting, not on resume
            c.vit_input = a.vit_input or c.vit_input
            c.vit_colour = c.vit_colour or a.vit_colour
            if a.layers and a.layers != c.layers:  # growth: warm_start_state appends identity layers
                if a.layers < c.layers:
                    sys.exit(f"--layers {a.layers}: cannot warm-start from a deeper checkpoint ({c.layers} layers)")
                c.layers = a.layers
    else:
        ov = {k: v for k, v in (("hidden", a.hidden), ("layers", a.layers)) if v}
        ov.update({k: v for k, v in (("vit_input", a.vit_input), ("vit_colour", a.vit_colour)) if v})
        c = build_model(a.tiny, len(tok), vcfg, ov)
    sets = []
    timer = Timer()
    vkey = vae_key(a.vae, scale)
    for i, d in enumerate(dirs):
        ds = ShapesData(d, tok, limit=a.limit)
        # the cache's name holds the VAE's key: latents of another VAE (or scale) are never reused
        ds.attach_latents(vae, scale, os.path.join(a.run, f"latents_{os.path.basename(d.rstrip('/'))}_{ds.n}_{vkey}_{data_key(d)}.npz"),
                          device=dev)
        sets.append(ds)
        print(f"data {d}: {ds.n} records, latents {ds.latents.shape} ({timer():.0f}s)", flush=True)

    # records with short (GenEval-style) prompts besides their caption: the think task's material
    thinkable = [[i for i in range(ds.n) if has_short_prompts(ds, i)] for ds in sets]
    if a.think and not any(thinkable):
        sys.exit("--think needs records with short prompts besides the caption (records.jsonl 'prompts')")
    model = Unified(c).to(dev)
    if a.vit_rgb_drop:
        if c.vit_input != "rgb+mask":
            sys.exit("--vit-rgb-drop needs a model with vit_input rgb+mask")
        model.vision.rgb_drop = a.vit_rgb_drop
    if a.factor_drop and c.vit_input != "rgb+mask":
        sys.exit("--factor-drop needs a model with vit_input rgb+mask")
    if a.train_only:
        keep = trainable_subset(a.train_only, c.layers)
        for name, p in model.named_parameters():
            p.requires_grad_(keep(name))
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=a.lr, betas=(0.9, 0.95), weight_decay=0.01)
    ema = EMA(model, a.ema)
    step = 0
    warm_from = 0  # the step the learning-rate warm-up counts from (a fresh optimizer re-warms)
    think_samples = 0  # prompt-expansion sequences trained so far (export_pack.py declares prompts.think from it)
    followup_samples = 0  # two-turn sequences trained so far (export_pack.py declares prompts.session_context from it)
    if init:
        weights = warm_start_state(init["ema"], model)
        model.load_state_dict(weights)
        ema.model.load_state_dict(weights)
        step = warm_from = init["step"]
        think_samples = init.get("think_samples", 0)
        followup_samples = init.get("followup_samples", 0)
        print(f"initialised from the EMA weights of {a.init_weights} at step {step} (fresh optimizer)", flush=True)
    if ck:
        think_samples = ck.get("think_samples", 0)
        followup_samples = ck.get("followup_samples", 0)
        model.load_state_dict(ck["model"])
        ema.model.load_state_dict(ck["ema"])
        try:
            opt.load_state_dict(ck["opt"])
        except ValueError as e:  # a checkpoint from before train_only was recorded, resumed with another set
            sys.exit(f"{ckpt_path}: its optimizer state does not fit the parameters this command trains "
                     f"({train_only_flag(a.train_only)}; {e}): resume with the run's own --train-only, or start a new --run")
        step = ck["step"]
        warm_from = ck.get("warm_from", 0)
        torch.set_rng_state(ck["rng"])
        if dev.type == "cuda":  # CUDA draws (noise on the device) go on where they stopped, where the checkpoint has them
            if ck.get("cuda_rng"):
                torch.cuda.set_rng_state_all(list(ck["cuda_rng"])[:torch.cuda.device_count()])
            else:
                print("note: the checkpoint holds no CUDA RNG state (written on the CPU): CUDA draws restart from --seed", flush=True)
        print(f"resumed from {ckpt_path} at step {step}", flush=True)
    # a checkpoint from before lr_schedule was recorded that was already decaying keeps the decay it ran with
    schedule = 1 if ck and ck.get("lr_schedule", 1) == 1 and a.cooldown_from and ck["step"] > a.cooldown_from else 2
    if schedule == 1:
        print(f"note: {ckpt_path} was decaying its lr under the earlier schedule (one step short of 10 % at the end); "
              "it keeps it", flush=True)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"unified params {nparams / 1e6:.2f}M, config {c.to_dict()}", flush=True)
    rng = random.Random(a.seed * 1000003 + step)
    if ck and "py_rng" in ck:  # the data sampler's state: a resumed run draws what an uninterrupted one would
        rng.setstate(ck["py_rng"])
    attr_groups = attribute_groups(tok)
    nv, n = c.vit_grid ** 2, c.latent_grid ** 2
    log = CsvLog(os.path.join(a.run, "loss.csv"), ["step", "loss", "ce", "mse", "tok_acc", "lr", "sec_per_step", "elapsed"],
                 resume_step=step)  # rows after the checkpoint (a run stopped before its next one) are dropped
    t_last, acc = timer(), []

    def cpu(sd):
        return {k: (cpu(v) if isinstance(v, dict) else v.cpu() if torch.is_tensor(v) else v) for k, v in sd.items()}

    def save():
        obj = {"model": cpu(model.state_dict()), "ema": cpu(ema.model.state_dict()), "opt": cpu(opt.state_dict()),
               "step": step, "warm_from": warm_from, "rng": torch.get_rng_state(), "py_rng": rng.getstate(), "config": c.to_dict(),
               "think_samples": think_samples, "followup_samples": followup_samples, "vae": os.path.abspath(a.vae), "scale": scale,
               "train_only": a.train_only, "lr_schedule": schedule}
        if dev.type == "cuda":
            obj["cuda_rng"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
        save_ckpt(ckpt_path, obj)

    while step < a.steps:
        w = curriculum(step, len(sets), bounds)

        def pick():
            ds = rng.choices(sets, weights=w)[0]
            return ds, rng.randrange(ds.n)
        seqs = []
        for _ in range(a.und):
            ds, i = pick()
            if a.followup and rng.random() < a.followup:
                followup_samples += 1
                seqs.append(followup_seq(tok, ds, i, rng, nv, shift=a.shift_aug, noise=(attr_groups, a.attr_noise),
                                         factor_drop=(attr_groups, a.factor_drop, a.factor_drop_words)))
                continue
            seqs.append(understanding_seq(tok, ds, i, rng, nv, shift=a.shift_aug, noise=(attr_groups, a.attr_noise),
                                           factor_drop=(attr_groups, a.factor_drop, a.factor_drop_words)))
        for _ in range(a.t2i):
            ds, i = pick()
            seqs.append(t2i_seq(tok, ds, i, rng, n))
        for _ in range(a.edit):
            ds, i = pick()
            seqs.append(edit_seq(tok, ds, i, rng, nv, n))
        for _ in range(a.think):
            tw = [wi if thinkable[k] else 0 for k, wi in enumerate(w)]
            ds = rng.choices(sets, weights=tw if sum(tw) else [1 if t else 0 for t in thinkable])[0]
            seqs.append(think_seq(tok, ds, rng.choice(thinkable[sets.index(ds)]), rng))
        think_samples += a.think
        b = collate(seqs, dev)
        lr = learning_rate(a.lr, step, warm_from, a.warmup, a.cooldown_from, a.steps, schedule)
        for g in opt.param_groups:
            g["lr"] = lr
        model.train()
        loss, out = joint_loss(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        step += 1
        ema.update(model, step)
        acc.append(out)
        if step % a.log_every == 0 or step == a.steps:
            el = timer()
            sps = (el - t_last) / len(acc)
            t_last = el
            # a mix without text (or without images) has no ce/acc (mse): nan in the log, without numpy's warning
            m = {k: float(np.mean(v)) if (v := [o[k] for o in acc if k in o]) else float("nan")
                 for k in ("loss", "ce", "mse", "tok_acc")}
            acc = []
            log.write({"step": step, **{k: f"{v:.4f}" for k, v in m.items()}, "lr": f"{lr:.2e}",
                       "sec_per_step": f"{sps:.3f}", "elapsed": f"{el:.0f}"})
            print(f"step {step} loss {m['loss']:.4f} ce {m['ce']:.4f} mse {m['mse']:.4f} acc {m['tok_acc']:.3f} "
                  f"lr {lr:.1e} {sps:.3f}s/step", flush=True)
        if step % a.ckpt_every == 0:
            save()
    save()
    if a.save_lite:
        save_ckpt(a.save_lite, lite_ckpt({"ema": cpu(ema.model.state_dict()), "step": step, "config": c.to_dict(),
                                          "think_samples": think_samples, "followup_samples": followup_samples, "scale": scale}))
    print(f"done at step {step}", flush=True)


if __name__ == "__main__":
    main()
