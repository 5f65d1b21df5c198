#!/usr/bin/env python3
"""Rebuilds training checkpoints from a model pack's ONNX graphs, so training can go on from a release when
the run folder that produced it is gone (runs/ is never committed; the pack is).

  OPENBLAS_NUM_THREADS=2 /usr/bin/python3 models/recipes/import_pack.py --pack models/shapes-mot --out runs/r6

writes OUT/unified.ckpt (EMA weights, step, config: what train_unified --init-weights, export_pack and the
acceleration recipes' --target read) with OUT/tokenizer.json, OUT/vae.ckpt (train_unified --vae,
export_pack --vae), and, where the pack has them, OUT/six.pt and OUT/one.pt (the distilled students, as
train_gen --init / --teacher6 and export_accel --six / --one read them) and OUT/draft/draft.ckpt (the
speculative draft: export_accel --draft, eval_draft). The optimizer state is not in a
pack: training resumes from these with a fresh optimizer (train_unified re-warms its learning rate).

How weights are found: each graph is exported again from a module whose every parameter holds distinct
random values; an initializer of that probe export equal to a parameter (or to its transpose: torch.onnx
stores Linear weights of MatMuls transposed) names the pack initializer at the same place. Anything the
probe cannot place (a parameter folded into an expression, an initializer that is neither a parameter nor
the same constant in both exports, a name or shape mismatch) is an error, never a silent guess. The result
is checked by exporting the recovered modules again: every initializer must equal the pack's bit for bit.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyperbagel.utils import setup_threads, save_ckpt  # noqa: E402
from hyperbagel.ckpts import refuse_overwrite  # noqa: E402

setup_threads()
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402
import torch  # noqa: E402

from hyperbagel.config import ModelConfig, DEFAULT  # noqa: E402
from hyperbagel.model import Unified, VAE  # noqa: E402
from hyperbagel import export as ex  # noqa: E402
from accel.export_accel import _export as export_graph  # noqa: E402  (the exporters' own call: same options)


class PackMismatch(Exception):
    """The pack's graphs do not fit the recipes' modules (wrong config, or a graph this script cannot invert)."""


def onnx_weights(path):
    """Initializers by name, plus the names torch.onnx gives to deduplicated ones: an initializer equal to an
    earlier one is exported as Identity(earlier) (e.g. two zero-initialised biases that stayed equal)."""
    m = onnx.load(path)
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    for n in m.graph.node:
        if n.op_type == "Identity" and n.input[0] in w:
            w[n.output[0]] = w[n.input[0]]
    return w


def _key(a):
    a = np.ascontiguousarray(a)
    return (a.dtype.str, a.shape, a.tobytes())


def _fill_distinct(params, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params.values():
            p.copy_(torch.randn(p.shape, generator=g))


def recover_graph(mod, dummy, spec, params, pack_path, seed=0):
    """-> {param name: np.ndarray} read from the pack graph at pack_path. `params` are the parameters of
    `mod` that the graph may hold (name -> Parameter); `mod` is left holding random values."""
    _fill_distinct(params, seed)
    index = {}
    for n, p in params.items():
        a = p.detach().numpy()
        index[_key(a)] = (n, False)
        if a.ndim == 2:
            index.setdefault(_key(a.T), (n, True))
    with tempfile.TemporaryDirectory() as tmp:
        probe_path = os.path.join(tmp, "probe.onnx")
        export_graph(mod.eval(), dummy, probe_path, spec)
        probe = onnx_weights(probe_path)
    packw = onnx_weights(pack_path)
    name = os.path.basename(pack_path)
    if set(probe) != set(packw):
        raise PackMismatch(f"{name}: initializers differ from this config's export "
                           f"(only in pack: {sorted(set(packw) - set(probe))[:5]}, only in export: "
                           f"{sorted(set(probe) - set(packw))[:5]})")
    out = {}
    for iname, a in probe.items():
        if packw[iname].shape != a.shape:
            raise PackMismatch(f"{name}: initializer {iname} has shape {packw[iname].shape}, this config {a.shape}")
        hit = index.get(_key(a))
        if hit is None:
            # a constant (rotary tables, masks): must be the same in both exports, else it depends on weights
            if not np.array_equal(a, packw[iname]):
                raise PackMismatch(f"{name}: initializer {iname} is a folded expression of parameters; "
                                   "it cannot be inverted")
            continue
        pname, transposed = hit
        val = packw[iname].T if transposed else packw[iname]
        if pname in out and not np.array_equal(out[pname], val):
            raise PackMismatch(f"{name}: parameter {pname} appears twice with different values")
        out[pname] = np.ascontiguousarray(val)
    return out


def strip(d, prefix):
    return {k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)}


def config_candidates(man):
    """ModelConfig candidates for a pack: manifest.training.config when the exporter recorded it, else the
    manifest's sizes over DEFAULT with each vision-input variant the recipes have used."""
    rec = (man.get("training") or {}).get("config") if isinstance(man.get("training"), dict) else None
    if rec:
        return [ModelConfig.from_dict(rec)]
    d, lat = man["decoder"], man["latent"]
    base = DEFAULT.to_dict()
    base.update({k: d[k] for k in ("layers", "heads", "head_dim", "hidden", "vocab", "max_positions")})
    base.update({"vit_image_size": man["vision"]["image_size"], "gen_image_size": lat["image_size"],
                 "latent_channels": lat["channels"], "latent_patch": lat["patch"]})
    out = []
    for vit_input in ("rgb", "rgb+mask", "mask"):
        for vit_colour in (False, True):
            out.append(ModelConfig.from_dict({**base, "vit_input": vit_input, "vit_colour": vit_colour}))
    return out


