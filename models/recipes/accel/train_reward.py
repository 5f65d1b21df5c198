#!/usr/bin/env python3
"""The reward model for ReFL (plays HPSv3's role): a small image-prompt scorer trained contrastively (CLIP-style
InfoNCE, both directions) on VAE reconstructions of Shapes images paired with their prompts. Never the
evaluator's detector. Saves RUN/reward.pt with `alpha` = mean reward of matched held-out pairs (the ReFL hinge).

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/accel/train_reward.py --target runs/unified/unified.ckpt \
      --data data/train --run runs/gen/reward --steps 1500"""
import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accel.common import target_from_args, load_sets, torch  # noqa: E402
from accel.gen import Reward  # noqa: E402
from hyperbagel.utils import seed_all, save_ckpt, load_ckpt, CsvLog, Timer  # noqa: E402

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
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--log-every", type=int, default=25)
    a = ap.parse_args()
    os.makedirs(a.run, exist_ok=True)
    seed_all(a.seed)
    m, tok, vae, scale = target_from_args(a)
    batch.scale = scale
    sets = load_sets(a.data.split(",")[0], tok, vae, scale, cache_dir=a.run, limit=a.limit)
    n = sets[0].n
    hold = max(a.batch, n // 10)  # last images held out for alpha / retrieval accuracy
    B = min(a.batch, n - hold)
    r = Reward(m.c.vocab)
    opt = torch.optim.AdamW(r.parameters(), lr=a.lr, weight_decay=0.01)
    path = os.path.join(a.run, "reward.pt")
    ck = load_ckpt(path)
    step = 0
    if ck:
        r.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        torch.set_rng_state(ck["rng"])
        print(f"resumed from {path} at step {step}", flush=True)
    rng = random.Random(a.seed * 1000003 + step)
    log = CsvLog(os.path.join(a.run, "loss.csv"), ["step", "loss", "acc", "elapsed"])
    timer = Timer()

    def held_out():
        hr = random.Random(1)
        r.eval()
        with torch.no_grad():
            px, pr = batch(vae, sets, hr, min(hold, 256), n - hold, n)
            lg = r.pair_logits(px, pr)
            acc = float((lg.argmax(1) == torch.arange(len(pr))).float().mean())
            alpha = float(lg.diag().mean())
            neg = float((lg.sum() - lg.diag().sum()) / (lg.numel() - len(pr)))
        return acc, alpha, neg

    def save():
        acc, alpha, neg = held_out()
        save_ckpt(path, {"model": r.state_dict(), "opt": opt.state_dict(), "step": step, "rng": torch.get_rng_state(),
                         "alpha": alpha, "heldout_acc": acc, "neg_mean": neg, "vocab": m.c.vocab})
        return acc, alpha, neg
    accs = []
    while step < a.steps:
        r.train()
        px, pr = batch(vae, sets, rng, B, 0, n - hold)
        lg = r.pair_logits(px, pr)
        lab = torch.arange(B)
        loss = 0.5 * (F.cross_entropy(lg, lab) + F.cross_entropy(lg.t(), lab))
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
    acc, alpha, neg = save()
    print(f"done at step {step}: held-out retrieval acc {acc:.3f}, alpha (matched mean) {alpha:.3f}, "
          f"mismatched mean {neg:.3f}", flush=True)


if __name__ == "__main__":
    main()
