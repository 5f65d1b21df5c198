"""Shared helpers for the acceleration recipes: path setup, loading the target (or a random-init one for smoke
runs), a routed (MoT) prefill that returns the KV cache, batched CFG contexts, and the teacher's velocity."""
import copy
import json
import os
import random
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPES = os.path.dirname(HERE)

# How the engine serves the shipped students (export_accel writes them into the manifest): the 6-NFE
# graph on grid(6, SERVE_SIX_SHIFT), the uniform grid (session 14), and the 1-NFE graph at text scale
# SERVE_ONE_TEXT_SCALE (session 18). The Python monitoring paths (eval_gen, bench_reference) sample the
# same way, so their numbers describe what is served.
SERVE_SIX_SHIFT = 1.0
SERVE_ONE_TEXT_SCALE = 5.0
if RECIPES not in sys.path:
    sys.path.insert(0, RECIPES)

from hyperbagel.utils import setup_threads, require_ckpt  # noqa: E402
from hyperbagel.ckpts import check_dataset_rows, data_key  # noqa: E402

setup_threads()

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hyperbagel.config import TINY, ModelConfig  # noqa: E402
from hyperbagel.model import NEG, Unified, VAE, apply_rope, attention, rope_cos_sin, patchify  # noqa: E402
from hyperbagel.tokenizer import WordTokenizer  # noqa: E402
from hyperbagel.data import ShapesData, to_pixels, TEXT, VIT, CLEAN  # noqa: E402


def frozen(m):
    m.eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def load_target(ckpt_path, weights="ema"):
    """-> (model, tok, vae, scale) from a train_unified checkpoint (EMA weights, as exported). A missing file, a
    checkpoint of another kind (a VAE's, a student's) or a missing tokenizer.json exit with one clear line."""
    ck = require_target_ckpt(ckpt_path)
    c = ModelConfig.from_dict(ck["config"])
    m = Unified(c)
    m.load_state_dict(ck[weights] if weights in ck else ck["model"])
    run = os.path.dirname(os.path.abspath(ckpt_path))
    tok_path = os.path.join(run, "tokenizer.json")
    if not os.path.isfile(tok_path):
        raise SystemExit(f"--target {ckpt_path!r}: no tokenizer.json next to it ({tok_path})")
    tok = WordTokenizer.load(tok_path)
    vae, scale = None, float(ck.get("scale", 1.0))
    vpath = ck.get("vae")
    if vpath and os.path.exists(vpath):
        vk = torch.load(vpath, map_location="cpu")
        vae = VAE(ModelConfig.from_dict(vk["config"]))
        vae.load_state_dict(vk["ema"])
        vae.image_size = c.gen_image_size
    return frozen(m), tok, frozen(vae) if vae is not None else None, scale


def require_target_ckpt(path, what="--target"):
    """A train_unified checkpoint (or import_pack's / a lite one): config + the unified model's weights."""
    ck = require_ckpt(path, what, ("config",))
    w = ck.get("ema", ck.get("model"))
    if not isinstance(w, dict) or "lm_head.weight" not in w or "embed.weight" not in w:
        raise SystemExit(f"{what}: {path!r} is not a unified-model (train_unified) checkpoint"
                         f"{' (it looks like a VAE checkpoint)' if isinstance(w, dict) and any(k.startswith('enc.') for k in w) else ''}")
    return ck


def random_target(words, seed=0, cfg=TINY):
    """Random-init target for smoke runs and fixtures (make_fixture's random weights: every head non-zero)."""
    from make_fixture import randomize
    torch.manual_seed(seed)
    tok = WordTokenizer(words)
    c = ModelConfig.from_dict(cfg.to_dict())
    c.vocab = len(tok)
    g = torch.Generator().manual_seed(seed)
    m, vae = Unified(c), VAE(c)
    randomize(m, g)
    randomize(vae, g)
    # smaller output head so random velocities stay O(1)
    with torch.no_grad():
        m.llm2vae.weight.mul_(0.3)
    vae.image_size = c.gen_image_size
    return frozen(m), tok, frozen(vae), 1.0


def save_target(path, model, tok, vae, scale):
    """Writes a checkpoint in train_unified's format (used by the smoke test for its random target)."""
    run = os.path.dirname(os.path.abspath(path))
    os.makedirs(run, exist_ok=True)
    tok.save(os.path.join(run, "tokenizer.json"))
    vpath = os.path.join(run, "vae.ckpt")
    torch.save({"config": vae_cfg_dict(model.c), "ema": vae.state_dict(), "scale": scale, "step": 0}, vpath)
    torch.save({"model": model.state_dict(), "ema": model.state_dict(), "config": model.c.to_dict(), "step": 0,
                "vae": vpath, "scale": scale}, path)