def recover_unified(pack, man):
    """-> (model with the pack's weights, config, vae, scale). Tries the config candidates in turn."""
    specs_pack = man["graphs"]
    errors = []
    for c in config_candidates(man):
        try:
            model = Unified(c)
            vae = VAE(c)
            scale = float(man["latent"]["scale"])
            mods = ex.graph_modules(model, vae, scale)
            specs = ex.graph_specs(c)
            got_m, got_v = {}, {}
            mparams = dict(model.named_parameters())
            vparams = dict(vae.named_parameters())
            for gname in ("vision", "embed", "decoder", "denoiser"):
                pk = {f"m.{k}": p for k, p in mparams.items()}
                r = recover_graph(mods[gname], ex._dummy(c, gname), specs[gname], pk,
                                  os.path.join(pack, specs_pack[gname]["file"]))
                for k, v in strip(r, "m.").items():
                    if k in got_m and not np.array_equal(got_m[k], v):
                        raise PackMismatch(f"parameter {k} differs between graphs")
                    got_m[k] = v
            for gname in ("vae_encoder", "vae_decoder"):
                pk = {f"vae.{k}": p for k, p in vparams.items()}
                r = recover_graph(mods[gname], ex._dummy(c, gname), specs[gname], pk,
                                  os.path.join(pack, specs_pack[gname]["file"]))
                got_v.update(strip(r, "vae."))
            return finish(model, got_m, "unified"), c, finish(vae, got_v, "vae"), scale
        except PackMismatch as e:
            errors.append(f"vit_input={c.vit_input} vit_colour={c.vit_colour}: {e}")
        except RuntimeError as e:  # a shape mismatch inside the export (e.g. the stem's input channels)
            errors.append(f"vit_input={c.vit_input} vit_colour={c.vit_colour}: {str(e).splitlines()[0]}")
    raise PackMismatch("no config fits the pack:\n  " + "\n  ".join(errors))


def finish(mod, got, what, required=None):
    """Loads recovered weights; every parameter in `required` (default: all) must have been found in some graph."""
    missing = [n for n in (required if required is not None else dict(mod.named_parameters())) if n not in got]
    if missing:
        raise PackMismatch(f"{what}: parameters in no graph of the pack: {missing[:8]}")
    sd = mod.state_dict()
    for n, v in got.items():
        sd[n] = torch.from_numpy(v.copy())
    mod.load_state_dict(sd)
    return mod.eval()


