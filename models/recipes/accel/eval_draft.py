#!/usr/bin/env python3
"""Chain speculative decoding in PyTorch (greedy, K = 10 extrapolation steps) with the draft's own KV cache,
exactly as the engine would run draft.onnx: prefill -> [K draft steps -> target verify -> catch-up]*.
Prints JSON: tau_chain (mean accepted length per round incl. the target's bonus/correction token),
acceptance_10 (accepted / compared draft tokens), per-depth conditional acceptance, and checks that the
output equals plain greedy decoding (lossless).

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/accel/eval_draft.py --target runs/unified/unified.ckpt \
      --test runs/draft/data_test.jsonl --drafts runs/draft/full,runs/draft/eagle3,runs/draft/noinit,runs/draft/noce"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accel.common import target_from_args, torch  # noqa: E402
from hyperbagel.ckpts import require_out_folder  # noqa: E402
from accel.train_draft import DraftData  # noqa: E402
from hyperbagel.data import VIT, CAPTION_PROMPT, collate  # noqa: E402
from hyperbagel.losses import embed_batch  # noqa: E402
from hyperbagel.model import NEG  # noqa: E402
from hyperbagel.utils import require_ckpt, positive_int  # noqa: E402


def load_draft(m, run):
    from accel.export_accel import load_draft_run
    return load_draft_run(m, run, f"--drafts {run}")[0]


def _crop(past, n):
    return [(k[:, :, :n], v[:, :, :n]) for k, v in past]


def causal(T, P):
    mk = torch.zeros(1, 1, T, P + T)
    for i in range(T):
        mk[0, 0, i, P + i + 1:] = NEG
    return mk


@torch.no_grad()
def spec_decode(m, d, x_prompt, pos_prompt, mask_prompt, eos, K=10, max_new=40):
    """x_prompt [1,n,D] prompt input embeddings (ending with <|im_start|>). Returns (tokens, accept lengths,
    compared-per-depth counts, accepted-per-depth counts)."""
    c = m.c
    L = c.layers
    e0 = lambda: [(torch.zeros(1, c.heads, 0, c.head_dim),) * 2 for _ in range(L)]  # noqa: E731
    out, tpast, hid = m.expert_forward("und", x_prompt, pos_prompt, mask_prompt, e0())
    logits = m.lm_head(m.norm(out))
    n = x_prompt.shape[1]
    nxt = int(logits[0, -1].argmax())
    emb = lambda t: m.embed(torch.tensor([[t]]))  # noqa: E731
    # draft prefill: rows 0..n-1, row i gets the input embedding of row i+1 (the new token for the last row)
    dpast = [(torch.zeros(1, c.heads, 0, c.head_dim),) * 2 for _ in range(d.n_layers)]
    hs = torch.stack(hid, 2)
    demb = torch.cat([x_prompt[:, 1:], emb(nxt)], 1)
    D = c.hidden
    dl, feat, dpast = d.step(demb, hs, torch.zeros(1, n, D), torch.zeros(1, n), pos_prompt, mask_prompt, dpast)
    tokens, acc_lens = [], []
    comp = [0] * K
    accd = [0] * K
    pos_next = int(pos_prompt[0, -1]) + 1  # position of `nxt`
    committed = n  # rows in tpast / dpast
    while True:
        if nxt == eos or len(tokens) >= max_new:
            break
        tokens.append(nxt)
        if len(tokens) >= max_new:
            break
        # K draft steps
        drafts = []
        f = feat[:, -1:]
        tok = int(dl[0, -1].argmax())
        tmp = dpast
        for k in range(K):
            drafts.append(tok)
            if k == K - 1:
                break
            P = tmp[0][0].shape[2]
            dl2, f, tmp = d.step(emb(tok), torch.zeros(1, 1, L, D), f, torch.ones(1, 1),
                                 torch.tensor([[pos_next + k]]), torch.zeros(1, 1, 1, P + 1), tmp)
            tok = int(dl2[0, -1].argmax())
        # verify [nxt, d1..dK]
        ver = [nxt] + drafts
        xv = m.embed(torch.tensor([ver]))
        T = len(ver)
        out, tp2, hid2 = m.expert_forward("und", xv, torch.arange(pos_next, pos_next + T).unsqueeze(0),
                                          causal(T, committed), tpast)
        tgt = m.lm_head(m.norm(out))[0].argmax(-1).tolist()
        a = 0
        while a < K and drafts[a] == tgt[a]:
            a += 1
            if drafts[a - 1] == eos:  # nothing after <eos> counts
                break
        for k in range(min(K, a + 1)):
            comp[k] += 1
            accd[k] += int(k < a)
        eos_in = a > 0 and drafts[a - 1] == eos
        acc_lens.append(a if eos_in else a + 1)  # tokens committed by this target forward
        new = tgt[a]
        accepted = drafts[:a]
        stop = False
        for t in accepted:
            if t == eos:
                stop = True
                break
            if len(tokens) >= max_new:
                stop = True
                break
            tokens.append(t)
        # commit: target rows nxt, d1..da
        tpast = _crop(tp2, committed + a + 1)
        hs2 = torch.stack(hid2, 2)[:, : a + 1]
        # catch-up: rows committed..committed+a with target features, embeddings of the following tokens
        dpast = _crop(dpast, committed)
        nxt_ids = accepted + [new]
        cemb = m.embed(torch.tensor([nxt_ids]))
        dl, feat, dpast = d.step(cemb, hs2, torch.zeros(1, a + 1, D), torch.zeros(1, a + 1),
                                 torch.arange(pos_next, pos_next + a + 1).unsqueeze(0),
                                 causal(a + 1, committed), dpast)
        committed += a + 1
        pos_next += a + 1
        nxt = new
        if stop:
            break
    return tokens, acc_lens, comp, accd


@torch.no_grad()
def plain_greedy(m, x_prompt, pos_prompt, mask_prompt, eos, max_new=40):
    c = m.c
    past = [(torch.zeros(1, c.heads, 0, c.head_dim),) * 2 for _ in range(c.layers)]
    out, past, _ = m.expert_forward("und", x_prompt, pos_prompt, mask_prompt, past)
    P, p = x_prompt.shape[1], int(pos_prompt[0, -1]) + 1
    toks = []
    while len(toks) < max_new:
        t = int(m.lm_head(m.norm(out[0, -1])).argmax())
        if t == eos:
            break
        toks.append(t)
        out, past, _ = m.expert_forward("und", m.embed(torch.tensor([[t]])), torch.tensor([[p]]),
                                        torch.zeros(1, 1, 1, P + 1), past)
        P, p = P + 1, p + 1
    return toks


def evaluate(m, tok, d, data, K=10, limit=None, max_new=40):
    nv = m.c.vit_grid ** 2
    lens, comp, accd, lossless = [], [0] * K, [0] * K, 0
    cap_q = tok.encode(CAPTION_PROMPT)
    by_kind = {"caption": [], "vqa": []}
    ceil_tok, ceil_rounds = 0, 0
    N = min(len(data.rows), limit or len(data.rows))
    for k in range(N):
        s = data.seq(k, nv)
        b = collate([s])
        x, _, _, _ = embed_batch(m, b)
        lab = b["labels"][0]
        n = int((lab != -100).nonzero()[0]) + 1  # prompt ends with <|im_start|>
        xp, pp, mp = x[:, :n], b["pos"][:, :n], b["mask"][:, :, :n, :n]
        toks, al, c1, a1 = spec_decode(m, d, xp, pp, mp, tok.eos, K, max_new)
        ref = plain_greedy(m, xp, pp, mp, tok.eos, max_new)
        lossless += int(toks == ref)
        lens += al
        by_kind["caption" if data.rows[k]["q"] == cap_q else "vqa"] += al
        # ceiling: after the prefill's first token, len(answer) tokens (rest + <eos>) at <= K+1 per round
        na = len(ref)
        ceil_tok += na
        ceil_rounds += -(-na // (K + 1))
        comp = [x + y for x, y in zip(comp, c1)]
        accd = [x + y for x, y in zip(accd, a1)]
    return {"tau_chain": sum(lens) / max(1, len(lens)),
            "acceptance_10": sum(accd) / max(1, sum(comp)),
            "alpha_by_depth": [round(a / c, 4) if c else None for a, c in zip(accd, comp)],
            "rounds": len(lens), "prompts": N, "lossless": lossless == N,
            "tau_by_kind": {k: (round(sum(v) / len(v), 4) if v else None) for k, v in by_kind.items()},
            "tau_ceiling": round(ceil_tok / max(1, ceil_rounds), 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--test", required=True)
    ap.add_argument("--drafts", required=True, help="comma-separated draft run folders (one ablation row each)")
    ap.add_argument("--limit", type=positive_int, default=None)
    ap.add_argument("--steps", type=positive_int, default=10, help="extrapolation steps K")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--max-new", type=positive_int, default=40)
    a = ap.parse_args()
    require_out_folder(a.out)
    # inputs checked before loading the target
    if not os.path.isfile(a.test):
        sys.exit(f"--test: no draft data at {a.test!r} (write it with draft_data.py)")
    for run in a.drafts.split(","):
        require_ckpt(os.path.join(run, "draft.ckpt"), f"--drafts {run}", ("model", "dc", "step"))
    m, tok, _, _ = target_from_args(a)
    data = DraftData(a.test, tok, what="--test")
    # one row per run, in the order given (two runs of one variant, e.g. two lengths or seeds, are two rows);
    # the headline numbers are the first "full" run's, else the first run's
    rows = {}
    for run in a.drafts.split(","):
        if run in rows:
            continue
        d = load_draft(m, run)
        r = evaluate(m, tok, d, data, a.steps, a.limit, a.max_new)
        r["variant"] = d.dc.variant
        r["run"] = run
        rows[run] = r
        print(json.dumps(r), flush=True)
    head = next((r for r in rows.values() if r["variant"] == "full"), next(iter(rows.values())))
    res = {"tau_chain": head["tau_chain"], "acceptance_10": head["acceptance_10"], "run": head["run"],
           "ablation": list(rows.values())}
    if a.out:
        json.dump(res, open(a.out, "w"), indent=2)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
