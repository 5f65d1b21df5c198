"""Joint BAGEL-style loss: CE on answer tokens (captioning + VQA) + flow-matching MSE on velocity (t2i + edit)."""
import torch
import torch.nn.functional as F

from .model import patchify


def logit_normal(n, gen=None, shift=1.0, device=None):
    t = torch.sigmoid(torch.randn(n, generator=gen, device=device))
    return shift * t / (1 + (shift - 1) * t)


def embed_batch(model, b, t_noisy=None, eps=None):
    """Input embeddings [B,T,D] for a collated batch; returns (x, x0_tokens, eps, t)."""
    c = model.c
    B, T = b["ids"].shape
    D = c.hidden
    xf = model.embed(b["ids"]).reshape(B * T, D)
    if b["vit_pixels"] is not None:
        xf = xf.index_copy(0, b["vit_idx"], model.vision(b["vit_pixels"], hide=b.get("vit_hide")).reshape(-1, D))
    if b["clean_lat"] is not None:
        tok = patchify(b["clean_lat"], c.latent_patch)
        xf = xf.index_copy(0, b["clean_idx"], model.latent_in(tok, torch.zeros(tok.shape[0], device=tok.device)).reshape(-1, D))
    x0 = None
    if b["noisy_lat"] is not None:
        x0 = patchify(b["noisy_lat"], c.latent_patch)
        nb = x0.shape[0]
    if b.get("noisy_xt") is not None:  # sampling: x_t given directly
        xt = b["noisy_xt"]
        xf = xf.index_copy(0, b["noisy_idx"], model.latent_in(xt, t_noisy).reshape(-1, D))
    elif x0 is not None:
        if t_noisy is None:
            t_noisy = logit_normal(nb, device=x0.device)
        if eps is None:
            eps = torch.randn_like(x0)
        tt = t_noisy.view(nb, 1, 1)
        xt = (1 - tt) * x0 + tt * eps
        xf = xf.index_copy(0, b["noisy_idx"], model.latent_in(xt, t_noisy).reshape(-1, D))
    return xf.reshape(B, T, D), x0, eps, t_noisy


def joint_loss(model, b):
    B, T = b["ids"].shape
    x, x0, eps, t = embed_batch(model, b)
    h = model.train_forward(x, b["gen_mask"], b["pos"], b["mask"]).reshape(B * T, -1)
    labels = b["labels"].reshape(-1)
    sel = (labels != -100).nonzero().squeeze(1)
    out = {}
    loss = 0.0
    if sel.numel():
        logits = model.lm_head(model.norm(h.index_select(0, sel)))
        ce = F.cross_entropy(logits, labels.index_select(0, sel))
        out["ce"] = ce.item()
        out["tok_acc"] = (logits.argmax(-1) == labels.index_select(0, sel)).float().mean().item()
        loss = loss + ce
    if x0 is not None:
        v = model.llm2vae(model.norm_gen(h.index_select(0, b["noisy_idx"]))).reshape(x0.shape)
        mse = F.mse_loss(v, eps - x0)
        out["mse"] = mse.item()
        loss = loss + mse
    out["loss"] = float(loss)
    return loss, out
