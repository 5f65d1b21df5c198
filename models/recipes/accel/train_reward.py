#!/usr/bin/env python3
"""The reward model for ReFL (plays HPSv3's role): a small image-prompt scorer trained contrastively (CLIP-style
InfoNCE, both directions) on VAE reconstructions of Shapes images paired with their prompts. Never the
evaluator's detector. Saves RUN/reward.pt with `alpha` = mean reward of matched held-out pairs (the ReFL hinge).

Each image's row also holds --hard-negatives one-word edits of its prompt that make it false (swapped colours,
another shape, count, direction, ...; accel/hard_negatives.py), so the scorer must read attribute binding and
layout, which is what ReFL should push the 1-NFE generator towards. `hard_acc` (held out) is the fraction of
such edits scored below the true prompt; --eval prints it for an existing reward.pt (e.g. a "bow" one).

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/accel/train_reward.py --target runs/unified/unified.ckpt \
      --data data/train --run runs/gen/reward --steps 1500"""
import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accel.common import target_from_args, load_sets, torch  # noqa: E402
from accel.gen import Reward  # noqa: E402
from accel.hard_negatives import perturb_ids  # noqa: E402
from hyperbagel.ckpts import require_training_split  # noqa: E402
from hyperbagel.utils import (seed_all, save_ckpt, require_ckpt, CsvLog, Timer, positive_int, non_negative_int,  # noqa: E402
                              positive_float)

F = torch.nn.functional


