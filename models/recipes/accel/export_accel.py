#!/usr/bin/env python3
"""Exports draft.onnx, denoise_6nfe.onnx and denoise_1nfe.onnx INTO an existing pack (opset 17), adds their
manifest entries (same format as export_pack) and, with --parity, PyTorch references in PACK/parity/.

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/accel/export_accel.py --target runs/unified/unified.ckpt \
      --pack models/shapes-mot --draft runs/draft/full --six runs/gen/dmdo/ckpt.pt --one runs/gen/refl/ckpt.pt
Any of --draft/--six/--one may be left out (that graph is then not written)."""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from accel.common import SERVE_ONE_TEXT_SCALE, SERVE_SIX_SHIFT, target_from_args, grid, torch  # noqa: E402
from accel.draft import Draft, DraftConfig  # noqa: E402
from accel.gen import student_from  # noqa: E402
from hyperbagel import export as ex  # noqa: E402
from hyperbagel.utils import require_ckpt  # noqa: E402

nn = torch.nn
DRAFT_CHAIN_STEPS = 10


class DraftGraph(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.d = d

    def forward(self, inputs_embeds, hidden_states, prev_features, feature_select, position_ids, attention_mask,
                *past_flat):
        n = self.d.n_layers
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(n)]
        logits, feats, presents = self.d.step(inputs_embeds, hidden_states, prev_features, feature_select,
                                              position_ids, attention_mask, past)
        out = [logits, feats]
        for k, v in presents:
            out += [k, v]
        return tuple(out)


class DistilledGraph(nn.Module):
    """The distilled generation expert: denoiser.onnx's I/O plus cfg_text_scale [B] and cfg_image_scale [B]."""

    def __init__(self, s):
        super().__init__()
        self.s = s

    def forward(self, latent_tokens, timestep, cfg_text_scale, cfg_image_scale, position_ids, attention_mask,
                *past_flat):
        m = self.s.m
        L = m.c.layers
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(L)]
        x = self.s.latent_in(latent_tokens, timestep, cfg_text_scale, cfg_image_scale)
        x, presents, _ = m.expert_forward("gen", x, position_ids, attention_mask, past)
        out = [m.llm2vae(m.norm_gen(x))]
        for k, v in presents:
            out += [k, v]
        return tuple(out)


def specs(c, n_draft):
    D, H, Dh, L, V = c.hidden, c.heads, c.head_dim, c.layers, c.vocab
    f, i64 = "float32", "int64"
    past = {n: {"dtype": f, "shape": ["batch", H, "past", Dh]} for n in ex._kv_names(n_draft, "past_key_values")}
    pres = {n: {"dtype": f, "shape": ["batch", H, "past+seq", Dh]} for n in ex._kv_names(n_draft, "present")}
    base = ex.graph_specs(c)["denoiser"]
    den_in = {}
    for k, v in base["inputs"].items():
        den_in[k] = v
        if k == "timestep":
            den_in["cfg_text_scale"] = {"dtype": f, "shape": ["batch"]}
            den_in["cfg_image_scale"] = {"dtype": f, "shape": ["batch"]}
    return {
        "draft": {"file": "draft.onnx",
                  "inputs": {"inputs_embeds": {"dtype": f, "shape": ["batch", "seq", D]},
                             "hidden_states": {"dtype": f, "shape": ["batch", "seq", L, D]},
                             "prev_features": {"dtype": f, "shape": ["batch", "seq", D]},
                             "feature_select": {"dtype": f, "shape": ["batch", "seq"]},
                             "position_ids": {"dtype": i64, "shape": ["batch", "seq"]},
                             "attention_mask": {"dtype": f, "shape": ["batch", 1, "seq", "past+seq"]}, **past},
                  "outputs": {"logits": {"dtype": f, "shape": ["batch", "seq", V]},
                              "features": {"dtype": f, "shape": ["batch", "seq", D]}, **pres}},
        "denoise_6nfe": {"file": "denoise_6nfe.onnx", "inputs": den_in, "outputs": base["outputs"]},
        "denoise_1nfe": {"file": "denoise_1nfe.onnx", "inputs": den_in, "outputs": base["outputs"]},
    }


