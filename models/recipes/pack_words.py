#!/usr/bin/env python3
"""Writes a pack's word handling from its training data, without re-exporting its graphs: the tokenizer.json
normalizer (hyperbagel.tokenizer.FOLDS: forms users write that the training text never does, folded onto the
ones it does), the manifest's `untrained_words` (vocabulary words no training text uses; the engine refuses
prompts holding them) and, for a pack that thinks, `prompts.think_prefix` (the words its think prompts began with). export_pack.py writes both itself; this brings an already exported pack up to date.

  /usr/bin/python3 models/recipes/pack_words.py --pack models/shapes-mot --data data/train"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hyperbagel.tokenizer import WordTokenizer, untrained_words  # noqa: E402
from hyperbagel.data import CAPTION_PROMPT, record_texts, think_prefix  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pack", required=True, help="pack folder (manifest.json + tokenizer.json)")
    ap.add_argument("--data", required=True, action="append",
                    help="a dataset folder the pack's model was trained on (records.jsonl); repeat for several")
    a = ap.parse_args()
    man_path = os.path.join(a.pack, "manifest.json")
    try:
        with open(man_path) as f:
            man = json.load(f)
        tok_path = os.path.join(a.pack, man["tokenizer"])
        tok = WordTokenizer.load(tok_path)
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"--pack: cannot read {a.pack!r} ({type(e).__name__}: {e})")
    texts = [CAPTION_PROMPT]
    for d in a.data:
        if not os.path.isfile(os.path.join(d, "records.jsonl")):
            sys.exit(f"--data: no records.jsonl in {d!r} (a dataset folder: `npx hyperbagel dataset --out DIR`)")
        texts.extend(record_texts(d))
    man["untrained_words"] = untrained_words(tok, texts)
    prompts = man.get("prompts") or {}
    if prompts.get("think"):
        prefix = think_prefix(a.data)
        if prefix:
            prompts["think_prefix"] = prefix
        else:
            prompts.pop("think_prefix", None)
    tok.save(tok_path)
    with open(man_path, "w") as f:
        json.dump(man, f, indent=2)
        f.write("\n")
    print(json.dumps({"pack": a.pack, "untrained_words": man["untrained_words"], "think_prefix": prompts.get("think_prefix"), "texts": len(texts)}))


if __name__ == "__main__":
    main()
