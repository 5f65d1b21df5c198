"""Miniature BAGEL: Qwen2-style Mixture-of-Transformer decoder, conv-stem ViT, conv VAE.

Every decoder layer has two experts (understanding: text + ViT tokens; generation: VAE latent tokens),
each with its own norms, QKV/O projections, QK-norm and SwiGLU MLP. Attention is one shared
self-attention over the whole sequence. Training routes tokens by type; the exported graphs each hold
one expert (decoder.onnx = understanding, denoiser.onnx = generation) and share the KV cache.
"""
import math
import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig

NEG = -1e9


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_cos_sin(position_ids, head_dim, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=position_ids.device) / head_dim))
    ang = position_ids.to(torch.float32).unsqueeze(-1) * inv  # [B,T,Dh/2]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().unsqueeze(1), ang.sin().unsqueeze(1)  # [B,1,T,Dh]


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


def sincos_2d(grid, dim):
    """Fixed 2-D sin-cos position embedding [grid*grid, dim] (row-major)."""
    assert dim % 4 == 0
    q = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(q, dtype=torch.float64) / q))
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij")
    y = ys.reshape(-1, 1) * omega
    x = xs.reshape(-1, 1) * omega
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=1).to(torch.float32)


class Expert(nn.Module):
    """One expert of a MoT layer: Qwen2 attention projections (+QK-norm) and SwiGLU MLP."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        D, H, Dh = c.hidden, c.heads, c.head_dim
        self.H, self.Dh = H, Dh
        self.input_norm = RMSNorm(D, c.rms_eps)
        self.q_proj = nn.Linear(D, H * Dh)
        self.k_proj = nn.Linear(D, H * Dh)
        self.v_proj = nn.Linear(D, H * Dh)
        self.o_proj = nn.Linear(H * Dh, D, bias=False)
        self.q_norm = RMSNorm(Dh, c.rms_eps)
        self.k_norm = RMSNorm(Dh, c.rms_eps)
        self.post_norm = RMSNorm(D, c.rms_eps)
        self.gate = nn.Linear(D, c.ffn, bias=False)
        self.up = nn.Linear(D, c.ffn, bias=False)
        self.down = nn.Linear(c.ffn, D, bias=False)

    def qkv(self, x):
        """x [...,D] -> q,k,v [..., H, Dh] (q,k normalised)."""
        h = self.input_norm(x)
        shp = x.shape[:-1] + (self.H, self.Dh)
        q = self.q_norm(self.q_proj(h).reshape(shp))
        k = self.k_norm(self.k_proj(h).reshape(shp))
        v = self.v_proj(h).reshape(shp)
        return q, k, v

    def out(self, a, x):
        """a: attention output [..., H*Dh]; x: residual stream."""
        x = x + self.o_proj(a)
        h = self.post_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class MoTLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.und = Expert(c)
        self.gen = Expert(c)


def attention(q, k, v, mask):
    """q [B,H,T,Dh], k/v [B,H,S,Dh], mask additive [B,1,T,S]."""
    s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1])) + mask
    return torch.matmul(torch.softmax(s, dim=-1), v)


class ViTBlock(nn.Module):
    """Pre-LN transformer block (bidirectional), written out for a clean ONNX export."""

    def __init__(self, w, heads):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(w)
        self.qkv = nn.Linear(w, 3 * w)
        self.proj = nn.Linear(w, w)
        self.ln2 = nn.LayerNorm(w)
        self.fc1 = nn.Linear(w, 4 * w)
        self.fc2 = nn.Linear(4 * w, w)

    def forward(self, x):
        B, N, W = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(B, N, 3, self.heads, W // self.heads).permute(2, 0, 3, 1, 4)
        s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(W // self.heads))
        a = torch.matmul(torch.softmax(s, dim=-1), v).transpose(1, 2).reshape(B, N, W)
        x = x + self.proj(a)
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class VisionEncoder(nn.Module):
    """Conv stem (64 -> 4x4 tokens) + small pre-LN ViT + MLP connector + fixed 2-D sin-cos pos emb.

    With the default config the stem sees RGB. `vit_input` "mask" / "rgb+mask" and `vit_colour` add
    fixed (parameter-free) factorised inputs: a foreground mask that carries shape but no colour, and
    per-token colour means over the foreground that carry colour but (almost) no shape."""

    COLOUR_SUB = 8  # colour features are pooled over 8x8 sub-patches; a token gets its (patch/8)^2 of them

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.input = c.vit_input
        if self.input not in ("rgb", "mask", "rgb+mask"):
            raise ValueError(f"vit_input must be rgb, mask or rgb+mask, not {self.input!r}")
        chans = list(c.vit_stem)
        layers = []
        cin = {"rgb": 3, "mask": 1, "rgb+mask": 4}[self.input]
        for ch in chans:
            layers += [nn.Conv2d(cin, ch, 3, 2, 1), nn.GELU()]
            cin = ch
        self.stem = nn.Sequential(*layers)
        self.proj = nn.Linear(cin, c.vit_width)
        # training only (train_unified.py --vit-rgb-drop): with "rgb+mask", the fraction of images whose RGB
        # channels the stem does not see, so the model must also read them from the mask and colour feature
        self.rgb_drop = 0.0
        g = c.vit_grid
        self.patch = c.vit_image_size // g
        self.colour = None
        if c.vit_colour:
            sub = (self.patch // self.COLOUR_SUB) ** 2
            # per sub-patch: mean foreground colour (3) and foreground fraction (1); plus the background (3)
            self.colour = nn.Linear(sub * 4 + 3, c.vit_width)
        self.register_buffer("vit_pos", sincos_2d(g, c.vit_width), persistent=False)
        self.blocks = nn.ModuleList([ViTBlock(c.vit_width, c.vit_heads) for _ in range(c.vit_layers)])
        self.norm = nn.LayerNorm(c.vit_width)
        self.conn1 = nn.Linear(c.vit_width, c.hidden)
        self.conn2 = nn.Linear(c.hidden, c.hidden)
        self.register_buffer("llm_pos", sincos_2d(g, c.hidden), persistent=False)

    @staticmethod
    def foreground(pixels):
        """(mask [B,1,H,W] in [0,1], background [B,3]). The background is the mean of the four corner
        pixels (the Shapes world never draws there, even shifted by a few pixels); a pixel is foreground
        in proportion to its RGB distance from it (0 below 0.1, 1 above 0.5, in [-1,1] units), so the
        mask is the same for every object colour."""
        bg = (pixels[:, :, 0, 0] + pixels[:, :, 0, -1] + pixels[:, :, -1, 0] + pixels[:, :, -1, -1]) * 0.25
        d = torch.sqrt(((pixels - bg[:, :, None, None]) ** 2).sum(1, keepdim=True) + 1e-6)
        return torch.clamp((d - 0.1) * 2.5, 0.0, 1.0), bg

    def colour_features(self, pixels, mask, bg):
        """[B,T,sub*4+3]: for each token, its 8x8 sub-patches' mean foreground colour and coverage."""
        k = self.COLOUR_SUB
        cover = F.avg_pool2d(mask, k)  # [B,1,h,w]
        mean = F.avg_pool2d(mask * pixels, k) / (cover + 1e-2)  # ~0 where nothing is drawn
        f = torch.cat([mean, cover], 1)  # [B,4,h,w]
        B, C, h, w = f.shape
        r = self.patch // k
        g = h // r
        # space-to-depth: every token gets its r x r sub-patches' features
        f = f.reshape(B, C, g, r, g, r).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * r * r)
        return torch.cat([f, bg[:, None, :].expand(B, g * g, 3)], -1)

    HIDE_SHAPE, HIDE_COLOUR = 1, 2  # `hide` codes (train_unified.py --factor-drop)

    def hidden_inputs(self, pixels, mask, bg, hide):
        """Training only (--factor-drop): (rgb, mask, colour features) with one attribute taken out per image.
        `hide` [B]: 0 keeps the image; HIDE_SHAPE leaves colour without shape (no RGB, the mask and the colour
        feature's colour and coverage averaged over each token, so only where, how much and which colour is
        drawn remains); HIDE_COLOUR leaves shape without colour (no RGB, the colour feature's mean colours
        zeroed; the background colour stays).
        No RGB is what --vit-rgb-drop trains the encoder on, so both stay close to what it has seen."""
        B = pixels.shape[0]
        feats = self.colour_features(pixels, mask, bg) if self.colour is not None else None
        shape = (hide == self.HIDE_SHAPE).view(B, 1, 1, 1)
        colour = (hide == self.HIDE_COLOUR).view(B, 1, 1, 1)
        rgb = pixels.masked_fill(shape | colour, 0.0)
        blurred = F.interpolate(F.avg_pool2d(mask, self.patch), scale_factor=self.patch, mode="nearest")
        mask = torch.where(shape, blurred, mask)
        if feats is not None:
            r2 = (self.patch // self.COLOUR_SUB) ** 2
            f = feats[..., :4 * r2].reshape(B, -1, 4, r2)  # [B,T,(rgb mean, coverage),sub-patches]
            cover, means = f[:, :, 3], f[:, :, :3]
            flat_cover = cover.mean(-1, keepdim=True).expand_as(cover)
            weight = cover[:, :, None]  # the token's colour: its sub-patches' colours weighted by their coverage
            flat_means = ((means * weight).sum(-1, keepdim=True) / (weight.sum(-1, keepdim=True) + 1e-2)).expand_as(means)
            per_token = shape.view(B, 1, 1)
            cover = torch.where(per_token, flat_cover, cover)
            means = torch.where(per_token.unsqueeze(-1), flat_means, means).masked_fill(colour.view(B, 1, 1, 1), 0.0)
            feats = torch.cat([torch.cat([means, cover[:, :, None]], 2).reshape(B, -1, 4 * r2), feats[..., 4 * r2:]], -1)
        return rgb, mask, feats

    def forward(self, pixels, hide=None):
        x = pixels
        feats = None
        if self.input != "rgb" or self.colour is not None:
            mask, bg = self.foreground(pixels)
            rgb = pixels
            if hide is not None:
                if self.input != "rgb+mask":
                    raise ValueError("hiding an attribute needs vit_input rgb+mask")
                rgb, mask, feats = self.hidden_inputs(pixels, mask, bg, hide)
            if self.input == "mask":
                x = mask
            elif self.input == "rgb+mask":
                if self.training and self.rgb_drop > 0:
                    keep = (torch.rand(pixels.shape[0], 1, 1, 1, device=pixels.device) >= self.rgb_drop).to(pixels.dtype)
                    rgb = rgb * keep
                x = torch.cat([rgb, mask], 1)
        f = self.stem(x)  # [B,C,g,g]
        if x.shape[1] != 3 and f.requires_grad and not torch.jit.is_tracing():
            # torch 1.13's CPU (mkldnn) conv backward computes wrong, run-to-run different weight gradients
            # for a 1- or 4-channel input when the incoming gradient is the transposed view the token reshape
            # gives back (training diverges to NaN within a few hundred steps; checked against float64 and
            # finite differences, docs/results.md "Colour x shape"); a contiguous gradient avoids that path
            f.register_hook(lambda grad: grad.contiguous())
        t = self.proj(f.flatten(2).transpose(1, 2)) + self.vit_pos
        if self.colour is not None:
            t = t + self.colour(feats if feats is not None else self.colour_features(pixels, mask, bg))
        for b in self.blocks:
            t = b(t)
        t = self.norm(t)
        return self.conn2(F.gelu(self.conn1(t), approximate="tanh")) + self.llm_pos


def warm_start_state(state, model):
    """`state` (a checkpoint's weights) adapted to `model` where only the vision encoder's factorised inputs
    differ: an RGB-only checkpoint warm-starts a model with vit_colour (the colour projection starts at
    zero) or vit_input "rgb+mask" (the first conv's mask channel starts at zero), so the adapted model
    computes exactly what the checkpoint did until training moves the new weights. A deeper model grows from
    a shallower checkpoint the same way: the new layers come last, with their experts' output projections
    (o_proj, down) at zero, so each starts as the identity on the residual stream."""
    own = model.state_dict()
    out = dict(state)
    for k, v in own.items():
        if k.startswith("vision.colour.") and k not in state:
            out[k] = torch.zeros_like(v)
        elif k.startswith("layers.") and k not in state:
            out[k] = torch.zeros_like(v) if k.endswith((".o_proj.weight", ".down.weight")) else v.clone()
    k = "vision.stem.0.weight"
    if k in state and state[k].shape != own[k].shape:
        old = state[k]
        if old.shape[1] != 3 or own[k].shape[1] != 4:
            raise ValueError(f"cannot warm-start a {own[k].shape[1]}-channel stem from a {old.shape[1]}-channel one "
                             f"(only rgb -> rgb+mask)")
        new = torch.zeros_like(own[k])
        new[:, :3] = old
        out[k] = new
    extra = sorted(set(out) - set(own))
    if extra:
        raise ValueError(f"checkpoint weights the model does not have: {extra[:4]}")
    return out


class TimestepEmbedder(nn.Module):
    def __init__(self, D, freq_dim=128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, D), nn.SiLU(), nn.Linear(D, D))

    def forward(self, t):  # t [B] in [0,1]
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        a = (t.to(torch.float32) * 1000.0).unsqueeze(-1) * freqs
        # in the weights' dtype (a no-op for float32; lets the float64 parity reference run)
        return self.mlp(torch.cat([a.cos(), a.sin()], dim=-1).to(self.mlp[0].weight.dtype))


