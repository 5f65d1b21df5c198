"""Distilled generation expert (6-NFE / 1-NFE), its discriminators and the learned reward model."""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from hyperbagel.model import TimestepEmbedder


class Student(nn.Module):
    """A copy of the target's generation path plus text-scale and image-scale embedders, built exactly like
    the timestep embedder and added where it is added (the noisy latent tokens' input). Last Linear of both
    zero-initialised, so the student starts as the teacher's conditional model. Understanding weights are
    carried (frozen) only so the module can reuse Unified's forward; the exported graph holds the
    generation expert only."""

    def __init__(self, target):
        super().__init__()
        self.m = copy.deepcopy(target)
        D = target.c.hidden
        self.text_scale_embed = TimestepEmbedder(D)
        self.image_scale_embed = TimestepEmbedder(D)
        for e in (self.text_scale_embed, self.image_scale_embed):
            nn.init.zeros_(e.mlp[2].weight)
            nn.init.zeros_(e.mlp[2].bias)
        for n, p in self.named_parameters():
            p.requires_grad_(is_gen_param(n))

    @property
    def c(self):
        return self.m.c

    def latent_in(self, tokens, t, st=None, si=None):
        x = self.m.latent_in(tokens, t)
        B = tokens.shape[0]
        st = torch.ones(B) if st is None else st
        si = torch.ones(B) if si is None else si
        return x + (self.text_scale_embed((st - 1.0) / 4.0) + self.image_scale_embed((si - 1.0) / 1.5)).unsqueeze(1)

    def expert_forward(self, *a):
        return self.m.expert_forward(*a)

    def llm2vae(self, h):
        return self.m.llm2vae(h)

    def norm_gen(self, h):
        return self.m.norm_gen(h)


def is_gen_param(name):
    return (".gen." in name or "norm_gen" in name or "vae2llm" in name or "llm2vae" in name or "time_embed" in name
            or "scale_embed" in name)


def student_from(target, state, source="checkpoint"):
    """A Student of `target` whose generation path (the trainable part) comes from `state`, a student
    state dict. The frozen rest stays the target's own, so a student trained on an earlier target can seed
    or be exported for one whose understanding side differs (release 6's vision encoder has other inputs
    than release 5's); only the generation path has to fit."""
    s = Student(target)
    own = s.state_dict()
    gen = {k: v for k, v in state.items() if is_gen_param(k)}
    missing = [k for k in own if is_gen_param(k) and k not in gen]
    bad = [k for k, v in gen.items() if k not in own or own[k].shape != v.shape]
    if missing or bad:
        raise SystemExit(f"{source}: its generation path does not fit this target (missing {missing[:3]}, "
                         f"unexpected or mis-shaped {bad[:3]})")
    s.load_state_dict(gen, strict=False)
    return s


class LatentDisc(nn.Module):
    """Multi-head latent discriminator: a trainable copy of the teacher's generation path (backbone, conditioned
    on the prompt through the context KV) with one head per layer on that layer's token features (DMDX-style
    heads at several depths); each head gives a logit per sample (mean over tokens)."""

    def __init__(self, target):
        super().__init__()
        self.m = copy.deepcopy(target)
        for n, p in self.m.named_parameters():
            p.requires_grad_(is_gen_param(n))
        D = target.c.hidden
        self.heads = nn.ModuleList([nn.Sequential(nn.Linear(D, D // 2), nn.SiLU(), nn.Linear(D // 2, 1))
                                    for _ in range(target.c.layers)])

    def forward(self, x, t, ctx):
        pos, mask, past = ctx.noisy_args()
        h = self.m.latent_in(x, t)
        _, _, hid = self.m.expert_forward("gen", h, pos, mask, past)
        return torch.stack([hd(hh).mean(dim=(1, 2)) for hd, hh in zip(self.heads, hid)], 1)  # [B, heads]


class ConvEnc(nn.Module):
    """pool: the spatial grid kept before the projection (2 for the discriminators; the reward keeps 4, since
    the 3x3 layout of the world's cells does not survive a 2x2 average)."""

    def __init__(self, out=128, pool=2):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1), nn.SiLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.SiLU(),
                                 nn.Conv2d(64, 128, 3, 2, 1), nn.SiLU(), nn.AdaptiveAvgPool2d(pool), nn.Flatten(),
                                 nn.Linear(128 * pool * pool, out))

    def forward(self, px):
        return self.net(px)


class BowText(nn.Module):
    def __init__(self, vocab, out=128):
        super().__init__()
        self.emb = nn.EmbeddingBag(vocab, out, mode="mean")

    def forward(self, prompts):
        flat = torch.tensor([t for p in prompts for t in p] or [0])
        offs = torch.tensor([0] + [len(p) for p in prompts[:-1]]).cumsum(0)
        return self.emb(flat, offs)


