"""Checks that the packed training forward equals the exported single-expert KV-cache path."""
import random

import torch

from .data import t2i_seq, edit_seq, collate
from .losses import embed_batch
from .model import patchify


def check(model, tok, ds, seed=0):
    """Edit sequence: run train_forward on the whole packed sequence, then the same sequence block by block
    through expert_forward with a KV cache (as the engine does); compare the noisy block's velocity."""
    model.eval()
    c = model.c
    rng = random.Random(seed)
    nv, n = c.vit_grid ** 2, c.latent_grid ** 2
    s = edit_seq(tok, ds, 0, rng, nv, n, p_drop_text=0.0, p_drop_img=0.0)
    b = collate([s])
    t = torch.tensor([0.6])
    g = torch.Generator().manual_seed(seed)
    x0 = patchify(b["noisy_lat"], c.latent_patch)
    eps = torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        x, _, _, _ = embed_batch(model, b, t_noisy=t, eps=eps)
        h = model.train_forward(x, b["gen_mask"], b["pos"], b["mask"])[0]
        v_train = model.llm2vae(model.norm_gen(h[b["noisy_idx"]]))
        # incremental: segments of equal kind
        kinds = b["kind"][0].tolist()
        T = len(kinds)
        segs, st = [], 0
        for i in range(1, T + 1):
            if i == T or (kinds[i] != kinds[st]) or (kinds[st] == 0):
                segs.append((st, i))
                st = i
        L = c.layers
        past = [(torch.zeros(1, c.heads, 0, c.head_dim), torch.zeros(1, c.heads, 0, c.head_dim)) for _ in range(L)]
        for (a, e) in segs:
            which = "gen" if kinds[a] in (2, 3) else "und"
            xs = x[:, a:e]
            mask = b["mask"][:, :, a:e, :e]
            out, presents, _ = model.expert_forward(which, xs, b["pos"][:, a:e], mask, past)
            past = presents
            if kinds[a] == 3:
                v_inc = model.llm2vae(model.norm_gen(out[0]))
    return float((v_inc - v_train).abs().max())