def batch(vae, sets, rng, B, lo=0, hi=None):
    ds = sets[0]
    hi = hi or ds.n
    idx = rng.sample(range(lo, hi), B)
    lat = torch.from_numpy(ds.latents[idx]).float()
    with torch.no_grad():
        px = vae.decode(lat / batch.scale).clamp(-1, 1)
    prompts = [ds.prompt_ids[i][rng.randrange(len(ds.prompt_ids[i]))] for i in idx]
    return px, prompts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default=None)
    ap.add_argument("--data", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--steps", type=positive_int, default=1500)
    ap.add_argument("--batch", type=positive_int, default=64)
    ap.add_argument("--lr", type=positive_float, default=1e-3)
    ap.add_argument("--limit", type=positive_int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=positive_int, default=200)
    ap.add_argument("--log-every", type=positive_int, default=25)
    # defaults: the first reward model. On release 4, the stronger scorers (seq, hard negatives) read binding
    # and layout better (held-out hard_acc 0.81 vs 0.67) but made ReFL's 1-NFE GenEval worse (docs/results.md)
    ap.add_argument("--arch", choices=Reward.ARCHS, default=None,
                    help="bow (default): bag-of-words text; seq: order-aware text (a resumed run keeps its checkpoint's)")
    ap.add_argument("--hard-negatives", type=non_negative_int, default=0, help="one-word false edits of each prompt per row")
    ap.add_argument("--eval", action="store_true", help="only print the held-out metrics of RUN/reward.pt")
    a = ap.parse_args()
    if not a.eval:  # --eval only scores a trained reward
        require_training_split(a.data.split(",")[0])
    path = os.path.join(a.run, "reward.pt")
    ck = require_ckpt(path, "resume", ("model", "opt", "step", "rng", "vocab")) if os.path.exists(path) else None
    if a.eval and not ck:
        sys.exit(f"--eval: no reward.pt in {a.run}")
    if ck and not a.eval:
        if a.arch is not None and a.arch != ck.get("arch", "bow"):
            sys.exit(f"{path} is an --arch {ck.get('arch', 'bow')} reward; resuming it with --arch {a.arch} is refused "
                     f"(use another --run, or leave --arch out)")
        if ck["step"] >= a.steps:
            print(f"{path} is at step {ck['step']}, --steps {a.steps}: nothing to train (unchanged)", flush=True)
            return
    seed_all(a.seed)
    m, tok, vae, scale = target_from_args(a)
    os.makedirs(a.run, exist_ok=True)  # after the target loaded: a bad --target leaves no folder behind
    if vae is None:
        sys.exit(f"--target {a.target}: its VAE checkpoint (the 'vae' path inside it) is missing")
    if ck and ck["vocab"] != m.c.vocab:
        sys.exit(f"{path} was trained for a vocabulary of {ck['vocab']}, --target has {m.c.vocab}")
    batch.scale = scale
    sets = load_sets(a.data.split(",")[0], tok, vae, scale, cache_dir=a.run, limit=a.limit)
    n = sets[0].n
    hold = max(a.batch, n // 10)  # last images held out for alpha / retrieval accuracy
    B = min(a.batch, n - hold)
    if B < 2 and not a.eval:
        sys.exit(f"--data {a.data}: {n} images are too few for --batch {a.batch} (the last max(batch, n/10) are held out)")
    r = Reward(m.c.vocab, arch=ck.get("arch", "bow") if ck else (a.arch or "bow"))
    opt = torch.optim.AdamW(r.parameters(), lr=a.lr, weight_decay=0.01)
    step = 0
    rng = random.Random(a.seed * 1000003)
    if ck:
        r.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        torch.set_rng_state(ck["rng"])
        if "data_rng" in ck:  # the sampler goes on where it stopped: a resumed run equals an uninterrupted one
            rng.setstate(ck["data_rng"])
        else:  # checkpoints from before data_rng: re-seeded from the step, as they were
            rng = random.Random(a.seed * 1000003 + step)
        print(f"resumed from {path} at step {step}", flush=True)
    timer = Timer()

    def negatives(prompts, nrng, k):
        """[B, k] false prompts per row; rows whose prompt admits fewer edits borrow other rows' prompts."""
        out = []
        for i, p in enumerate(prompts):
            ns = perturb_ids(p, tok, nrng, k)
            while len(ns) < k:
                ns.append(prompts[(i + 1 + len(ns)) % len(prompts)])
            out.append(ns)
        return out

    def held_out():
        hr = random.Random(1)
        r.eval()
        with torch.no_grad():
            px, pr = batch(vae, sets, hr, min(hold, 256), n - hold, n)
            lg = r.pair_logits(px, pr)
            acc = float((lg.argmax(1) == torch.arange(len(pr))).float().mean())
            alpha = float(lg.diag().mean())
            neg = float((lg.sum() - lg.diag().sum()) / (lg.numel() - len(pr)))
            # only true edits count (no borrowed rows): matched prompt must outscore each of its false edits
            wins = []
            for i, p in enumerate(pr):
                ns = perturb_ids(p, tok, hr, 3)
                if ns:
                    s = r.scores(px[i:i + 1], [[p] + ns])[0]
                    wins += (s[0] > s[1:]).tolist()
            hard = sum(wins) / max(1, len(wins))
        return {"heldout_acc": acc, "alpha": alpha, "neg_mean": neg, "hard_acc": hard}

    if a.eval:
        print({"arch": r.arch, "step": step, **{k: round(v, 4) for k, v in held_out().items()}}, flush=True)
        return
    # rows logged after the checkpoint (by a run stopped before its next one) are dropped on resume, and a fresh
    # run (step 0) drops the log of a run whose checkpoint was deleted
    log = CsvLog(os.path.join(a.run, "loss.csv"), ["step", "loss", "acc", "elapsed"], resume_step=step)

    def save():
        h = held_out()
        save_ckpt(path, {"model": r.state_dict(), "opt": opt.state_dict(), "step": step, "rng": torch.get_rng_state(),
                         "data_rng": rng.getstate(),
                         "vocab": m.c.vocab, "arch": r.arch, **h})
        return h
    accs = []
    while step < a.steps:
        r.train()
        px, pr = batch(vae, sets, rng, B, 0, n - hold)
        lg = r.pair_logits(px, pr)
        lab = torch.arange(B)
        if a.hard_negatives > 0:  # image -> text over the batch's prompts plus the row's own false edits
            lg_i = torch.cat([lg, r.scores(px, negatives(pr, rng, a.hard_negatives))], 1)
        else:
            lg_i = lg
        loss = 0.5 * (F.cross_entropy(lg_i, lab) + F.cross_entropy(lg.t(), lab))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        accs.append((float(loss), float((lg.argmax(1) == lab).float().mean())))
        if step % a.log_every == 0 or step == a.steps:
            l_, a_ = sum(x[0] for x in accs) / len(accs), sum(x[1] for x in accs) / len(accs)
            accs = []
            log.write({"step": step, "loss": f"{l_:.4f}", "acc": f"{a_:.3f}", "elapsed": f"{timer():.0f}"})
            print(f"step {step} loss {l_:.4f} in-batch acc {a_:.3f}", flush=True)
        if step % a.ckpt_every == 0:
            save()
    h = save()
    print(f"done at step {step}: held-out retrieval acc {h['heldout_acc']:.3f}, hard-negative acc {h['hard_acc']:.3f}, "
          f"alpha (matched mean) {h['alpha']:.3f}, mismatched mean {h['neg_mean']:.3f}", flush=True)


if __name__ == "__main__":
    main()
