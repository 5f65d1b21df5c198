#!/usr/bin/env python3
"""Train the speculative draft with training-time test (unrolled draft steps feeding back the draft's own
features) against the frozen target. Seeded, resumable (RUN/draft.ckpt), CSV loss (RUN/loss.csv).

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/accel/train_draft.py --target runs/unified/unified.ckpt \
      --train runs/draft/data_train.jsonl --run runs/draft/full --variant full --steps 3000
Variants: full | eagle3 | noinit | noce."""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accel.common import target_from_args, torch  # noqa: E402
from accel.draft import Draft, DraftConfig, draft_loss  # noqa: E402
from hyperbagel.data import Seq, VIT, collate, ShapesData  # noqa: E402
from hyperbagel.ckpts import require_training_split  # noqa: E402
from hyperbagel.losses import embed_batch  # noqa: E402
from hyperbagel.utils import (seed_all, save_ckpt, require_ckpt, CsvLog, Timer, positive_int, non_negative_int,  # noqa: E402
                              positive_float)


def read_draft_rows(path, what):
    """draft_data.py's JSONL (one regenerated answer per line: data, index, ...): one line naming the problem when
    the file is another kind (a dataset's records.jsonl, a binary file) or cut short."""
    try:
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(x) for x in f if x.strip()]
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SystemExit(f"{what} {path!r}: not draft data ({type(e).__name__}: {e}); write it with draft_data.py")
    bad = next((r for r in rows if not (isinstance(r, dict) and "data" in r and "index" in r)), None)
    odd = next((r for r in rows if bad is None and "offset" in r and not (
        isinstance(r["offset"], list) and len(r["offset"]) == 2 and all(type(v) is int for v in r["offset"]))), None)
    if odd is not None:
        raise SystemExit(f"{what} {path!r}: a row's 'offset' is {odd['offset']!r}, not [dx, dy] (two integers)")
    if not rows or bad is not None:
        raise SystemExit(f"{what} {path!r}: not draft data (each line needs 'data' and 'index'; a dataset's records.jsonl "
                         "is the input of draft_data.py, not its output)")
    return rows


class DraftData:
    def __init__(self, path, tok, limit=None, what="--train"):
        self.rows = read_draft_rows(path, what)
        if limit:
            self.rows = self.rows[:limit]
        self.sets = {}
        for r in self.rows:
            if r["data"] not in self.sets:
                n = max(rr["index"] for rr in self.rows if rr["data"] == r["data"]) + 1
                self.sets[r["data"]] = ShapesData(r["data"], tok, limit=n)
        self.tok = tok

    def seq(self, k, nv):
        r, tok = self.rows[k], self.tok
        s = Seq()
        s.text([tok.bos, tok.vision_start])
        s.block(VIT, nv)
        # the image as the target read it when the row was written (draft_data.py --image-offset)
        dx, dy = r.get("offset", (0, 0))
        s.add_vit((self.sets[r["data"]], r["index"], dx, dy) if dx or dy else (self.sets[r["data"]], r["index"]))
        s.text([tok.vision_end])
        s.text(r["q"])
        s.answer(tok.im_start, r["a"], tok.eos)
        return s


@torch.no_grad()
def target_pass(m, b):
    """Target input embeddings, all layers' hidden states and logits for a collated understanding batch."""
    x, _, _, _ = embed_batch(m, b)
    L = m.c.layers
    B, T, D = x.shape
    empty = [(torch.zeros(B, m.c.heads, 0, m.c.head_dim),) * 2 for _ in range(L)]
    out, _, hid = m.expert_forward("und", x, b["pos"], b["mask"], empty)
    return x, torch.stack(hid, 2), m.lm_head(m.norm(out))


def draft_inputs(m, b):
    x, hs, tl = target_pass(m, b)
    emb = torch.nn.functional.pad(x, (0, 0, 0, 1))[:, 1:]  # row j: input embedding of token j+1
    tl_next = torch.nn.functional.pad(tl, (0, 0, 0, 1))[:, 1:]  # target distribution at row j+1
    lab = torch.nn.functional.pad(b["labels"], (0, 1), value=-100)[:, 1:]
    return emb, hs, tl_next, lab != -100


