"""Shapes-world datasets (from `npx hyperbagel dataset`) and BAGEL-style packed training sequences."""
import json
import os

import numpy as np
import torch
import torch.nn.functional as F

from .model import NEG
from .vocabulary import COLORS, SHAPES

CAPTION_PROMPT = "describe the image"

# token kinds
TEXT, VIT, CLEAN, NOISY = 0, 1, 2, 3


def think_prefix(folders):
    """The words every prompt that think samples expand begins with (a record's prompts after its caption, as
    think_seq draws them), over the dataset folders: the manifest's prompts.think_prefix, "a photo of" for the
    Shapes world. None when they share no first word."""
    common = None
    for folder in folders:
        with open(os.path.join(folder, "records.jsonl")) as f:
            for line in f:
                if not line.strip():
                    continue
                for p in (json.loads(line).get("prompts") or [])[1:]:
                    words = p.split()
                    if common is None:
                        common = words
                    else:
                        n = 0
                        while n < min(len(common), len(words)) and common[n] == words[n]:
                            n += 1
                        common = common[:n]
    # a frame is followed by a noun phrase, which starts with an article or a number: a prefix ending in one
    # (all of a small dataset's prompts may read "a photo of a ...") has run into the noun phrases
    while common and common[-1] in ("a", "an", "the", "one", "two", "three", "four"):
        common = common[:-1]
    return " ".join(common) if common else None


def record_texts(folder):
    """Every text a dataset folder's records hold (captions, prompts, questions, answers, edit instructions and
    captions): with CAPTION_PROMPT, the text the recipes train on."""
    with open(os.path.join(folder, "records.jsonl")) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            yield r["caption"]
            yield from r.get("prompts") or []
            for q in r.get("qa", []):
                yield q["question"]
                yield q["answer"]
            e = r.get("edit") or {}
            yield from (v for v in (e.get("instruction"), e.get("caption")) if isinstance(v, str))


class ShapesData:
    """One dataset folder: images.npy / edited.npy (uint8 [N,64,64,3]), records.jsonl, meta.json."""

    def __init__(self, folder, tok=None, limit=None):
        self.folder = folder
        self.meta = json.load(open(os.path.join(folder, "meta.json")))
        self.images = np.load(os.path.join(folder, "images.npy"), mmap_mode="r")
        self.edited = np.load(os.path.join(folder, "edited.npy"), mmap_mode="r")
        self.records = []
        with open(os.path.join(folder, "records.jsonl")) as f:
            for line in f:
                if line.strip():
                    self.records.append(json.loads(line))
                    if limit and len(self.records) >= limit:
                        break
        self.n = len(self.records)
        self.images = np.ascontiguousarray(self.images[: self.n])
        self.edited = np.ascontiguousarray(self.edited[: self.n])
        self.tok = tok
        if tok is not None:
            self.encode(tok)
        self.latents = None  # [N,C,h,w] float32 (scaled), set by attach_latents
        self.edited_latents = None

    def encode(self, tok):
        self.tok = tok
        e = tok.encode
        self.cap_ids = [e(r["caption"]) for r in self.records]
        self.prompt_ids = [[e(p) for p in (r.get("prompts") or [r["caption"]])] for r in self.records]
        self.qa_ids = [[(e(q["question"]), e(q["answer"])) for q in r.get("qa", [])] for r in self.records]
        self.edit_ids = [e(r["edit"]["instruction"]) for r in self.records]

    def attach_latents(self, vae, scale, cache_path=None, batch=256, device=None):
        """Encodes the images (scaled latent means), or reads them from `cache_path` when it holds this set's.
        The cache is written whole or not at all (a temporary file renamed into place); one that cannot be read
        (a run killed while writing it before this was so, a full disk) is a miss: encoded again and rewritten."""
        if cache_path and os.path.exists(cache_path):
            try:
                with np.load(cache_path) as d:
                    lat, ed = d["latents"], d["edited"]
                if lat.shape[0] == self.n and ed.shape == lat.shape:
                    self.latents, self.edited_latents = lat, ed
                    return
            except Exception as e:  # noqa: BLE001 - any unreadable cache (truncated zip, bad header) is rebuilt
                print(f"note: latent cache {cache_path} cannot be read ({type(e).__name__}: {e}); encoding again",
                      flush=True)
        outs = []
        vae.eval()
        with torch.no_grad():
            for arr in (self.images, self.edited):
                lat = []
                for i in range(0, self.n, batch):
                    px = to_pixels(arr[i:i + batch], 32 if vae_size(vae) == 32 else 64, device)
                    lat.append((vae.encode(px)[0] * scale).cpu().numpy())
                outs.append(np.concatenate(lat))
        self.latents, self.edited_latents = outs
        if cache_path:
            tmp = f"{cache_path}.tmp-{os.getpid()}"
            try:
                with open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz" to its name
                    np.savez(f, latents=self.latents, edited=self.edited_latents)
                os.replace(tmp, cache_path)
            finally:
                if os.path.exists(tmp):
                    os.remove(tmp)