class SeqText(nn.Module):
    """Order-aware prompt encoder: token + position embeddings, pre-norm self-attention blocks, masked mean.
    A bag of words cannot tell which colour belongs to which shape, or which shape is left of which."""

    def __init__(self, vocab, out=128, layers=2, heads=4, max_len=64):
        super().__init__()
        self.emb, self.pos, self.max_len = nn.Embedding(vocab, out), nn.Embedding(max_len, out), max_len
        self.blocks = nn.ModuleList([nn.ModuleDict({
            "n1": nn.LayerNorm(out), "attn": nn.MultiheadAttention(out, heads, batch_first=True),
            "n2": nn.LayerNorm(out), "mlp": nn.Sequential(nn.Linear(out, 2 * out), nn.SiLU(), nn.Linear(2 * out, out)),
        }) for _ in range(layers)])
        self.norm, self.proj = nn.LayerNorm(out), nn.Linear(out, out)

    def forward(self, prompts):
        L = max(1, max(len(p) for p in prompts))
        if L > self.max_len:
            raise ValueError(f"prompt of {L} tokens exceeds the reward text encoder's {self.max_len}")
        ids = torch.zeros(len(prompts), L, dtype=torch.long)
        keep = torch.zeros(len(prompts), L, dtype=torch.bool)
        for i, p in enumerate(prompts):
            ids[i, :len(p)] = torch.tensor(p, dtype=torch.long)
            keep[i, :len(p)] = True
        keep[:, 0] = True  # an empty prompt still attends to (and pools) one position
        h = self.emb(ids) + self.pos(torch.arange(L)).unsqueeze(0)
        for b in self.blocks:
            x = b["n1"](h)
            h = h + b["attn"](x, x, x, key_padding_mask=~keep, need_weights=False)[0]
            h = h + b["mlp"](b["n2"](h))
        w = keep.unsqueeze(-1).float()
        return self.proj(self.norm((h * w).sum(1) / w.sum(1)))


class PixelDisc(nn.Module):
    """Pixel-space projection discriminator on VAE-decoded images, conditioned on a bag-of-words prompt."""

    def __init__(self, vocab, W=128):
        super().__init__()
        self.enc, self.txt, self.out = ConvEnc(W), BowText(vocab, W), nn.Linear(W, 1)

    def forward(self, px, prompts):
        f = F.silu(self.enc(px))
        return (self.out(f).squeeze(1) + (f * self.txt(prompts)).sum(1) / f.shape[1] ** 0.5).unsqueeze(1)


class Reward(nn.Module):
    """Small learned image-prompt scorer (plays HPSv3's role; never the evaluator's detector): CLIP-style
    cosine between a conv image embedding and a prompt embedding, times a learned temperature.
    arch "bow": bag-of-words text, 2x2 image grid (the pipeline's); "seq": order-aware text encoder and a 4x4
    grid, which tells swapped attributes apart (train_reward.py --arch seq)."""

    ARCHS = ("seq", "bow")

    def __init__(self, vocab, W=128, arch="bow"):
        super().__init__()
        if arch not in self.ARCHS:
            raise ValueError(f"unknown reward arch {arch!r} (one of {self.ARCHS})")
        self.arch = arch
        self.enc = ConvEnc(W, pool=4 if arch == "seq" else 2)
        self.txt = SeqText(vocab, W) if arch == "seq" else BowText(vocab, W)
        self.logit_scale = nn.Parameter(torch.tensor(2.3))

    def scores(self, px, prompt_sets):
        """[B, K] scores of image i against each of its own K prompts (prompt_sets[i], all of length K)."""
        a = F.normalize(self.enc(px), dim=1)
        K = len(prompt_sets[0])
        b = F.normalize(self.txt([p for ps in prompt_sets for p in ps]), dim=1).view(len(prompt_sets), K, -1)
        return self.logit_scale.exp() * (a.unsqueeze(1) * b).sum(-1)

    def pair_logits(self, px, prompts):
        a = F.normalize(self.enc(px), dim=1)
        b = F.normalize(self.txt(prompts), dim=1)
        return self.logit_scale.exp() * a @ b.t()

    def forward(self, px, prompts):
        a = F.normalize(self.enc(px), dim=1)
        b = F.normalize(self.txt(prompts), dim=1)
        return self.logit_scale.exp() * (a * b).sum(1)


def load_reward(path):
    """A frozen reward model from train_reward.py's reward.pt, with its hinge threshold alpha."""
    ck = torch.load(path, map_location="cpu")
    r = Reward(ck["vocab"], arch=ck.get("arch", "bow"))
    r.load_state_dict(ck["model"])
    for p in r.parameters():
        p.requires_grad_(False)
    return r.eval(), ck["alpha"]


def hinge_d(real, fake):
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g(fake):
    return -fake.mean()


@torch.no_grad()
def check_student_init(m, tok, sets, seed=0):
    """A fresh Student (zero-init scale embedders) must reproduce the teacher's conditional velocity at any
    scales: max |diff| over a small t2i + edit batch."""
    import random
    from .common import GenBatch, gen_velocity
    gb = GenBatch(m, tok, sets, random.Random(seed), 2, 2)
    s = Student(m).eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(gb.x0.shape, generator=g)
    t = torch.rand(gb.B, generator=g)
    st, si = gb.sample_scales(g)
    return float((gen_velocity(s, x, t, gb.full, (st, si)) - gen_velocity(m, x, t, gb.full)).abs().max())
