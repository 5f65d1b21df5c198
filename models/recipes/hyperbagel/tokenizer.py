"""Word-level tokenizer saved as a standard Hugging Face tokenizer.json (WordLevel + Whitespace)."""
import json
import re

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|gen_start|>", "<|gen_end|>"]
SPECIAL_KEYS = ["pad", "bos", "eos", "unk", "im_start", "im_end", "vision_start", "vision_end", "gen_start",
                "gen_end"]
# words the recipes use in prompts even if the world vocabulary lacks them
EXTRA_WORDS = []  # every prompt the recipes use is made of world words
# Forms a user writes that the world's text never does, folded onto the form it does write (the tokenizer.json
# normalizer, so the engine reads them the same way): the world writes "a" before every word ("a orange"),
# American spelling, "the image", and no "now" (every request is about the current image).
FOLDS = [("an", "a"), ("colour", "color"), ("this", "the"), ("picture", "image"), ("now", "")]


def fold(text):
    """Lowercase and FOLDS, as the tokenizer.json normalizer does."""
    text = text.lower()
    for src, dst in FOLDS:
        text = re.sub(rf"\b{src}\b", dst, text)
    return text


def untrained_words(tok, texts):
    """Vocabulary words no training text uses (FOLDS' sources never reach the model): their embeddings never learned
    anything, so the engine refuses a prompt holding them (manifest `untrained_words`) instead of answering from
    noise."""
    seen = {src for src, _ in FOLDS}
    for t in texts:
        seen.update(fold(t).split())
    return sorted(w for w in tok.vocab[len(SPECIALS):] if w not in seen)


class WordTokenizer:
    def __init__(self, words):
        seen, vocab = set(SPECIALS), list(SPECIALS)
        for w in list(words) + EXTRA_WORDS:
            w = w.strip().lower()
            if w and w not in seen:
                seen.add(w)
                vocab.append(w)
        self.vocab = vocab
        self.ids = {w: i for i, w in enumerate(vocab)}
        self.special_ids = {k: i for i, k in enumerate(SPECIAL_KEYS)}
        for k in SPECIAL_KEYS:
            setattr(self, k, self.special_ids[k])

    def __len__(self):
        return len(self.vocab)

    def encode(self, text):
        return [self.ids.get(w, self.unk) for w in fold(text).split()]

    def decode(self, ids):
        return " ".join(self.vocab[i] for i in ids if i >= len(SPECIALS))

    def to_json(self):
        return {
            "version": "1.0",
            "truncation": None,
            "padding": None,
            "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for i, s in enumerate(SPECIALS)],
            "normalizer": {"type": "Sequence", "normalizers": [{"type": "Lowercase"}] + [
                {"type": "Replace", "pattern": {"Regex": rf"\b{src}\b"}, "content": dst} for src, dst in FOLDS]},
            "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": None,
            "decoder": None,
            "model": {"type": "WordLevel", "vocab": {w: i for i, w in enumerate(self.vocab)}, "unk_token": "<unk>"},
        }

    def save(self, path):
        with open(path, "w") as f:
            json.dump(self.to_json(), f, indent=None, separators=(",", ":"))

    @staticmethod
    def load(path):
        with open(path) as f:
            j = json.load(f)
        vocab = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
        words = [w for w, _ in vocab[len(SPECIALS):]]
        t = WordTokenizer(words)
        assert t.vocab == [w for w, _ in vocab], "tokenizer vocabulary order mismatch"
        return t