def vae_size(vae):
    return getattr(vae, "image_size", 32)


def to_pixels(u8, size=64, device=None):
    """uint8 [B,64,64,3] -> float [B,3,size,size] in [-1,1]; box-average downsampling."""
    x = torch.from_numpy(np.array(u8, dtype=np.uint8)).to(device).to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0
    if x.shape[-1] != size:
        x = F.avg_pool2d(x, x.shape[-1] // size)
    return x


# ---------------- sequence building ----------------
class Seq:
    """A packed training sequence: per token kind, text id, position id, block id, label."""

    def __init__(self):
        self.kind, self.ids, self.pos, self.blk, self.labels = [], [], [], [], []
        self.vit = []  # (dataset, index) or (dataset, index, dx, dy) per ViT block, in order (add_vit)
        self.vit_hide = []  # per ViT block: 0, or the attribute its image hides (VisionEncoder.HIDE_*; --factor-drop)
        self.clean = []  # latent [C,h,w] arrays per clean block
        self.noisy = []  # latent x0 per noisy block
        self.next_pos = 0
        self.next_blk = 0

    def add_vit(self, entry, hide=0):
        """A ViT block's image source (a `vit` entry) and what it hides, kept aligned."""
        self.vit.append(entry)
        self.vit_hide.append(hide)

    def text(self, ids, label_next=False):
        for t in ids:
            self.kind.append(TEXT)
            self.ids.append(t)
            self.pos.append(self.next_pos)
            self.blk.append(-1)
            self.labels.append(-100)
            self.next_pos += 1

    def block(self, kind, n):
        for _ in range(n):
            self.kind.append(kind)
            self.ids.append(0)
            self.pos.append(self.next_pos)
            self.blk.append(self.next_blk)
            self.labels.append(-100)
        self.next_pos += 1
        self.next_blk += 1

    def answer(self, start_id, ids, eos, inputs=None):
        """`start_id` then answer ids; every one of them predicts the next (the last predicts eos).
        `inputs`: what the model reads in place of `ids` (same length; see `attribute_noise`), targets unchanged."""
        seq = [start_id] + (inputs if inputs is not None else ids)
        tgt = ids + [eos]
        for t, y in zip(seq, tgt):
            self.text([t])
            self.labels[-1] = y

    def __len__(self):
        return len(self.kind)


def attribute_groups(tok):
    """Token ids of the words `attribute_noise` swaps, one tuple per interchangeable group (colours, shapes)."""
    return [tuple(tok.encode(w)[0] for w in group) for group in (COLORS, SHAPES)]


def attribute_noise(ids, groups, rng, p):
    """The answer as the model reads it while learning to write it: each colour or shape word is replaced, with
    probability p, by a random word of its group. The targets stay the true words, so the next word (the
    shape after "cyan", the cell after "triangle") cannot be predicted from the word before it and must
    come from the image: the caption's word co-occurrences (no "cyan triangle" in training) stop acting as a
    prior that overrides what the vision encoder sees."""
    out = list(ids)
    for k, t in enumerate(out):
        for g in groups:
            if t in g and rng.random() < p:
                out[k] = g[rng.randrange(len(g))]
    return out


HIDE_SHAPE, HIDE_COLOUR = 1, 2  # = VisionEncoder.HIDE_SHAPE / HIDE_COLOUR (no torch here)


def _draw_hide(rng, factor_drop):
    """0, or the attribute an image hides (`factor_drop` = (groups, p[, words]); even odds shape / colour)."""
    if factor_drop and factor_drop[1] > 0 and rng.random() < factor_drop[1]:
        return HIDE_SHAPE if rng.random() < 0.5 else HIDE_COLOUR
    return 0


def _trained_answer(s, tok, a, rng, noise, factor_drop, hide):
    """One answer and its EOS as targets: `noise` on the side the model reads; with `hide`, the hidden group's
    words untrained (and, with factor_drop's `words`, random as read)."""
    start = len(s.labels)
    inputs = attribute_noise(a, noise[0], rng, noise[1]) if noise and noise[1] > 0 else None
    unseen = factor_drop[0][1 if hide == HIDE_SHAPE else 0] if hide else ()
    if hide and len(factor_drop) > 2 and factor_drop[2]:
        # the hidden group's words are hidden from the text read as well: each is a random one of its group
        inputs = attribute_noise(inputs if inputs is not None else a, [unseen], rng, 1.0)
    s.answer(tok.im_start, a, tok.eos, inputs)
    if hide:
        s.labels[start:] = [-100 if y in unseen else y for y in s.labels[start:]]


def _image_prefix(tok, ds, i, rng, nv, shift, factor_drop):
    """`<bos> <vision_start> image <vision_end>` of record i, moved by up to `shift` pixels, hiding what
    `_draw_hide` draws: the sequence so far and what it hides."""
    s = Seq()
    s.text([tok.bos, tok.vision_start])
    s.block(VIT, nv)
    entry = (ds, i, rng.randint(-shift, shift), rng.randint(-shift, shift)) if shift else (ds, i)
    hide = _draw_hide(rng, factor_drop)
    s.add_vit(entry, hide)
    s.text([tok.vision_end])
    return s, hide


def understanding_seq(tok, ds, i, rng, nv, caption_prob=0.35, shift=0, noise=None, factor_drop=None):
    """`shift` > 0: the image is translated by a random whole number of pixels in [-shift, shift] on each
    axis (see `shifted`), so the ViT sees every shape at many phases of its 16-pixel token grid; the
    text is unchanged (a few pixels never move an object out of its cell). `noise` = (groups, p):
    `attribute_noise` on the answer's input side. `factor_drop` = (groups, p[, words]): with probability p the
    sequence is a caption whose image hides its objects' shapes or their colours (even odds;
    VisionEncoder.hidden_inputs), and the hidden group's words are not trained on (no label). The other
    group's words must then be read from what the image still shows, so the colour word cannot lean on
    the shape, nor the shape on the colour: training pairs stop standing in for an unseen one. `words`: the
    hidden group's words are also random in the answer as read, so the text cannot tell them either."""
    s, hide = _image_prefix(tok, ds, i, rng, nv, shift, factor_drop)
    if hide or rng.random() < caption_prob or not ds.qa_ids[i]:
        q, a = tok.encode(CAPTION_PROMPT), ds.cap_ids[i]
    else:
        q, a = ds.qa_ids[i][rng.randrange(len(ds.qa_ids[i]))]
    s.text(q)
    _trained_answer(s, tok, a, rng, noise, factor_drop, hide)
    return s


def followup_seq(tok, ds, i, rng, nv, shift=0, noise=None, factor_drop=None):
    """Two turns about one image, as a chat's session holds them (the engine's layout for a turn after an
    answer: the answer's EOS, then the words, then <|im_start|>): `<bos> <vision> q1 <|im_start|> a1 <eos>
    q2 <|im_start|> a2 <eos>`. The first turn is the caption (half the time) or a question, the second a
    question (or the caption after a question); both answers are trained. A model trained on one turn goes
    on in caption mode after the first EOS (`eval understand --followup`: 0.11 of second turns right).
    `noise` and `factor_drop` as in `understanding_seq`, over both answers: an image that hides an attribute
    opens with the caption, and neither answer trains the hidden group's words. Without them the two-turn
    samples are the only understanding samples with no regulariser, and session 22's legs lost held-out
    captions."""
    s, hide = _image_prefix(tok, ds, i, rng, nv, shift, factor_drop)
    qa = ds.qa_ids[i]
    cap = (tok.encode(CAPTION_PROMPT), ds.cap_ids[i])
    if not qa:
        turns = [cap, cap]
    elif hide or rng.random() < 0.5:
        turns = [cap, qa[rng.randrange(len(qa))]]
    else:
        first = rng.randrange(len(qa))
        rest = [k for k in range(len(qa)) if k != first]
        turns = [qa[first], qa[rng.choice(rest)] if rest and rng.random() < 0.75 else cap]
    for n, (q, a) in enumerate(turns):
        if n:
            s.text([tok.eos])  # the first answer's EOS, read as the engine feeds it back
        s.text(q)
        _trained_answer(s, tok, a, rng, noise, factor_drop, hide)
    return s


def has_short_prompts(ds, i):
    """Does record i have GenEval-style prompts besides its caption (prompts[0] is the caption)?"""
    return len(ds.prompt_ids[i]) > 1


def think_seq(tok, ds, i, rng):
    """Prompt expansion ("thinking" before generation, BAGEL's rewriter/CoT mode), text only:
    `<bos> short prompt <|im_start|> full caption <eos>`. The model learns p(caption | prompt) over the
    scenes a short prompt admits, so sampling it commits to one scene that generation then renders."""
    ps = ds.prompt_ids[i][1:]
    s = Seq()
    s.text([tok.bos])
    s.text(ps[rng.randrange(len(ps))])
    s.answer(tok.im_start, ds.cap_ids[i], tok.eos)
    return s


def t2i_seq(tok, ds, i, rng, n, p_drop_text=0.1):
    s = Seq()
    s.text([tok.bos])
    if rng.random() >= p_drop_text:
        ps = ds.prompt_ids[i]
        s.text(ps[rng.randrange(len(ps))])
    s.text([tok.gen_start])
    s.block(NOISY, n)
    s.noisy.append(ds.latents[i])
    return s


def edit_seq(tok, ds, i, rng, nv, n, p_drop_text=0.1, p_drop_img=0.1):
    s = Seq()
    s.text([tok.bos])
    if rng.random() >= p_drop_img:
        s.text([tok.vision_start])
        s.block(VIT, nv)
        s.add_vit((ds, i))
        s.text([tok.vision_end, tok.gen_start])
        s.block(CLEAN, n)
        s.clean.append(ds.latents[i])
        s.text([tok.gen_end])
    if rng.random() >= p_drop_text:
        s.text(ds.edit_ids[i])
    s.text([tok.gen_start])
    s.block(NOISY, n)
    s.noisy.append(ds.edited_latents[i])
    return s


def shifted(img, dx, dy):
    """uint8 [H,W,3] translated by (dx, dy) pixels; uncovered pixels take the background colour (the
    corner pixel: no object reaches a corner of its cell). Objects at the border may be clipped a little."""
    if not dx and not dy:
        return img
    H, W, _ = img.shape
    out = np.empty_like(img)
    out[:] = img[0, 0]
    ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
    xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
    out[yd, xd] = img[ys, xs]
    return out


def vit_image(v):
    """The uint8 image for a Seq.vit entry."""
    return shifted(v[0].images[v[1]], v[2], v[3]) if len(v) == 4 else v[0].images[v[1]]


def edit_target_pixels(ds, i):
    return ds.edited[i]


def collate(seqs, device=None):
    """-> dict of tensors for Unified training. The index arrays are filled on the host; the [B,1,T,T] mask
    and the pixels are built on `device` (the mask is the largest tensor of a step)."""
    B = len(seqs)
    T = max(len(s) for s in seqs)
    ids = np.zeros((B, T), np.int64)
    kind = np.full((B, T), -1, np.int64)
    pos = np.zeros((B, T), np.int64)
    blk = np.full((B, T), -1, np.int64)
    labels = np.full((B, T), -100, np.int64)
    for b, s in enumerate(seqs):
        L = len(s)
        ids[b, :L] = s.ids
        kind[b, :L] = s.kind
        pos[b, :L] = s.pos
        blk[b, :L] = s.blk
        labels[b, :L] = s.labels
        if L < T:
            pos[b, L:] = s.next_pos
    ids, kind, pos, blk, labels = (torch.from_numpy(a).to(device) for a in (ids, kind, pos, blk, labels))
    valid = kind >= 0
    ar = torch.arange(T, device=kind.device)
    causal = ar.view(1, T, 1) >= ar.view(1, 1, T)
    same_blk = (blk.unsqueeze(2) == blk.unsqueeze(1)) & (blk.unsqueeze(2) >= 0)
    noisy_key = (kind == NOISY).unsqueeze(1)
    allowed = valid.unsqueeze(1) & (causal | same_blk) & ~(noisy_key & ~same_blk)
    allowed = allowed | torch.eye(T, dtype=torch.bool, device=kind.device).unsqueeze(0)
    mask = torch.zeros(B, 1, T, T, device=kind.device).masked_fill(~allowed.unsqueeze(1), NEG)
    vit_src = [v for s in seqs for v in s.vit]
    vit_hide = [h for s in seqs for h in s.vit_hide]
    clean = [c for s in seqs for c in s.clean]
    noisy = [c for s in seqs for c in s.noisy]
    flat_kind = kind.reshape(-1)
    return {
        "ids": ids, "kind": kind, "pos": pos, "mask": mask, "labels": labels,
        "gen_mask": (kind == CLEAN) | (kind == NOISY),
        "vit_idx": (flat_kind == VIT).nonzero().squeeze(1),
        "clean_idx": (flat_kind == CLEAN).nonzero().squeeze(1),
        "noisy_idx": (flat_kind == NOISY).nonzero().squeeze(1),
        "vit_pixels": to_pixels(np.stack([vit_image(v) for v in vit_src]), 64, device) if vit_src else None,
        # None unless some image hides an attribute, so a batch without any runs the encoder's usual path
        "vit_hide": torch.tensor(vit_hide, device=device) if any(vit_hide) else None,
        "clean_lat": torch.from_numpy(np.stack(clean)).float().to(device) if clean else None,
        "noisy_lat": torch.from_numpy(np.stack(noisy)).float().to(device) if noisy else None,
    }