def _draft_dummy(c, n, B=2, T=3, P=4):
    g = torch.Generator().manual_seed(0)
    D, L = c.hidden, c.layers
    past = [torch.randn(B, c.heads, P, c.head_dim, generator=g) for _ in range(2 * n)]
    return (torch.randn(B, T, D, generator=g), torch.randn(B, T, L, D, generator=g), torch.randn(B, T, D, generator=g),
            torch.tensor([[0.0, 1.0, 1.0]] * B), torch.arange(P, P + T).expand(B, T).contiguous(),
            ex.causal_mask(T, P, B), *past)


def _den_dummy(c, B=2, P=4):
    g = torch.Generator().manual_seed(0)
    N, td = c.latent_grid ** 2, c.latent_token_dim
    past = [torch.randn(B, c.heads, P, c.head_dim, generator=g) for _ in range(2 * c.layers)]
    return (torch.randn(B, N, td, generator=g), torch.rand(B, generator=g), 1 + 4 * torch.rand(B, generator=g),
            1 + 1.5 * torch.rand(B, generator=g), torch.full((B, N), P, dtype=torch.long), torch.zeros(B, 1, N, P + N),
            *past)


def _export(mod, args, path, spec):
    with torch.no_grad():
        torch.onnx.export(mod, args, path, opset_version=ex.OPSET, input_names=list(spec["inputs"]),
                          output_names=list(spec["outputs"]), dynamic_axes=ex._dyn_axes(spec), do_constant_folding=True)


TEXT_RANGE, IMAGE_RANGE = (1.0, 5.0), (1.0, 2.5)  # the scales CFG distillation sampled (U[1,5], U[1,2.5])


class PackMismatch(SystemExit):
    """The pack cannot take graphs of this target (missing, unreadable, or another architecture)."""


