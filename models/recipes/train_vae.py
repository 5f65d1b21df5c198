#!/usr/bin/env python3
"""Stage 1: train the small conv VAE (32x32x3 -> 8x8x4) on Shapes renders (source and edited images).

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/train_vae.py --data data/train --run runs/vae --steps 6000
Resumes from RUN/vae.ckpt. Writes RUN/loss.csv. Every checkpoint, the last included, stores the latent scale
(1/std of latent means, from the EMA weights); a --decoder-only fine-tune keeps --init's (its encoder, hence its
latent space, is --init's: a unified model trained on that VAE runs with the fine-tune unchanged).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyperbagel.utils import setup_threads, seed_all, save_ckpt, load_ckpt, CsvLog, EMA, Timer  # noqa: E402
from hyperbagel.utils import positive_int, positive_float, non_negative_float  # noqa: E402
from hyperbagel.ckpts import require_vae, require_data  # noqa: E402

setup_threads()
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hyperbagel.config import DEFAULT, ModelConfig  # noqa: E402
from hyperbagel.model import VAE  # noqa: E402
from hyperbagel.data import ShapesData, to_pixels  # noqa: E402


def latent_scale(vae, pixels):
    with torch.no_grad():
        mu = vae.encode(pixels)[0]
    return float(1.0 / mu.std().clamp_min(1e-6))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/train")
    ap.add_argument("--run", default="runs/vae")
    ap.add_argument("--steps", type=positive_int, default=6000)
    ap.add_argument("--batch", type=positive_int, default=64)
    ap.add_argument("--lr", type=positive_float, default=2e-3)
    ap.add_argument("--kl", type=non_negative_float, default=1e-4)
    ap.add_argument("--obj-weight", type=non_negative_float, default=9.0, help="extra loss weight on object pixels")
    ap.add_argument("--limit", type=positive_int, default=None, help="use only the first N records (default: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ckpt-every", type=positive_int, default=250)
    ap.add_argument("--log-every", type=positive_int, default=50)
    ap.add_argument("--tiny", action="store_true", help="TINY config (smoke test)")
    ap.add_argument("--init", default=None, help="start from this VAE checkpoint's EMA weights (new run)")
    ap.add_argument("--decoder-only", action="store_true",
                    help="freeze the encoder and keep --init's latent scale (keeps the latent space, so a unified model "
                         "trained on it stays valid); needs --init")
    a = ap.parse_args()
    require_data([a.data])
    ick = require_vae(a.init, "--init") if a.init else None
    ckpt_path = os.path.join(a.run, "vae.ckpt")
    if os.path.exists(a.run) and not os.path.isdir(a.run):
        sys.exit(f"--run {a.run!r} is a file: give a folder for the run")
    ck = load_ckpt(ckpt_path, f"--run {a.run!r}: its vae.ckpt (delete it to start afresh)", ("model", "ema", "opt", "step", "config"))
    if ck and a.steps < ck["step"]:
        print(f"{ckpt_path} is already at step {ck['step']}, past --steps {a.steps}: nothing to do", flush=True)
        return
    # what the run trains is in its optimizer state and its scale: a resume must train the same (checkpoints from
    # before decoder_only was recorded are taken as they come)
    if ck and "decoder_only" in ck and bool(ck["decoder_only"]) != a.decoder_only:
        sys.exit(f"{ckpt_path} is a {'--decoder-only' if ck['decoder_only'] else 'full (encoder and decoder)'} run; "
                 f"resuming it {'without' if ck['decoder_only'] else 'with'} --decoder-only is refused "
                 f"({'pass' if ck['decoder_only'] else 'leave out'} --decoder-only, or start a new --run)")
    if a.decoder_only and not ick and not ck:
        sys.exit("--decoder-only needs --init VAE.ckpt (the VAE whose encoder and latent scale it keeps)")
    # --decoder-only: the latent scale is --init's (the run's, on resume), never recomputed: a recomputed one
    # (another --data or --limit) would not be the scale the unified model was trained with
    fixed_scale = None
    if a.decoder_only:
        fixed_scale = float(ck["scale"] if ck and (ck.get("decoder_only") or not ick) else ick["scale"])
    os.makedirs(a.run, exist_ok=True)
    seed_all(a.seed)
    from hyperbagel.config import TINY
    c = ModelConfig.from_dict((TINY if a.tiny else DEFAULT).to_dict())
    ds = ShapesData(a.data, limit=a.limit)
    G = c.gen_image_size
    allpx = np.concatenate([ds.images, ds.edited])
    print(f"VAE: {len(allpx)} images at {G}x{G}, latent {c.latent_channels}x{c.latent_size}x{c.latent_size}", flush=True)
    vae = VAE(c)
    if ick:
        c = ModelConfig.from_dict(ick["config"])
        vae = VAE(c)
        vae.load_state_dict(ick["ema"])
    if a.decoder_only:
        for p in vae.enc.parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=a.lr, weight_decay=0.0)
    ema = EMA(vae, 0.999)
    step = 0
    gen = np.random.default_rng(a.seed)
    if ck:
        vae.load_state_dict(ck["model"])
        ema.model.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        torch.set_rng_state(ck["rng"])
        if "np_rng" in ck:  # the data sampler's state: a resumed run draws what an uninterrupted one would
            gen.bit_generator.state = ck["np_rng"]
        else:  # a checkpoint from before it was saved
            gen = np.random.default_rng(a.seed + step)
        print(f"resumed from {ckpt_path} at step {step}", flush=True)
    print(f"params: {sum(p.numel() for p in vae.parameters()) / 1e6:.3f}M", flush=True)
    log = CsvLog(os.path.join(a.run, "loss.csv"), ["step", "loss", "rec", "kl", "lr", "sec_per_step", "elapsed"],
                 resume_step=step)  # rows after the checkpoint (a run stopped before its next one) are dropped
    timer, t_last, acc = Timer(), 0.0, []

    def save():
        scale = fixed_scale if fixed_scale is not None else latent_scale(ema.model, to_pixels(allpx[:: max(1, len(allpx) // 2000)][:2000], G))
        save_ckpt(ckpt_path, {"model": vae.state_dict(), "ema": ema.model.state_dict(), "opt": opt.state_dict(),
                              "step": step, "rng": torch.get_rng_state(), "np_rng": gen.bit_generator.state, "config": c.to_dict(), "scale": scale,
                              "decoder_only": a.decoder_only})
        return scale

    while step < a.steps:
        idx = gen.integers(0, len(allpx), a.batch)
        x = to_pixels(allpx[idx], G)
        lr = a.lr * min(1.0, (step + 1) / 200)
        for gparam in opt.param_groups:
            gparam["lr"] = lr
        mu, logvar = vae.encode(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        rec = vae.decode(z)
        # objects cover a small share of the pixels: weight them up (pixels far from the border's median colour)
        border = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], dim=2)
        bgc = border.median(dim=2).values[:, :, None, None]
        w = 1.0 + a.obj_weight * ((x - bgc).abs().amax(1, keepdim=True) > 0.1).float()
        l_rec = (w * ((rec - x) ** 2 + 0.5 * (rec - x).abs())).mean()
        l_kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = l_rec + a.kl * l_kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        ema.update(vae, step)
        acc.append((loss.item(), l_rec.item(), l_kl.item()))
        if step % a.log_every == 0 or step == a.steps:
            m = np.mean(acc, axis=0)
            el = timer()
            sps = (el - t_last) / len(acc)
            t_last, acc = el, []
            log.write({"step": step, "loss": f"{m[0]:.5f}", "rec": f"{m[1]:.5f}", "kl": f"{m[2]:.4f}", "lr": lr,
                       "sec_per_step": f"{sps:.3f}", "elapsed": f"{el:.0f}"})
            print(f"step {step} loss {m[0]:.4f} rec {m[1]:.4f} kl {m[2]:.3f} {sps:.3f}s/step", flush=True)
        if step % a.ckpt_every == 0:
            save()
    scale = save()
    # report reconstruction quality with EMA weights
    with torch.no_grad():
        x = to_pixels(allpx[-256:], G)
        mu, _ = ema.model.encode(x)
        rec = ema.model.decode(mu).clamp(-1, 1)
        err = ((rec - x).abs() * 127.5).mean().item()
    print(f"done: step {step}, latent scale {scale:.4f}, EMA recon mean abs err {err:.2f}/255", flush=True)


if __name__ == "__main__":
    main()