def vae_cfg_dict(c):
    return c.to_dict()


def target_from_args(a):
    """--target CKPT, or --random-target DATA (smoke: random TINY target with DATA's vocabulary)."""
    if getattr(a, "target", None):
        return load_target(a.target)
    words = json.load(open(os.path.join(a.data.split(",")[0], "meta.json")))["vocabulary"]
    return random_target(words, seed=0)


def vae_weights_key(vae, scale):
    """A short digest of the VAE encoder's weights and the latent scale (what cached latents depend on)."""
    import hashlib
    h = hashlib.sha1(repr(float(scale)).encode())
    for k, v in sorted(vae.state_dict().items()):
        if k.startswith("enc."):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:10]


def load_sets(dirs, tok, vae, scale, cache_dir=None, limit=None):
    sets = []
    ds_dirs = [x for x in dirs.split(",") if x]
    if not ds_dirs:
        raise SystemExit(f"--data {dirs!r}: no dataset folder named")
    for d in ds_dirs:
        if not os.path.isfile(os.path.join(d, "records.jsonl")):
            raise SystemExit(f"--data: no dataset at {d!r} (no records.jsonl)")
        check_dataset_rows(d, "--data", [f for f in ("images.npy", "edited.npy") if os.path.exists(os.path.join(d, f))] or ["images.npy"])
    for d in ds_dirs:
        ds = ShapesData(d, tok, limit=limit)
        if vae is not None:
            # keyed by the dataset files and the VAE's weights: a re-exported dataset or another VAE is encoded again
            cp = os.path.join(cache_dir, f"latents_{os.path.basename(d.rstrip('/'))}_{ds.n}_{data_key(d)}_{vae_weights_key(vae, scale)}.npz") if cache_dir else None
            ds.attach_latents(vae, scale, cp)
            # freshly encoded latents are a strided view, cached ones contiguous: the same values, but the VAE
            # decode of a batch of them rounds differently, so a resumed run (cache) drifted from a straight one
            ds.latents = np.ascontiguousarray(ds.latents)
            ds.edited_latents = np.ascontiguousarray(ds.edited_latents)
        sets.append(ds)
    return sets


# ---------------- routed (MoT) prefill with KV cache ----------------
def routed_prefill(m, x, gen_mask, pos, mask, with_hiddens=False):
    """Prefill a mixed context (und tokens + clean VAE tokens) through both experts, routed per token.
    x [B,T,D], gen_mask [B,T] bool, pos [B,T], mask [B,1,T,T]. Returns (final x, presents[(k,v)], hiddens)."""
    c = m.c
    B, T, D = x.shape
    cos, sin = rope_cos_sin(pos, c.head_dim, c.rope_theta)
    g = gen_mask.unsqueeze(-1)
    presents, hiddens = [], []
    for layer in m.layers:
        qu, ku, vu = layer.und.qkv(x)
        qg, kg, vg = layer.gen.qkv(x)
        gg = g.unsqueeze(-1)
        q = torch.where(gg, qg, qu).transpose(1, 2)
        k = torch.where(gg, kg, ku).transpose(1, 2)
        v = torch.where(gg, vg, vu).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        presents.append((k, v))
        a = attention(q, k, v, mask).transpose(1, 2).reshape(B, T, c.heads * c.head_dim)
        x = torch.where(g, layer.gen.out(a, x), layer.und.out(a, x))
        hiddens.append(x)
    return x, presents, hiddens


def pad_mask_rows(kinds_list, blks_list):
    """Additive [B,1,T,T] mask for right-padded contexts: causal, bidirectional inside blocks; padded keys blocked."""
    B = len(kinds_list)
    T = max(len(k) for k in kinds_list)
    kind = torch.full((B, T), -1, dtype=torch.long)
    blk = torch.full((B, T), -1, dtype=torch.long)
    for b in range(B):
        n = len(kinds_list[b])
        kind[b, :n] = torch.tensor(kinds_list[b])
        blk[b, :n] = torch.tensor(blks_list[b])
    valid = kind >= 0
    ar = torch.arange(T)
    causal = ar.view(1, T, 1) >= ar.view(1, 1, T)
    same = (blk.unsqueeze(2) == blk.unsqueeze(1)) & (blk.unsqueeze(2) >= 0)
    allowed = valid.unsqueeze(1) & (causal | same)
    allowed = allowed | torch.eye(T, dtype=torch.bool).unsqueeze(0)
    return torch.zeros(B, 1, T, T).masked_fill(~allowed.unsqueeze(1), NEG), valid, kind


