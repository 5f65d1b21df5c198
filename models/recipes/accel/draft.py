"""Speculative draft (EAGLE-3 family, Hyper-Bagel variant) for the understanding expert.

Per row i the draft reads the target's hidden states of ALL layers at row i (decoder.onnx `hidden_states`,
[L,D]) and the input embedding of the token at row i+1, and predicts the target's distribution at row i+1
(the token at i+2). Full variant (Hyper-Bagel):
  CA:   Q=3 meta queries cross-attend over the L layer features; output = o_proj(attn) (zero-init) + skip
        carrying the target's low/mid/high features (layers 0, (L-1)//2, L-1)  -> [3,D], flattened [3D]
  fc1:  Linear(3D -> D), zero-init
  Dec:  one decoder layer (target-layer architecture, own KV cache), o_proj and down zero-init, whose input is
        fc1(...) + skip carrying the target feature at the body's matching depth (layer L-3 output, the
        hidden state that enters the copied layers)                                -> F_in [D]
  fc2:  Linear(2D -> D) on concat(embedding of the next token, F_in), zero-init
  body: 2 decoder layers copied from the target's last 2 understanding-expert layers, final norm + LM head
        copied from the target. The body output (pre-norm) is the draft's own feature, fed back in place of
        F_in at later draft steps.
Variants: eagle3 (fc(3 feats) -> fc2 -> 1 randomly initialised layer, own copy of norm + head, forward KL),
full, noinit (full without zero-init), noce (full without the CE term)."""
import copy
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
import torch.nn.functional as F

from hyperbagel.model import Expert, RMSNorm, apply_rope, attention, rope_cos_sin, NEG


@dataclass
class DraftConfig:
    variant: str = "full"
    meta_queries: int = 3
    use_ca: bool = True
    use_dec: bool = True
    body_layers: int = 2
    body_from_target: bool = True
    zero_init: bool = True
    ce_weight: float = 0.1
    ttt_steps: int = 4
    ttt_decay: float = 0.8

    @staticmethod
    def of(variant, **kw):
        d = DraftConfig(variant=variant)
        if variant == "eagle3":
            d.use_ca, d.use_dec, d.body_layers, d.body_from_target, d.zero_init, d.ce_weight = \
                False, False, 1, False, False, 0.0
        elif variant == "noinit":
            d.zero_init = False
        elif variant == "noce":
            d.ce_weight = 0.0
        elif variant != "full":
            raise ValueError(variant)
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    def to_dict(self):
        return asdict(self)


def feature_layers(L):
    low, mid, high = 0, (L - 1) // 2, L - 1
    depth = max(0, L - 3)
    return [low, mid, high], depth


class CrossAttn(nn.Module):
    """Meta queries attending over the L per-layer features of one token (keys = values = features)."""

    def __init__(self, D, H, Q):
        super().__init__()
        self.H, self.Dh, self.Q = H, D // H, Q
        self.queries = nn.Parameter(torch.randn(Q, D) * 0.02)
        self.norm = RMSNorm(D)
        self.q = nn.Linear(D, D, bias=False)
        self.k = nn.Linear(D, D, bias=False)
        self.v = nn.Linear(D, D, bias=False)
        self.o = nn.Linear(D, D, bias=False)

    def forward(self, f):  # f [B,T,L,D] -> [B,T,Q,D] (without skip)
        B, T, L, D = f.shape
        kv = self.norm(f)
        q = self.q(self.queries).view(self.Q, self.H, self.Dh).transpose(0, 1)  # [H,Q,Dh]
        k = self.k(kv).view(B, T, L, self.H, self.Dh).transpose(2, 3)  # [B,T,H,L,Dh]
        v = self.v(kv).view(B, T, L, self.H, self.Dh).transpose(2, 3)
        s = torch.matmul(q, k.transpose(-1, -2)) * (self.Dh ** -0.5)  # [B,T,H,Q,L]
        a = torch.matmul(torch.softmax(s, -1), v).transpose(2, 3).reshape(B, T, self.Q, D)
        return self.o(a)


