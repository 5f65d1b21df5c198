"""Training utilities: threads, seeding, atomic checkpoints, CSV loss logs, EMA."""
import copy
import csv
import os
import random
import time

import numpy as np
import torch


def setup_threads():
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")
    torch.set_num_threads(1)


def seed_all(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_ckpt(path, obj):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def torch_load(path):
    """torch.load onto the CPU; our checkpoints hold plain dicts (config, rng state), which newer torch
    (weights_only=True by default since 2.6) refuses unless told otherwise."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except TypeError:  # a torch without the weights_only argument
        return torch.load(path, map_location="cpu")


def load_ckpt(path, what=None, keys=()):
    """A checkpoint that may not exist yet (None), e.g. the one a run resumes from. `what`: name it in the one-line
    error when it exists but cannot be read or lacks `keys` (a corrupt file, another kind's checkpoint)."""
    if not os.path.exists(path):
        return None
    if what is None:
        return torch_load(path)
    return require_ckpt(path, what, keys)


def require_ckpt(path, what, keys):
    """Load the checkpoint a user named: exits with one clear line when it is missing, unreadable or not
    the kind asked for (`keys`: entries that kind always has), instead of a traceback later."""
    if not path or not os.path.isfile(path):
        raise SystemExit(f"{what}: no checkpoint at {path!r}")
    try:
        ck = torch_load(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input error here
        raise SystemExit(f"{what}: cannot read {path!r} ({type(e).__name__}: {e})")
    missing = [k for k in keys if not isinstance(ck, dict) or k not in ck]
    if missing:
        have = ", ".join(sorted(ck)) if isinstance(ck, dict) else type(ck).__name__
        raise SystemExit(f"{what}: {path!r} is not the kind of checkpoint expected here (it lacks {', '.join(missing)}; it has {have})")
    return ck


def positive_int(text):
    """argparse type: an integer >= 1."""
    return _checked_number(text, int, lambda v: v >= 1, "an integer >= 1")


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    return _checked_number(text, int, lambda v: v >= 0, "an integer >= 0")


def positive_float(text):
    """argparse type: a finite number > 0."""
    return _checked_number(text, float, lambda v: v > 0 and v != float("inf"), "a finite number > 0")


def non_negative_float(text):
    """argparse type: a finite number >= 0."""
    return _checked_number(text, float, lambda v: 0.0 <= v < float("inf"), "a finite number >= 0")


def fraction(text):
    """argparse type: a probability or decay, a number in [0, 1]."""
    return _checked_number(text, float, lambda v: 0.0 <= v <= 1.0, "a number in [0, 1]")


def pixel_offset(text):
    """argparse type: "DX,DY", two integers (a move in pixels, right and down when positive)."""
    import argparse
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DX,DY (two integers, e.g. 2,2), got {text!r}")


def _checked_number(text, kind, ok, what):
    import argparse
    try:
        v = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    if not ok(v):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v


LITE_KEYS = ("ema", "step", "config", "think_samples", "followup_samples", "session_context", "understand_offset", "scale")


def lite_ckpt(ck):
    """A unified checkpoint without the optimizer and the training weights (train_unified --init-weights reads it)."""
    return {k: ck[k] for k in LITE_KEYS if k in ck}


class CsvLog:
    """Appends rows to a CSV loss log. `resume_step`: the step of the checkpoint a run resumes from; rows
    logged after it (by the run that was stopped before its next checkpoint) are dropped, so a resumed
    run's log has each step once. 0 (a fresh run) starts a new log: one left by a run whose checkpoint was
    deleted belongs to that run (its columns too)."""

    def __init__(self, path, fields, resume_step=None):
        self.path, self.fields = path, fields
        if resume_step == 0 and os.path.exists(path):
            os.remove(path)
        elif resume_step is not None and os.path.exists(path):
            truncate_log(path, resume_step)
        new = not os.path.exists(path)
        self.f = open(path, "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=fields)
        if new:
            self.w.writeheader()

    def write(self, row):
        self.w.writerow({k: row.get(k, "") for k in self.fields})
        self.f.flush()


def truncate_log(path, step):
    """Drop the rows of a CSV log whose `step` is after `step` (atomically; rows without a step stay)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    head, body = rows[0], rows[1:]
    if "step" not in head:
        return
    i = head.index("step")

    def keep(r):
        try:
            return float(r[i]) <= step
        except (IndexError, ValueError):
            return True
    kept = [r for r in body if keep(r)]
    if len(kept) == len(body):
        return
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerows([head] + kept)
    os.replace(tmp, path)


class EMA:
    def __init__(self, model, decay):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model, step):
        d = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.parameters(), model.parameters()):
            if p.requires_grad:  # a frozen weight keeps its exact value (d·w + (1−d)·w can round)
                e.mul_(d).add_(p.detach(), alpha=1 - d)


class Timer:
    def __init__(self):
        self.t0 = time.time()

    def __call__(self):
        return time.time() - self.t0