class Context:
    """A batch of generation contexts prefilled by the ORIGINAL model (as in Hyper-Bagel's deployment):
    presents per layer, a key-validity mask and each sample's noisy-block position id."""

    def __init__(self, m, items, tok):
        """items: list of dicts {prompt_ids, src_pixels64 (or None), src_tokens (or None), with_text, with_img}."""
        c = m.c
        nv, n = c.vit_grid ** 2, c.latent_grid ** 2
        kinds, blks, poss, ids = [], [], [], []
        vit_px, clean_tok = [], []
        for it in items:
            k, bl, p, i = [], [], [], []
            st = {"pos": 0, "blk": 0}

            def text(tt):
                for t in tt:
                    k.append(TEXT), bl.append(-1), p.append(st["pos"]), i.append(t)
                    st["pos"] += 1

            def block(kind, cnt):
                for _ in range(cnt):
                    k.append(kind), bl.append(st["blk"]), p.append(st["pos"]), i.append(0)
                st["pos"] += 1
                st["blk"] += 1
            text([tok.bos])
            if it.get("src_pixels64") is not None and it["with_img"]:
                text([tok.vision_start])
                block(VIT, nv)
                vit_px.append(it["src_pixels64"])
                text([tok.vision_end, tok.gen_start])
                block(CLEAN, n)
                clean_tok.append(it["src_tokens"])
                text([tok.gen_end])
            if it["with_text"]:
                text(it["prompt_ids"])
            text([tok.gen_start])
            kinds.append(k), blks.append(bl), poss.append(p), ids.append(i)
            it["_next_pos"] = st["pos"]
        mask, valid, kind = pad_mask_rows(kinds, blks)
        B, T = kind.shape
        idt = torch.zeros(B, T, dtype=torch.long)
        pos = torch.zeros(B, T, dtype=torch.long)
        for b in range(B):
            idt[b, :len(ids[b])] = torch.tensor(ids[b])
            pos[b, :len(poss[b])] = torch.tensor(poss[b])
        with torch.no_grad():
            x = m.embed(idt)
            if vit_px:
                ve = m.vision(torch.stack(vit_px))
                x = x.clone()
                x[kind == VIT] = ve.reshape(-1, c.hidden)
            if clean_tok:
                ce = m.latent_in(torch.stack(clean_tok), torch.zeros(len(clean_tok)))
                x[kind == CLEAN] = ce.reshape(-1, c.hidden)
            _, self.past, _ = routed_prefill(m, x, kind == CLEAN, pos, mask)
        self.key_ok = valid  # [B,T]
        self.next_pos = torch.tensor([it["_next_pos"] for it in items])
        self.n = n

    def noisy_args(self):
        B, P = self.key_ok.shape
        n = self.n
        mask = torch.zeros(B, 1, n, P + n)
        mask[:, :, :, :P] = torch.where(self.key_ok, 0.0, NEG).view(B, 1, 1, P)
        pos = self.next_pos.view(B, 1).expand(B, n).contiguous()
        return pos, mask, self.past


def gen_velocity(gm, xt, t, ctx, extra=None):
    """Velocity of a generation path module `gm` (Unified or a distilled student) on the noisy block."""
    pos, mask, past = ctx.noisy_args()
    x = gm.latent_in(xt, t) if extra is None else gm.latent_in(xt, t, *extra)
    out, _, _ = gm.expert_forward("gen", x, pos, mask, past)
    return gm.llm2vae(gm.norm_gen(out))


def shifted(t, shift):
    return shift * t / (1 + (shift - 1) * t)


def grid(nfe, shift=3.0):
    """The distilled samplers' time grid: nfe Euler steps over linspace(1,0,nfe+1), shifted like BAGEL."""
    return shifted(torch.linspace(1, 0, nfe + 1), shift)


PROMPT_KINDS = ["caption", "single_object", "two_objects", "counting", "colors", "position", "color_attr"]
_KIND_RES = [  # the world's prompt templates (src/world/prompts.ts), most specific first
    ("counting", re.compile(r"^a photo of (two|three|four|five|six) \w+$")),
    ("position", re.compile(r"^a photo of an? \w+ (left of|right of|above|below) an? \w+$")),
    ("color_attr", re.compile(r"^a photo of a \w+ \w+ and a \w+ \w+$")),
    ("two_objects", re.compile(r"^a photo of an? \w+ and an? \w+$")),
    ("colors", re.compile(r"^a photo of a \w+ \w+$")),
    ("single_object", re.compile(r"^a photo of an? \w+$")),
]