def build_draft(m, variant, ttt):
    return Draft(m, DraftConfig.of(variant, ttt_steps=ttt))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default=None)
    ap.add_argument("--data", default=None, help="(smoke) dataset folder for a random target's vocabulary")
    ap.add_argument("--train", required=True)
    ap.add_argument("--run", required=True)
    ap.add_argument("--variant", default=None, choices=["full", "eagle3", "noinit", "noce"],
                    help="default full (a resumed run keeps its checkpoint's; naming another is refused)")
    ap.add_argument("--steps", type=positive_int, default=3000)
    ap.add_argument("--batch", type=positive_int, default=16)
    ap.add_argument("--ttt", type=positive_int, default=None,
                    help="unrolled draft steps (default 4; a resumed run keeps its checkpoint's)")
    ap.add_argument("--lr", type=positive_float, default=1e-3)
    ap.add_argument("--warmup", type=non_negative_int, default=100, help="linear lr warm-up steps (0: none)")
    ap.add_argument("--limit", type=positive_int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=positive_int, default=200)
    ap.add_argument("--log-every", type=positive_int, default=25)
    a = ap.parse_args()
    if not a.target and not a.data:
        ap.error("--target (or, for smoke runs, --data for a random target) is required")
    if not os.path.isfile(a.train):
        sys.exit(f"--train: no draft data at {a.train!r} (write it with draft_data.py)")
    ckpt_path = os.path.join(a.run, "draft.ckpt")
    ck = require_ckpt(ckpt_path, "resume", ("model", "opt", "step", "rng", "variant", "dc")) \
        if os.path.exists(ckpt_path) else None
    if ck:
        # the options that define the draft cannot change on resume: it would silently train the checkpoint's
        for opt_name, given, have in (("--variant", a.variant, ck["variant"]), ("--ttt", a.ttt, ck["dc"]["ttt_steps"])):
            if given is not None and given != have:
                sys.exit(f"{ckpt_path} is a {opt_name} {have} run; resuming it with {opt_name} {given} is refused "
                         f"(use another --run, or leave {opt_name} out)")
        if ck["step"] >= a.steps:
            print(f"{ckpt_path} is at step {ck['step']}, --steps {a.steps}: nothing to train (unchanged)", flush=True)
            return
    seed_all(a.seed)
    m, tok, _, _ = target_from_args(a)
    if ck and isinstance(ck.get("config"), dict) and ck["config"] != m.c.to_dict():
        sys.exit(f"{ckpt_path} was trained against a target of another architecture than --target {a.target}")
    data = DraftData(a.train, tok, a.limit)
    for d in data.sets:  # the datasets the draft data was written from
        require_training_split(d, f"--train {a.train!r} (draft data)",
                               "write the draft data from a train export (draft_data.py --data data/train)")
    os.makedirs(a.run, exist_ok=True)  # after the target and the data loaded: bad inputs leave no folder behind
    d = build_draft(m, ck["variant"] if ck else (a.variant or "full"), ck["dc"]["ttt_steps"] if ck else (a.ttt or 4))
    params = [p for p in d.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.95), weight_decay=0.0)
    step = 0
    rng = random.Random(a.seed * 1000003)
    if ck:
        d.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        torch.set_rng_state(ck["rng"])
        if "data_rng" in ck:  # the sampler goes on where it stopped: a resumed run equals an uninterrupted one
            rng.setstate(ck["data_rng"])
        else:  # checkpoints from before data_rng: re-seeded from the step, as they were
            rng = random.Random(a.seed * 1000003 + step)
        print(f"resumed from {ckpt_path} at step {step}", flush=True)
    print(f"draft {d.dc.variant}: {sum(p.numel() for p in d.parameters()) / 1e6:.3f}M params, "
          f"{len(data.rows)} sequences", flush=True)
    nv = m.c.vit_grid ** 2
    # rows logged after the checkpoint (by a run stopped before its next one) are dropped on resume, and a fresh
    # run (step 0) drops the log of a run whose checkpoint was deleted
    log = CsvLog(os.path.join(a.run, "loss.csv"), ["step", "loss"] + [f"{k}{s}" for s in range(d.dc.ttt_steps)
                                                                       for k in ("kl", "acc")] + ["lr", "elapsed"],
                 resume_step=step)
    timer = Timer()

    def save():
        save_ckpt(ckpt_path, {"model": d.state_dict(), "opt": opt.state_dict(), "step": step,
                              "rng": torch.get_rng_state(), "data_rng": rng.getstate(), "variant": d.dc.variant,
                              "dc": d.dc.to_dict(), "config": m.c.to_dict(),
                              "target": os.path.abspath(a.target) if a.target else None})
    acc = []
    while step < a.steps:
        b = collate([data.seq(rng.randrange(len(data.rows)), nv) for _ in range(a.batch)])
        emb, hs, tl, valid = draft_inputs(m, b)
        lr = a.lr * min(1.0, (step + 1) / a.warmup) if a.warmup else a.lr
        for g in opt.param_groups:
            g["lr"] = lr
        d.train()
        outs = d.ttt(emb, hs, b["pos"], b["mask"], d.dc.ttt_steps)
        loss, logs = draft_loss(outs, tl, valid, d.dc)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        logs["loss"] = float(loss)
        acc.append(logs)
        if step % a.log_every == 0 or step == a.steps:
            row = {k: sum(o.get(k, 0.0) for o in acc) / len(acc) for k in acc[0]}
            acc = []
            log.write({"step": step, **{k: f"{v:.4f}" for k, v in row.items()}, "lr": f"{lr:.2e}",
                       "elapsed": f"{timer():.0f}"})
            print(f"step {step} loss {row['loss']:.4f} kl0 {row.get('kl0', 0):.4f} acc0 {row.get('acc0', 0):.3f} "
                  f"acc{d.dc.ttt_steps - 1} {row.get(f'acc{d.dc.ttt_steps - 1}', 0):.3f}", flush=True)
        if step % a.ckpt_every == 0:
            save()
    save()
    print(f"done at step {step}", flush=True)


if __name__ == "__main__":
    main()
