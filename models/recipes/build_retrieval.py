#!/usr/bin/python3
"""Build the retrieval datastore of a pack (retrieval.json) for retrieval-based speculative decoding
(REST, He et al. 2023) from the training records: every answer the model is trained to give, as the
token sequence it sees,

    <question words> <|im_start|> <answer words> <eos>

(the caption prompt for captions, the question for VQA answers, and, for packs that think, each short
prompt for the scene description it expands to), is cut into n-grams of up to
--max-n context tokens, and the table keeps, for every context n-gram, the counts of the tokens that
follow it. Context n-grams end anywhere from the question to the last answer word, so the proposer
matches the prompt's tail (question + im_start) before the first answer token and the answer so far
after it. Deterministic: records are read in file order, the table is sorted.

Usage: /usr/bin/python3 models/recipes/build_retrieval.py [--records data/train/records.jsonl]
       [--pack models/shapes-mot] [--max-n 6] [--out retrieval.json]
Writes PACK/OUT and adds "retrieval": OUT to PACK/manifest.json (no other manifest change).
"""
import argparse
import collections
import json
import os
import sys

CAPTION_PROMPT = "describe the image"  # hyperbagel/data.py CAPTION_PROMPT; the manifest's prompts.caption wins


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", default="data/train/records.jsonl")
    ap.add_argument("--pack", default="models/shapes-mot")
    ap.add_argument("--max-n", type=int, default=6)
    ap.add_argument("--out", default="retrieval.json")
    ap.add_argument("--no-manifest", action="store_true", help="do not add the key to manifest.json")
    a = ap.parse_args()
    if a.max_n < 1:
        sys.exit(f"--max-n {a.max_n}: at least 1 context token")
    if not os.path.isfile(a.records):
        sys.exit(f"--records {a.records!r}: no such file (a dataset's records.jsonl: npx hyperbagel dataset --out DIR)")
    mpath = os.path.join(a.pack, "manifest.json")
    try:
        with open(mpath) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"--pack {a.pack!r}: no readable manifest.json ({e})")
    taken = {g.get("file") for g in (manifest.get("graphs") or {}).values() if isinstance(g, dict)} | {"manifest.json", manifest.get("tokenizer")}
    if os.path.basename(a.out) != a.out or not a.out.endswith(".json") or a.out in taken:
        sys.exit(f"--out {a.out!r}: a new .json file name in the pack (not a path, a graph, the tokenizer or the manifest)")
    with open(os.path.join(a.pack, manifest["tokenizer"])) as f:
        vocab = json.load(f)["model"]["vocab"]
    sp = manifest["special_tokens"]
    im_start, eos = sp["im_start"], sp["eos"]
    caption_prompt = manifest.get("prompts", {}).get("caption", CAPTION_PROMPT)
    think = manifest.get("prompts", {}).get("think") is True

    def enc(text):
        # the pack tokenizer: lowercase, whitespace split, word-level vocabulary
        ids = []
        for w in text.lower().split():
            if w not in vocab:
                raise SystemExit(f"word {w!r} of {text!r} is not in the pack vocabulary")
            ids.append(vocab[w])
        return ids

    # distinct (question, answer) sequences with their counts in the training records
    seqs = collections.Counter()
    with open(a.records) as f:
        for line in f:
            r = json.loads(line)
            seqs[(caption_prompt, r["caption"])] += 1
            if think:  # think mode: short prompt -> the full scene description (hyperbagel/data.py think_seq)
                for p in (r.get("prompts") or [])[1:]:
                    seqs[(p, r["caption"])] += 1
            for q in r.get("qa", []):
                seqs[(q["question"], q["answer"])] += 1

    N = a.max_n
    table = collections.defaultdict(collections.Counter)
    for (q, ans), c in seqs.items():
        s = enc(q) + [im_start] + enc(ans) + [eos]
        first_answer = len(enc(q)) + 1
        # the token at index i is predicted from contexts ending at i-1; only answer tokens are predicted
        for i in range(first_answer, len(s)):
            for n in range(1, N + 1):
                if i - n < 0:
                    break
                table[tuple(s[i - n:i])][s[i]] += c

    entries = []
    for ctx in sorted(table, key=lambda k: (len(k), k)):
        nxt = sorted(table[ctx].items(), key=lambda kv: (-kv[1], kv[0]))
        entries.append([list(ctx), [[t, n] for t, n in nxt]])
    out = {
        "format": "hyperbagel-retrieval/1",
        "vocab": manifest["decoder"]["vocab"],
        "max_n": N,
        "source": {"records": os.path.basename(a.records), "sequences": len(seqs), "occurrences": sum(seqs.values())},
        "entries": entries,
    }
    opath = os.path.join(a.pack, a.out)
    with open(opath, "w") as f:
        json.dump(out, f, separators=(",", ":"))
        f.write("\n")
    if not a.no_manifest and manifest.get("retrieval") != a.out:
        manifest["retrieval"] = a.out
        with open(mpath, "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
    print(f"{opath}: {len(seqs)} distinct sequences, {len(entries)} contexts, {os.path.getsize(opath)} bytes")


if __name__ == "__main__":
    main()