def prompt_kind(text):
    """The kind of a training prompt: a scene caption, or one of the GenEval-style categories the world writes."""
    for kind, rx in _KIND_RES:
        if rx.match(text):
            return kind
    return "caption"


class PromptIndex:
    """Every (set, scene, prompt) of the training sets, by prompt kind, so that text-to-image conditions can be
    drawn kind-balanced: the world writes a counting prompt for about 1 scene in 15 (three or four objects of one
    shape: 1 in 80), so uniform sampling shows a distillation stage few of them (data/train: 686 of 22,157 prompts
    in the first 10,000 scenes)."""

    def __init__(self, sets):
        self.by_kind = {}
        for si, ds in enumerate(sets):
            for i, r in enumerate(ds.records):
                for j, p in enumerate(r.get("prompts") or [r["caption"]]):
                    self.by_kind.setdefault(prompt_kind(p), []).append((si, i, j))
        self.kinds = [k for k in PROMPT_KINDS if k in self.by_kind]

    def draw(self, rng):
        return rng.choice(self.by_kind[rng.choice(self.kinds)])


class GenBatch:
    """One batch of generation conditions (t2i + edit) with full / text-uncond / image-uncond contexts.
    `desc`: a caption of the image each condition asks for (t2i: the scene's caption; edit: the edited scene's
    caption), used to condition the pixel discriminator and to query the reward model."""

    def __init__(self, m, tok, sets, rng, n_t2i, n_edit, prompt_index=None):
        c = m.c
        items, x0, self.desc, self.scenes = [], [], [], []
        for j in range(n_t2i + n_edit):
            k = None  # the prompt, when the index drew it
            if j < n_t2i and prompt_index is not None:
                si, i, k = prompt_index.draw(rng)
                ds = sets[si]
            else:
                ds = rng.choice(sets)
                i = rng.randrange(ds.n)
            if j < n_t2i:
                ps = ds.prompt_ids[i]
                items.append({"prompt_ids": ps[rng.randrange(len(ps)) if k is None else k], "src_pixels64": None,
                              "src_tokens": None})
                x0.append(ds.latents[i])
                self.desc.append(ds.cap_ids[i])
                self.scenes.append(ds.records[i]["scene"])
            else:
                items.append({"prompt_ids": ds.edit_ids[i], "src_pixels64": to_pixels(ds.images[i:i + 1], 64)[0],
                              "src_tokens": patchify(torch.from_numpy(np.asarray(ds.latents[i:i + 1])).float(),
                                                     c.latent_patch)[0]})
                x0.append(ds.edited_latents[i])
                self.desc.append(tok.encode(ds.records[i]["edit"]["caption"]))
                self.scenes.append(ds.records[i]["edit"]["scene"])
        self.is_edit = torch.tensor([it["src_pixels64"] is not None for it in items])
        self.prompts = [it["prompt_ids"] for it in items]
        self.x0 = patchify(torch.from_numpy(np.stack(x0)).float(), c.latent_patch)
        mk = lambda wt, wi: Context(m, [dict(it, with_text=wt, with_img=wi) for it in items], tok)  # noqa: E731
        self.full, self.no_text, self.no_img = mk(True, True), mk(False, True), mk(True, False)
        self.B = len(items)

    def sample_scales(self, gen, text_range=(1.0, 5.0)):
        """Per-sample (text, image) guidance scales: text ~U[text_range] (CFG distillation's U[1,5] unless a later
        stage narrows it to the scales it will serve at), image ~U[1,2.5] for edits and 1 for text-to-image."""
        lo, hi = text_range
        st = lo + (hi - lo) * torch.rand(self.B, generator=gen)
        si = torch.where(self.is_edit, 1.0 + 1.5 * torch.rand(self.B, generator=gen), torch.ones(self.B))
        return st, si


def teacher_cfg(m, xt, t, gb, st, si, renorm_min=0.0):
    """BAGEL dual CFG (text then image) with global renorm, per sample scales [B]."""
    with torch.no_grad():
        v = gen_velocity(m, xt, t, gb.full)
        vt = gen_velocity(m, xt, t, gb.no_text)
        vi = gen_velocity(m, xt, t, gb.no_img)
        s1, s2 = st.view(-1, 1, 1), si.view(-1, 1, 1)
        g = vt + s1 * (v - vt)
        g = vi + s2 * (g - vi)
        nc = v.flatten(1).norm(dim=1)
        ng = g.flatten(1).norm(dim=1).clamp_min(1e-8)
        r = (nc / ng).clamp(min=renorm_min, max=1.0).view(-1, 1, 1)
        return g * r
