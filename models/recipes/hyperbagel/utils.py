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


def load_ckpt(path):
    return torch_load(path) if os.path.exists(path) else None


LITE_KEYS = ("ema", "step", "config", "think_samples", "scale")


def lite_ckpt(ck):
    """A unified checkpoint without the optimizer and the training weights (train_unified --init-weights reads it)."""
    return {k: ck[k] for k in LITE_KEYS if k in ck}


class CsvLog:
    def __init__(self, path, fields):
        self.path, self.fields = path, fields
        new = not os.path.exists(path)
        self.f = open(path, "a", newline="")
        self.w = csv.DictWriter(self.f, fieldnames=fields)
        if new:
            self.w.writeheader()

    def write(self, row):
        self.w.writerow({k: row.get(k, "") for k in self.fields})
        self.f.flush()


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
