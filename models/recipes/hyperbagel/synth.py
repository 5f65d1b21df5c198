"""A tiny hand-made dataset in the `npx hyperbagel dataset` format, for the smoke test (no Node needed).
Only circles and squares, recolour edits; the real data comes from the TypeScript world generator."""
import json
import os
import random

import numpy as np

from .sample import PALETTE, CELLS

OBJ = ["red", "green", "blue", "yellow"]
BG = ["white", "black", "gray", "beige"]


def render(scene):
    img = np.zeros((64, 64, 3), np.uint8)
    img[:] = PALETTE[scene["background"]]
    yy, xx = np.mgrid[0:64, 0:64]
    for o in scene["objects"]:
        k = CELLS.index(o["cell"])
        cy, cx = (k // 3) * 21 + 10, (k % 3) * 21 + 10
        r = 8 if o["size"] == "large" else 5
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) if o["shape"] == "circle" else \
            ((abs(yy - cy) <= r) & (abs(xx - cx) <= r))
        img[m] = PALETTE[o["color"]]
    return img


def caption(scene):
    objs = " and ".join(f"a {o['size']} {o['color']} {o['shape']} at the {o['cell']}" for o in scene["objects"])
    return f"{objs} on a {scene['background']} background"


def write(folder, n, seed=0):
    rng = random.Random(seed)
    os.makedirs(folder, exist_ok=True)
    imgs, eds, recs = [], [], []
    for i in range(n):
        cells = rng.sample(CELLS, rng.randint(1, 2))
        objs = [{"shape": rng.choice(["circle", "square"]), "color": rng.choice(OBJ),
                 "size": rng.choice(["small", "large"]), "cell": c} for c in cells]
        scene = {"background": rng.choice(BG), "objects": objs}
        new_color = rng.choice([c for c in OBJ if c != objs[0]["color"]])
        escene = json.loads(json.dumps(scene))
        escene["objects"][0]["color"] = new_color
        qa = [{"kind": "color_of", "question": f"what color is the {objs[0]['shape']}", "answer": objs[0]["color"]},
              {"kind": "where", "question": f"where is the {objs[0]['color']} {objs[0]['shape']}", "answer": objs[0]["cell"]},
              {"kind": "background", "question": "what color is the background", "answer": scene["background"]}]
        recs.append({"index": i, "scene": scene, "caption": caption(scene),
                     "prompts": [caption(scene), f"a photo of a {objs[0]['color']} {objs[0]['shape']}"], "qa": qa,
                     "edit": {"kind": "recolor", "instruction": f"make the {objs[0]['color']} {objs[0]['shape']} {new_color}",
                              "scene": escene, "caption": caption(escene)}})
        imgs.append(render(scene))
        eds.append(render(escene))
    np.save(os.path.join(folder, "images.npy"), np.stack(imgs))
    np.save(os.path.join(folder, "edited.npy"), np.stack(eds))
    with open(os.path.join(folder, "records.jsonl"), "w") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    vocab = sorted({w for r in recs for t in [r["caption"], r["edit"]["instruction"], *r["prompts"],
                                               *[q["question"] + " " + q["answer"] for q in r["qa"]]]
                    for w in t.split()} | {"describe", "the", "image"})
    json.dump({"split": "synthetic", "count": n, "vocabulary": vocab}, open(os.path.join(folder, "meta.json"), "w"))