class Draft(nn.Module):
    def __init__(self, target, dc: DraftConfig):
        super().__init__()
        c = target.c
        self.c, self.dc = c, dc
        D, L = c.hidden, c.layers
        self.feat_idx, self.depth = feature_layers(L)
        if dc.use_ca:
            self.ca = CrossAttn(D, c.heads, dc.meta_queries)
            self.fc1 = nn.Linear(dc.meta_queries * D, D)
        else:
            self.fc1 = nn.Linear(3 * D, D, bias=False)  # EAGLE-3 fusion of low/mid/high
        if dc.use_dec:
            self.dec = Expert(c)
            self.dec.load_state_dict(target.layers[max(0, L - 3)].und.state_dict())
        self.fc2 = nn.Linear(2 * D, D)
        self.body = nn.ModuleList()
        for j in range(dc.body_layers):
            e = Expert(c)
            if dc.body_from_target:
                e.load_state_dict(target.layers[L - dc.body_layers + j].und.state_dict())
            else:
                e.apply(_init_small)
            self.body.append(e)
        self.norm = copy.deepcopy(target.norm)
        self.lm_head = copy.deepcopy(target.lm_head)
        if dc.zero_init:
            zs = [self.fc1, self.fc2]
            if dc.use_ca:
                zs.append(self.ca.o)
            if dc.use_dec:
                zs += [self.dec.o_proj, self.dec.down]
            for lin in zs:
                nn.init.zeros_(lin.weight)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
        elif dc.variant == "noinit":
            for lin in [self.fc1, self.fc2] + ([self.ca.o] if dc.use_ca else []) + \
                       ([self.dec.o_proj, self.dec.down] if dc.use_dec else []):
                _init_small(lin)
        for p in self.parameters():
            p.requires_grad_(True)

    @property
    def n_layers(self):
        return (1 if self.dc.use_dec else 0) + len(self.body)

    def layers(self):
        return ([self.dec] if self.dc.use_dec else []) + list(self.body)

    # ---- feature aggregation (per token, no attention across tokens) ----
    def fuse(self, hs):
        """hs [B,T,L,D] -> fc1 output + the Dec skip [B,T,D] (input of Dec, or F_in without Dec)."""
        skip = hs[:, :, self.feat_idx]  # [B,T,3,D]
        if self.dc.use_ca:
            cq = skip + self.ca(hs)
            u = self.fc1(cq.flatten(2))
        else:
            u = self.fc1(skip.flatten(2))
        if self.dc.use_dec:
            u = u + hs[:, :, self.depth]
        return u

    @staticmethod
    def _layer(e, x, cos, sin, mask, past_k, past_v, extra_k=None):
        """One decoder layer with a KV cache; returns (x, k_new, v_new)."""
        B, T, D = x.shape
        q, k, v = e.qkv(x)
        q = apply_rope(q.transpose(1, 2), cos, sin)
        k = apply_rope(k.transpose(1, 2), cos, sin)
        v = v.transpose(1, 2)
        K = torch.cat([past_k, k], 2)
        V = torch.cat([past_v, v], 2)
        a = attention(q, K, V, mask).transpose(1, 2).reshape(B, T, -1)
        return e.out(a, x), K, V

    def step(self, embeds, hs, prev, sel, pos, mask, past):
        """Exported computation. embeds [B,T,D] (next token's input embedding), hs [B,T,L,D] target hidden
        states, prev [B,T,D] draft features, sel [B,T] (1 = use prev), pos [B,T], mask [B,1,T,P+T],
        past: list of (k,v) per draft layer. Returns logits, features, presents."""
        c = self.c
        cos, sin = rope_cos_sin(pos, c.head_dim, c.rope_theta)
        presents = []
        li = 0
        u = self.fuse(hs)
        if self.dc.use_dec:
            u, K, V = self._layer(self.dec, u, cos, sin, mask, *past[li])
            presents.append((K, V))
            li += 1
        s = sel.unsqueeze(-1)
        fin = s * prev + (1 - s) * u
        x = self.fc2(torch.cat([embeds, fin], -1))
        for e in self.body:
            x, K, V = self._layer(e, x, cos, sin, mask, *past[li])
            presents.append((K, V))
            li += 1
        return self.lm_head(self.norm(x)), x, presents

    # ---- training-time test (unrolled draft steps over a whole sequence) ----
    def ttt(self, embeds, hs, pos, mask0, steps):
        """embeds [B,T,D] (row i: input embedding of token i+1), hs [B,T,L,D], pos [B,T], mask0 [B,1,T,T] the
        target's mask. Step 0 uses the target features of row j; step s>0 uses the draft's own feature of row
        j-1 from step s-1 and attends to step-0 keys of rows <= j-s (the anchor's prefix, target-derived) plus
        its own chain (step-k key of row j-s+k). Returns a list of logits [B,T,V] per step (row j predicts
        the target's distribution at row j+1 in every step)."""
        c = self.c
        B, T, D = embeds.shape
        cos, sin = rope_cos_sin(pos, c.head_dim, c.rope_theta)
        u = self.fuse(hs)
        if self.dc.use_dec:  # Dec sees only target-feature rows (its cache never holds feedback rows)
            empty = torch.zeros(B, c.heads, 0, c.head_dim)
            u, _, _ = self._layer(self.dec, u, cos, sin, mask0, empty, empty)
        keys = [[] for _ in self.body]  # per body layer: list over steps of (k, v) [B,H,T,Dh]
        outs = []
        feat = u
        for s in range(steps):
            x = self.fc2(torch.cat([embeds, feat], -1))
            # step-0 mask rows shifted by s: row j sees what its anchor row j-s saw
            m0 = torch.full_like(mask0, NEG)
            if s < T:
                m0[:, :, s:, :] = mask0[:, :, : T - s, :]
            for li, e in enumerate(self.body):
                q, k, v = e.qkv(x)
                q = apply_rope(q.transpose(1, 2), cos, sin)
                k = apply_rope(k.transpose(1, 2), cos, sin)
                v = v.transpose(1, 2)
                keys[li].append((k, v))
                K0, V0 = keys[li][0]
                sc = [torch.matmul(q, K0.transpose(-1, -2)) * (q.shape[-1] ** -0.5) + m0]
                vals = []
                for kk in range(1, s + 1):
                    Kk, Vk = keys[li][kk]
                    sh = s - kk  # key of row j-sh
                    Ks = F.pad(Kk, (0, 0, sh, 0))[:, :, :T]
                    Vs = F.pad(Vk, (0, 0, sh, 0))[:, :, :T]
                    sc.append((q * Ks).sum(-1, keepdim=True) * (q.shape[-1] ** -0.5))
                    vals.append(Vs)
                p = torch.softmax(torch.cat(sc, -1), -1)
                a = torch.matmul(p[..., :T], V0)
                for kk, Vs in enumerate(vals):
                    a = a + p[..., T + kk:T + kk + 1] * Vs
                x = e.out(a.transpose(1, 2).reshape(B, T, -1), x)
            outs.append(self.lm_head(self.norm(x)))
            feat = F.pad(x, (0, 0, 1, 0))[:, :T]  # row j gets row j-1's feature
        return outs