def read_pack_manifest(pack):
    man_path = os.path.join(pack, "manifest.json")
    if not os.path.isfile(man_path):
        raise PackMismatch(f"--pack {pack!r}: no manifest.json there (export the base pack first: export_pack.py)")
    try:
        with open(man_path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise PackMismatch(f"--pack {pack!r}: cannot read manifest.json ({e})")


def check_pack_matches(pack, c, man=None):
    """Refuses (PackMismatch, one line) a pack whose decoder / latent / training config is not the target's:
    graphs of another target would load in the engine and fail (or be wrong) only at inference."""
    man = man if man is not None else read_pack_manifest(pack)
    want = c.to_dict()
    diffs = []
    dec = man.get("decoder") or {}
    seen = set()
    for k in ("layers", "heads", "head_dim", "hidden", "vocab", "max_positions"):
        if k in dec and dec[k] != want[k]:
            diffs.append(f"decoder.{k} {dec[k]} (target {want[k]})")
            seen.add(k)
    lat = man.get("latent") or {}
    for mk, ck in (("image_size", "gen_image_size"), ("channels", "latent_channels"), ("patch", "latent_patch")):
        if mk in lat and lat[mk] != want[ck]:
            diffs.append(f"latent.{mk} {lat[mk]} (target {want[ck]})")
    tr = man.get("training")
    cfg = tr.get("config") if isinstance(tr, dict) else None
    if isinstance(cfg, dict):
        for k in sorted(set(cfg) & set(want)):
            if cfg[k] != want[k] and k not in seen:
                diffs.append(f"training.config.{k} {cfg[k]!r} (target {want[k]!r})")
    if "graphs" not in man:
        diffs.append("no 'graphs' entry")
    if diffs:
        raise PackMismatch(f"--pack {pack!r} was not exported from this --target (or another architecture): "
                           + "; ".join(diffs) + ". Export into a pack made from the same target (export_pack.py --ckpt TARGET).")
    return man


def export_into(pack, c, draft=None, six=None, one=None, parity=False, provenance=None, six_shift=1.0, one_text_scale=5.0):
    """Writes the graphs that are given, updates PACK/manifest.json, optional parity references. The 6-NFE
    sampler serves on grid(6, six_shift); the 1-NFE grid is [1, 0] whatever the shift. Refuses (before writing
    anything) a pack exported from a target of another architecture (check_pack_matches). Every graph and
    parity file is written under a temporary name first and renamed into place only once all of them (and the
    manifest's text) were made, the manifest last: an export that fails or is interrupted leaves the pack as
    it was (graphs that match its manifest), and no temporary files."""
    n_draft = draft.n_layers if draft is not None else 0
    sp = specs(c, max(1, n_draft))
    man_path = os.path.join(pack, "manifest.json")
    man = check_pack_matches(pack, c)
    written = {}
    staged = []  # (temporary path, final path), renamed in this order once everything is written

    def stage(final):
        tmp = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.tmp-{os.getpid()}")
        staged.append((tmp, final))
        return tmp

    try:
        if draft is not None:
            draft.eval()
            _export(DraftGraph(draft), _draft_dummy(c, n_draft), stage(os.path.join(pack, "draft.onnx")), sp["draft"])
            written["draft"] = sp["draft"]
            man["draft"] = {"layers": n_draft, "heads": c.heads, "head_dim": c.head_dim, "hidden": c.hidden,
                            "variant": draft.dc.variant, "feature_layers": draft.feat_idx, "dec_skip_layer": draft.depth,
                            "meta_queries": draft.dc.meta_queries if draft.dc.use_ca else 0,
                            "ttt_steps": draft.dc.ttt_steps, "chain_steps": DRAFT_CHAIN_STEPS,
                            "row_convention": "row i: target hidden_states of row i + inputs_embeds of row i+1; "
                                              "predicts the token of row i+2"}
        dist = man.get("distilled", {})
        for key, s, nfe in (("denoise_6nfe", six, 6), ("denoise_1nfe", one, 1)):
            if s is None:
                continue
            s.eval()
            shift = six_shift if nfe == 6 else 1.0
            _export(DistilledGraph(s), _den_dummy(c), stage(os.path.join(pack, sp[key]["file"])), sp[key])
            written[key] = sp[key]
            dist[key] = {"nfe": nfe, "shift": shift, "timesteps": [float(t) for t in grid(nfe, shift)],
                         "cfg_text_scale": one_text_scale if nfe == 1 else 4.0, "cfg_image_scale": 1.5,
                         "cfg_text_range": list(TEXT_RANGE), "cfg_image_range": list(IMAGE_RANGE), "contexts": 1}
        if dist:
            man["distilled"] = dist
        man["graphs"].update(written)
        if provenance:
            man.setdefault("training", {})
            if isinstance(man["training"], dict):
                # merge: graphs exported by earlier calls keep their provenance
                man["training"]["acceleration"] = {**(man["training"].get("acceleration") or {}), **provenance}
        if parity:
            write_parity(pack, c, draft, six, one, sp, stage=stage)
        # the whole text first (NaN/Infinity are not JSON: the engine could not load them), then swapped in whole
        text = json.dumps(man, indent=2, allow_nan=False)
        with open(stage(man_path), "w") as f:
            f.write(text)
        for tmp, final in staged:  # every graph and reference, then the manifest
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.remove(tmp)
    return written


def write_parity(pack, c, draft, six, one, sp, seed=4321, stage=None):
    """PyTorch references in PACK/parity/; `stage(path)` names the temporary file to write `path` under
    (export_into renames them into place)."""
    pdir = os.path.join(pack, "parity")
    os.makedirs(pdir, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    D, L, H, Dh = c.hidden, c.layers, c.heads, c.head_dim

    def run(key, mod, inputs, fname):
        outs = ex.exact_outputs(mod, inputs)
        j = {"graph": key, "inputs": {k: ex._t(v) for k, v in zip(sp[key]["inputs"], inputs)},
             "outputs": {k: ex._t(v) for k, v in zip(sp[key]["outputs"], outs)}}
        path = os.path.join(pdir, fname)
        with open(stage(path) if stage else path, "w") as f:
            json.dump(j, f)
        return outs

    if draft is not None:
        n = draft.n_layers
        dg = DraftGraph(draft.eval())
        T = 5
        empty = [torch.zeros(1, H, 0, Dh) for _ in range(2 * n)]
        outs = run("draft", dg, (torch.randn(1, T, D, generator=g), torch.randn(1, T, L, D, generator=g),
                                 torch.zeros(1, T, D), torch.zeros(1, T), torch.arange(T).unsqueeze(0),
                                 ex.causal_mask(T), *empty), "draft_prefill.json")
        past = list(outs[2:2 + 2 * n])
        feat = outs[1][:, -1:]
        run("draft", dg, (torch.randn(1, 1, D, generator=g), torch.zeros(1, 1, L, D), feat, torch.ones(1, 1),
                          torch.tensor([[T]]), torch.zeros(1, 1, 1, T + 1), *past), "draft_step.json")
    N, td = c.latent_grid ** 2, c.latent_token_dim
    P = 4
    for key, s, fname in (("denoise_6nfe", six, "denoise_6nfe.json"), ("denoise_1nfe", one, "denoise_1nfe.json")):
        if s is None:
            continue
        past = [torch.randn(2, H, P, Dh, generator=g) for _ in range(2 * L)]
        run(key, DistilledGraph(s.eval()), (torch.randn(2, N, td, generator=g), torch.tensor([1.0, 0.45]),
                                            torch.tensor([4.0, 2.5]), torch.tensor([1.5, 1.0]),
                                            torch.full((2, N), P, dtype=torch.long), torch.zeros(2, 1, N, P + N),
                                            *past), fname)


def load_draft_run(m, run, what="--draft"):
    path = os.path.join(run, "draft.ckpt")
    ck = require_ckpt(path, what, ("model", "dc", "step"))
    d = Draft(m, DraftConfig(**ck["dc"]))
    try:
        d.load_state_dict(ck["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[1:2] or [str(e)[:200]]
        raise SystemExit(f"{what}: {path!r} does not fit this --target (trained on another architecture?): {first[0].strip()}")
    return d.eval(), ck["step"]


def load_student_ckpt(m, path, what="student"):
    # student_from checks that the generation path fits (students may come from a target whose
    # understanding side differs; see gen.student_from)
    ck = require_ckpt(path, what, ("student", "step"))
    return student_from(m, ck["student"], f"{what} {path}").eval(), ck.get("stage"), ck["step"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--pack", required=True)
    ap.add_argument("--draft", default=None, help="train_draft run folder")
    ap.add_argument("--six", default=None, help="6-NFE student ckpt.pt (after dmdo)")
    ap.add_argument("--one", default=None, help="1-NFE student ckpt.pt (after refl)")
    ap.add_argument("--six-shift", type=float, default=SERVE_SIX_SHIFT,
                    help="the 6-NFE sampler's serving grid, grid(6, shift), written to the manifest: session 14 measured "
                         "the uniform grid (1) above BAGEL's shift 3 for the shipped student (docs/results.md)")
    ap.add_argument("--one-text-scale", type=float, default=SERVE_ONE_TEXT_SCALE,
                    help="the 1-NFE graph's default text-guidance scale (manifest distilled.denoise_1nfe.cfg_text_scale), "
                         "within the distilled range [1, 5]: session 18 measured 5 above 4 for the shipped student, so a "
                         "re-export keeps the shipped setting unless told otherwise")
    ap.add_argument("--parity", action="store_true")
    a = ap.parse_args()
    if not TEXT_RANGE[0] <= a.one_text_scale <= TEXT_RANGE[1]:
        sys.exit(f"--one-text-scale {a.one_text_scale}: outside the distilled range {list(TEXT_RANGE)}")
    if not (math.isfinite(a.six_shift) and a.six_shift > 0):
        sys.exit(f"--six-shift {a.six_shift}: a timestep shift is a finite number > 0")
    read_pack_manifest(a.pack)  # a missing pack: say so before loading anything
    m, tok, _, _ = target_from_args(a)
    check_pack_matches(a.pack, m.c)  # before the (slow) student / draft loading and before writing anything
    prov = {}
    d = six = one = None
    if a.draft:
        d, st = load_draft_run(m, a.draft)
        prov["draft"] = {"run": a.draft, "variant": d.dc.variant, "steps": st}
    if a.six:
        six, stage, st = load_student_ckpt(m, a.six, "--six")
        prov["denoise_6nfe"] = {"ckpt": a.six, "stage": stage, "steps": st}
    if a.one:
        one, stage, st = load_student_ckpt(m, a.one, "--one")
        prov["denoise_1nfe"] = {"ckpt": a.one, "stage": stage, "steps": st}
    w = export_into(a.pack, m.c, d, six, one, a.parity, prov, six_shift=a.six_shift, one_text_scale=a.one_text_scale)
    print(f"exported {sorted(w)} into {a.pack}", flush=True)


if __name__ == "__main__":
    main()