# The parts of the last layer's understanding expert that act after its keys and values are taken.
_READOUT_EXPERT = ("q_proj.", "q_norm.", "o_proj.", "post_norm.", "gate.", "up.", "down.")


def readout_parameter(name: str, layers: int) -> bool:
    """True for a parameter that only shapes written text: the final norm, the LM head, and the last layer's
    understanding expert past its input norm and key/value projections. Generation and editing read the
    context only through its keys and values, and the last layer's are computed before any of these, so
    training them leaves every image output bitwise the same."""
    last = f"layers.{layers - 1}.und."
    return name.startswith(("norm.", "lm_head.")) or (
        name.startswith(last) and name[len(last):].startswith(_READOUT_EXPERT))


def generation_parameter(name: str) -> bool:
    """True for a parameter of the generation path: the generation experts, their final norm, the latent
    projections and the timestep embedder (everything else reads or writes text and ViT tokens)."""
    return ".gen." in name or name.startswith(("norm_gen.", "vae2llm.", "llm2vae.", "time_embed."))


def trainable_subset(kind: str, layers: int):
    """train_unified --train-only KIND ('+'-joined parts: vision, readout, understanding, generation) -> name
    predicate."""
    parts = kind.split("+")
    return lambda name: (("vision" in parts and name.startswith("vision."))
                         or ("generation" in parts and generation_parameter(name))
                         or ("readout" in parts and readout_parameter(name, layers))
                         or ("understanding" in parts and not generation_parameter(name)))