def _init_small(m):
    for mod in m.modules():
        if isinstance(mod, nn.Linear):
            nn.init.normal_(mod.weight, std=0.02)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)


def draft_loss(outs, tlogits, valid, dc: DraftConfig):
    """outs: per-step draft logits [B,T,V]; tlogits: target logits at row j+1 aligned to row j [B,T,V];
    valid [B,T] bool rows with a target answer token. Forward KL(target||draft) + ce_weight*CE(top-1),
    step s weighted ttt_decay**s; a step-s row also needs its anchor j-s inside the sequence."""
    pt = F.softmax(tlogits, -1)
    lpt = F.log_softmax(tlogits, -1)
    top = tlogits.argmax(-1)
    total, logs = 0.0, {}
    for s, lo in enumerate(outs):
        v = valid.clone()
        v[:, :s] = False
        if not v.any():
            continue
        lq = F.log_softmax(lo[v], -1)
        kl = (pt[v] * (lpt[v] - lq)).sum(-1).mean()
        ce = F.nll_loss(lq, top[v])
        acc = (lq.argmax(-1) == top[v]).float().mean()
        total = total + (dc.ttt_decay ** s) * (kl + dc.ce_weight * ce)
        logs[f"kl{s}"], logs[f"acc{s}"] = kl.item(), acc.item()
    return total, logs


@torch.no_grad()
def check_ttt(d, T=9, anchor=3, seed=0):
    """Max |diff| between the training-time-test unroll and the inference path (prefill rows 0..anchor with
    target features, then single-row feedback steps against the draft KV cache), causal text rows."""
    c = d.c
    g = torch.Generator().manual_seed(seed)
    D, L = c.hidden, c.layers
    emb = torch.randn(1, T, D, generator=g)
    hs = torch.randn(1, T, L, D, generator=g)
    pos = torch.arange(T).unsqueeze(0)
    mask = torch.zeros(1, 1, T, T)
    for i in range(T):
        mask[0, 0, i, i + 1:] = NEG
    S = T - anchor
    outs = d.ttt(emb, hs, pos, mask, S)
    past = [(torch.zeros(1, c.heads, 0, c.head_dim),) * 2 for _ in range(d.n_layers)]
    n = anchor + 1
    lo, f, past = d.step(emb[:, :n], hs[:, :n], torch.zeros(1, n, D), torch.zeros(1, n), pos[:, :n],
                         mask[:, :, :n, :n], past)
    diff = (lo[0, anchor] - outs[0][0, anchor]).abs().max()
    f = f[:, -1:]
    for s in range(1, S):
        j = anchor + s
        P = past[0][0].shape[2]
        lo, f, past = d.step(emb[:, j:j + 1], torch.zeros(1, 1, L, D), f, torch.ones(1, 1), pos[:, j:j + 1],
                             torch.zeros(1, 1, 1, P + 1), past)
        diff = max(diff, (lo[0, 0] - outs[s][0, j]).abs().max())
    return float(diff)
