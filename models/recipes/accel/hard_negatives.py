"""Hard-negative prompts for the reward model: one-word edits of a true prompt that make it false of the image.

In-batch negatives (other scenes' prompts) differ from the matched prompt in almost every word, so a scorer
trained on them alone learns coarse cues (background, dominant colour) and cannot tell "a red circle and a
blue square" from "a blue circle and a red square". These edits are the distinctions GenEval-style
categories check: attribute binding (swap two colours or two bound shapes), colour, shape, count, direction,
background and size. The word lists are the Shapes world's (src/world/vocabulary.ts)."""
import random

from hyperbagel.vocabulary import BACKGROUNDS, COLORS, SHAPES, SIZES

PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars"}
COUNTS = ["two", "three", "four"]  # GenEval counting prompts ask for 2..4
FLIPS = {"left": "right", "right": "left", "above": "below", "below": "above", "top": "bottom", "bottom": "top"}
# words that bind a shape to something (a colour, a place), so swapping two shapes changes the meaning;
# in "a photo of a star and a square" it would not
BINDERS = set(COLORS) | set(FLIPS) | {"center"}
SINGULAR = {p: s for s, p in PLURALS.items()}
ALL_WORDS = set(COLORS) | set(SHAPES) | set(PLURALS.values()) | set(COUNTS) | set(BACKGROUNDS) | set(SIZES) | set(FLIPS)


def _swap(words, cls, rng):
    idx = [i for i, w in enumerate(words) if w in cls]
    pairs = [(i, j) for a, i in enumerate(idx) for j in idx[a + 1:] if words[i] != words[j]]
    if not pairs:
        return None
    i, j = rng.choice(pairs)
    out = list(words)
    out[i], out[j] = out[j], out[i]
    return out


def _replace(words, cls, rng, known, form=lambda w: w, base=lambda w: w):
    idx = [i for i, w in enumerate(words) if base(w) in cls]
    if not idx:
        return None
    i = rng.choice(idx)
    present = {base(w) for w in words}
    plural = words[i] in SINGULAR
    choices = [c for c in cls if c not in present and (form(c) if plural else c) in known]
    if not choices:
        return None
    out = list(words)
    new = rng.choice(choices)
    out[i] = form(new) if plural else new
    return out


def _flip(words, rng, known):
    idx = [i for i, w in enumerate(words) if w in FLIPS and FLIPS[w] in known]
    if not idx:
        return None
    i = rng.choice(idx)
    out = list(words)
    out[i] = FLIPS[out[i]]
    return out


def _ops(words, known):
    ops = [
        lambda r: _swap(words, set(COLORS), r),
        lambda r: _replace(words, COLORS, r, known),
        lambda r: _replace(words, SHAPES, r, known, form=lambda s: PLURALS[s], base=lambda w: SINGULAR.get(w, w)),
        lambda r: _replace(words, COUNTS, r, known),
        lambda r: _flip(words, r, known),
        lambda r: _replace(words, BACKGROUNDS, r, known),
        lambda r: _replace(words, SIZES, r, known),
    ]
    if any(w in BINDERS for w in words):
        ops.append(lambda r: _swap(words, set(SHAPES), r))
    return ops


def perturb(words, rng: random.Random, k=2, known=None):
    """Up to k distinct one-edit variants of `words` (a list of words) that are false of the image the words
    describe; fewer when the prompt admits fewer (an empty list for a prompt with no content words).
    known: the words a replacement may use (a tokenizer's vocabulary; default every world word)."""
    out, seen = [], {tuple(words)}
    known = ALL_WORDS if known is None else known
    ops = _ops(words, known)
    rng.shuffle(ops)
    for op in ops * 2:  # a second pass lets one op give a second, different variant
        if len(out) == k:
            break
        v = op(rng)
        if v is not None and tuple(v) not in seen:
            seen.add(tuple(v))
            out.append(v)
    return out


def perturb_ids(ids, tok, rng, k=2):
    """perturb() on token ids, through the word tokenizer."""
    words = [tok.vocab[i] for i in ids]
    return [[tok.ids[w] for w in v] for v in perturb(words, rng, k, known=tok.ids)]