def recover_student(pack, man, target, key):
    """The distilled student in PACK/denoise_{6,1}nfe.onnx as a Student of `target` (generation path from
    the graph, the frozen rest the target's)."""
    from accel.export_accel import DistilledGraph, specs as accel_specs, _den_dummy
    from accel.gen import Student, is_gen_param
    s = Student(target)
    c = target.c
    sp = accel_specs(c, 1)[key]
    # only the generation path is in the graph (and only it is filled with probe values); the rest stays the target's
    gen = [n for n, _ in s.named_parameters() if is_gen_param(n)]
    params = dict(s.named_parameters())
    r = recover_graph(DistilledGraph(s), _den_dummy(c), sp, {f"s.{n}": params[n] for n in gen}, os.path.join(pack, sp["file"]))
    return finish(s, strip(r, "s."), key, required=gen)


def recover_draft(pack, man, target):
    """The speculative draft in PACK/draft.onnx, its DraftConfig from manifest.draft (variant, meta queries,
    training-time-test steps)."""
    from accel.draft import Draft, DraftConfig
    from accel.export_accel import DraftGraph, specs as accel_specs, _draft_dummy
    md = man["draft"]
    kw = {"ttt_steps": md["ttt_steps"]}
    if md.get("meta_queries"):
        kw["meta_queries"] = md["meta_queries"]
    d = Draft(target, DraftConfig.of(md["variant"], **kw))
    if d.n_layers != md["layers"]:
        raise PackMismatch(f"draft: variant {md['variant']} has {d.n_layers} layers, the manifest {md['layers']}")
    c = target.c
    sp = accel_specs(c, d.n_layers)["draft"]
    params = {f"d.{n}": p for n, p in d.named_parameters()}
    r = strip(recover_graph(DraftGraph(d), _draft_dummy(c, d.n_layers), sp, params, os.path.join(pack, sp["file"])), "d.")
    return finish(d, r, "draft"), (DraftGraph(d), _draft_dummy(c, d.n_layers), sp)