class Unified(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.c = c
        D = c.hidden
        self.embed = nn.Embedding(c.vocab, D)
        self.vision = VisionEncoder(c)
        self.layers = nn.ModuleList([MoTLayer(c) for _ in range(c.layers)])
        self.norm = RMSNorm(D, c.rms_eps)
        self.norm_gen = RMSNorm(D, c.rms_eps)
        self.lm_head = nn.Linear(D, c.vocab, bias=False)
        self.vae2llm = nn.Linear(c.latent_token_dim, D)
        self.llm2vae = nn.Linear(D, c.latent_token_dim)
        self.time_embed = TimestepEmbedder(D)
        self.register_buffer("latent_pos", sincos_2d(c.latent_grid, D), persistent=False)
        self.apply(self._init)
        nn.init.zeros_(self.llm2vae.weight)
        nn.init.zeros_(self.llm2vae.bias)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # ---- input embeddings ----
    def latent_in(self, tokens, t):
        """tokens [B,N,tokdim] (N = full latent grid), t [B] -> [B,N,D]."""
        return self.vae2llm(tokens) + self.time_embed(t).unsqueeze(1) + self.latent_pos

    # ---- single-expert forward with KV cache (used by the exported graphs) ----
    def expert_forward(self, which, x, position_ids, mask, past):
        c = self.c
        cos, sin = rope_cos_sin(position_ids, c.head_dim, c.rope_theta)
        presents, hiddens = [], []
        B, T, _ = x.shape
        for i, layer in enumerate(self.layers):
            e = layer.und if which == "und" else layer.gen
            q, k, v = e.qkv(x)  # [B,T,H,Dh]
            q = apply_rope(q.transpose(1, 2), cos, sin)
            k = apply_rope(k.transpose(1, 2), cos, sin)
            v = v.transpose(1, 2)
            k = torch.cat([past[i][0], k], dim=2)
            v = torch.cat([past[i][1], v], dim=2)
            presents.append((k, v))
            a = attention(q, k, v, mask).transpose(1, 2).reshape(B, T, c.heads * c.head_dim)
            x = e.out(a, x)
            hiddens.append(x)
        return x, presents, hiddens

    # ---- packed training forward: routes tokens to experts, one shared attention ----
    def train_forward(self, x, gen_mask, position_ids, mask):
        """x [B,T,D] input embeddings; gen_mask [B,T] bool (VAE latent tokens); mask additive [B,1,T,T].
        Returns final hidden [B,T,D] (und tokens through norm, gen tokens through norm_gen applied by caller)."""
        c = self.c
        B, T, D = x.shape
        cos, sin = rope_cos_sin(position_ids, c.head_dim, c.rope_theta)
        flat = gen_mask.reshape(-1)
        # sort the token stream (understanding tokens first) so each expert works on a contiguous slice
        perm = torch.cat([(~flat).nonzero().squeeze(1), flat.nonzero().squeeze(1)])
        inv = torch.empty_like(perm)
        inv[perm] = torch.arange(perm.numel(), device=perm.device)
        nu = int((~flat).sum())
        HD = c.heads * c.head_dim
        xs = x.reshape(B * T, D).index_select(0, perm)

        def qkv_of(e, inp):
            q, k, v = e.qkv(inp)
            return torch.cat([q.reshape(-1, HD), k.reshape(-1, HD), v.reshape(-1, HD)], dim=1)

        for layer in self.layers:
            parts = [qkv_of(layer.und, xs[:nu])]
            if nu < xs.shape[0]:
                parts.append(qkv_of(layer.gen, xs[nu:]))
            qkv = torch.cat(parts, 0).index_select(0, inv).reshape(B, T, 3, c.heads, c.head_dim)
            q = apply_rope(qkv[:, :, 0].transpose(1, 2), cos, sin)
            k = apply_rope(qkv[:, :, 1].transpose(1, 2), cos, sin)
            v = qkv[:, :, 2].transpose(1, 2)
            a = attention(q, k, v, mask).transpose(1, 2).reshape(B * T, HD).index_select(0, perm)
            parts = [layer.und.out(a[:nu], xs[:nu])]
            if nu < xs.shape[0]:
                parts.append(layer.gen.out(a[nu:], xs[nu:]))
            xs = torch.cat(parts, 0)
        xf = xs.index_select(0, inv)
        return xf.reshape(B, T, D)


# ---------------- VAE ----------------
class VAE(nn.Module):
    """Small conv VAE: G x G x 3 -> (G/4) x (G/4) x C (for vae_channels of length 3)."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        ch = list(c.vae_channels)
        C = c.latent_channels
        enc = [nn.Conv2d(3, ch[0], 3, 1, 1), nn.SiLU()]
        for i in range(1, len(ch)):
            enc += [nn.Conv2d(ch[i - 1], ch[i], 3, 2, 1), nn.SiLU(), nn.Conv2d(ch[i], ch[i], 3, 1, 1), nn.SiLU()]
        enc += [nn.Conv2d(ch[-1], 2 * C, 1)]
        self.enc = nn.Sequential(*enc)
        dec = [nn.Conv2d(C, ch[-1], 3, 1, 1), nn.SiLU(), nn.Conv2d(ch[-1], ch[-1], 3, 1, 1), nn.SiLU()]
        for i in range(len(ch) - 1, 0, -1):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i], ch[i - 1], 3, 1, 1), nn.SiLU(),
                    nn.Conv2d(ch[i - 1], ch[i - 1], 3, 1, 1), nn.SiLU()]
        dec += [nn.Conv2d(ch[0], 3, 3, 1, 1)]
        self.dec = nn.Sequential(*dec)
        self.C = C

    def encode(self, x):
        h = self.enc(x)
        return h[:, : self.C], h[:, self.C:].clamp(-10, 10)

    def decode(self, z):
        return self.dec(z)


# ---------------- patchify helpers ----------------
def patchify(lat, p):
    """[B,C,h,w] -> [B,(h/p)*(w/p), C*p*p] row-major tokens, each [C,p,p] channel-major."""
    B, C, h, w = lat.shape
    x = lat.reshape(B, C, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(B, (h // p) * (w // p), C * p * p)


def unpatchify(tok, C, h, w, p):
    B = tok.shape[0]
    x = tok.reshape(B, h // p, w // p, C, p, p).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, C, h, w)