def verify(pack, mods_specs):
    """Re-exports each recovered module; every initializer must equal the pack's bit for bit."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, (mod, dummy, spec) in mods_specs.items():
            path = os.path.join(tmp, f"{name}.onnx")
            export_graph(mod.eval(), dummy, path, spec)
            a, b = onnx_weights(path), onnx_weights(os.path.join(pack, spec["file"]))
            bad = [k for k in b if k not in a or a[k].shape != b[k].shape or not np.array_equal(a[k], b[k])]
            if bad or set(a) != set(b):
                raise PackMismatch(f"{name}: re-export differs from the pack at {bad[:5]}")


def _tensor(j):
    dt = torch.int64 if j["dtype"] == "int64" else torch.float32
    return torch.tensor(j["data"], dtype=dt).reshape(j["dims"])


def check_parity(pack, modules, tol=1e-4):
    """The pack's parity references (PyTorch outputs of the original weights) recomputed from the recovered
    modules: checks what the weights alone do not pin down (rotary theta, norm eps, the vision inputs).
    -> number of reference files checked."""
    pdir = os.path.join(pack, "parity")
    n = 0
    for fname in sorted(os.listdir(pdir)) if os.path.isdir(pdir) else []:
        j = json.load(open(os.path.join(pdir, fname)))
        mod = modules.get(j["graph"])
        if mod is None:
            continue
        outs = ex.exact_outputs(mod, [_tensor(v) for v in j["inputs"].values()])
        for (name, ref), got in zip(j["outputs"].items(), outs):
            want = _tensor(ref)
            err = float((got.double() - want.double()).abs().max()) if want.numel() else 0.0
            scale = max(1.0, float(want.abs().max())) if want.numel() else 1.0
            if got.shape != want.shape or err > tol * scale:
                raise PackMismatch(f"parity {fname}: output {name} differs by {err:.3g}")
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", default="models/shapes-mot")
    ap.add_argument("--out", required=True)
    ap.add_argument("--force", action="store_true", help="replace checkpoints a training run already keeps in --out")
    a = ap.parse_args()
    if os.path.realpath(a.out) == os.path.realpath(a.pack):
        sys.exit(f"--out {a.out!r} is the pack itself: give a folder for the training checkpoints (e.g. runs/r8)")
    if os.path.exists(a.out) and not os.path.isdir(a.out):
        sys.exit(f"--out {a.out!r} is a file: give a folder")
    if not a.force:
        for f in ("unified.ckpt", "vae.ckpt"):
            p = os.path.join(a.out, f)
            if os.path.isfile(p):
                refuse_overwrite(p, f"--out: {f}", instead="write elsewhere (or --force)")
    man_path = os.path.join(a.pack, "manifest.json")
    if not os.path.exists(man_path):
        sys.exit(f"--pack: no manifest.json in {a.pack}")
    man = json.load(open(man_path))
    training = man.get("training") if isinstance(man.get("training"), dict) else {}
    try:
        model, c, vae, scale = recover_unified(a.pack, man)
        mods = ex.graph_modules(model, vae, scale)
        specs = ex.graph_specs(c)
        check = {g: (mods[g], ex._dummy(c, g), specs[g]) for g in specs}
        students = {}
        from accel.export_accel import DistilledGraph, specs as accel_specs, _den_dummy
        for key, fname in (("denoise_6nfe", "six.pt"), ("denoise_1nfe", "one.pt")):
            if key in man["graphs"]:
                s = recover_student(a.pack, man, model, key)
                students[fname] = (key, s)
                check[key] = (DistilledGraph(s), _den_dummy(c), accel_specs(c, 1)[key])
        draft = None
        if "draft" in man["graphs"] and "draft" in man:
            draft, check["draft"] = recover_draft(a.pack, man, model)
        verify(a.pack, check)
        checked = check_parity(a.pack, {g: m for g, (m, _, _) in check.items()})
    except PackMismatch as e:
        sys.exit(f"import_pack: {e}")
    os.makedirs(a.out, exist_ok=True)
    out = os.path.abspath(a.out)
    vae_path = os.path.join(out, "vae.ckpt")
    save_ckpt(vae_path, {"ema": vae.state_dict(), "config": c.to_dict(), "scale": scale,
                "step": training.get("vae_steps", 0), "imported_from": os.path.abspath(a.pack)})
    step = int(training.get("unified_steps", 0))
    think = 1 if (man.get("prompts") or {}).get("think") else 0
    # what the pack declares (absent: the engine's default, conversation): a re-export declares the same
    session_context = (man.get("prompts") or {}).get("session_context", "conversation")
    # and how its understanding reads images: a re-export of these weights keeps the offset chosen for them
    offset = (man.get("vision") or {}).get("understand_offset")
    if offset is not None and not (isinstance(offset, list) and len(offset) == 2 and all(type(v) is int for v in offset)):
        sys.exit(f"import_pack: {a.pack}/manifest.json vision.understand_offset: expected [dx, dy], two integers, got {offset!r}")
    save_ckpt(os.path.join(out, "unified.ckpt"), {"ema": model.state_dict(), "step": step, "config": c.to_dict(), "think_samples": think,
                "session_context": session_context, **({"understand_offset": list(offset)} if offset else {}),
                "vae": vae_path, "scale": scale, "imported_from": os.path.abspath(a.pack)})
    shutil.copy(os.path.join(a.pack, man.get("tokenizer", "tokenizer.json")), os.path.join(out, "tokenizer.json"))
    acc = training.get("acceleration") or {}
    for fname, (key, s) in students.items():
        prov = acc.get(key) or {}
        save_ckpt(os.path.join(out, fname), {"student": s.state_dict(), "stage": prov.get("stage", "imported"), "step": prov.get("steps", 0),
                    "imported_from": os.path.abspath(a.pack)})
    if draft is not None:
        os.makedirs(os.path.join(out, "draft"), exist_ok=True)
        prov = acc.get("draft") or {}
        save_ckpt(os.path.join(out, "draft", "draft.ckpt"), {"model": draft.state_dict(), "step": prov.get("steps", 0), "variant": draft.dc.variant,
                    "dc": draft.dc.to_dict(), "config": c.to_dict(), "target": os.path.join(out, "unified.ckpt"),
                    "imported_from": os.path.abspath(a.pack)})
    print(json.dumps({"out": out, "unified_steps": step, "config": {"vit_input": c.vit_input, "vit_colour": c.vit_colour},
                      "students": sorted(students), "draft": draft is not None, "verified": f"bitwise re-export, {checked} parity references"}), flush=True)


if __name__ == "__main__":
    main()
