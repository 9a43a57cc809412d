"""Similar texts: which rows are reworded copies of each other, fast enough for 100,000 rows.

Small sets compare every pair (rapidfuzz's cdist). Large ones first find candidate pairs with MinHash
locality-sensitive hashing over word pairs (numpy), then score only those with rapidfuzz: texts whose word-pair
sets overlap by 60% or more meet in some band with a probability near 1, unrelated ones almost never.
Scores are rapidfuzz's `fuzz.ratio` (0-100, an edit-distance similarity) of the normalised texts.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict

EXACT_BELOW = 3000  # up to this many distinct texts every pair is scored (9M pairs take about a second)
BANDS, ROWS_PER_BAND = 16, 3  # 48 min-hashes: P(candidate) = 1 - (1 - J^3)^16; J=0.6 -> 0.98, J=0.7 -> 1.0
CHUNK = 4096  # rows hashed at a time: bounds the (words x hashes) array to tens of MB
_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Lower case, accents and punctuation off, spaces collapsed: "Hello,  Café!" -> "hello cafe"."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(_WORD.findall(text))


def similar_pairs(texts: list[str], threshold: float, exact_below: int = EXACT_BELOW) -> list[tuple[int, int, float]]:
    """(i, j, score) with i < j for every pair of texts scoring `threshold` or more (0-100, to 0.1).

    Texts are compared normalised; identical normalised texts score 100. Empty texts are never similar."""
    from rapidfuzz import fuzz

    norm = [normalise(t) for t in texts]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(norm):
        if t:
            groups[t].append(i)
    pairs: list[tuple[int, int, float]] = []
    for members in groups.values():  # identical after normalising: every pair, score 100
        pairs += [(a, b, 100.0) for k, a in enumerate(members) for b in members[k + 1:]]
    distinct = list(groups)
    if len(distinct) < 2:
        return sorted(pairs)
    if len(distinct) <= exact_below:
        candidates = _all_pairs_above(distinct, threshold)
    else:
        candidates = [(a, b, fuzz.ratio(distinct[a], distinct[b], score_cutoff=threshold))
                      for a, b in _lsh_candidates(distinct)]
    for a, b, score in candidates:
        if score and score >= threshold:
            score = round(float(score), 1)  # cdist works in float32, fuzz.ratio in float64: the same to 0.1
            pairs += [(min(i, j), max(i, j), score) for i in groups[distinct[a]] for j in groups[distinct[b]]]
    return sorted(pairs)


def _all_pairs_above(texts: list[str], threshold: float) -> list[tuple[int, int, float]]:
    import numpy as np
    from rapidfuzz import fuzz, process

    scores = process.cdist(texts, texts, scorer=fuzz.ratio, score_cutoff=threshold, dtype=np.float32, workers=-1)
    rows, cols = np.nonzero(np.triu(scores, k=1))
    return [(int(a), int(b), float(scores[a, b])) for a, b in zip(rows, cols)]


def _shingles(text: str) -> set[str]:
    """Word pairs ("reset my", "my password"): rarer than single words, so unrelated rows seldom share a bucket,
    while a copy with one word changed keeps most of them. A one-word text is its own shingle."""
    words = text.split()
    return {f"{a} {b}" for a, b in zip(words, words[1:])} or set(words)


def _lsh_candidates(texts: list[str]) -> set[tuple[int, int]]:
    """Pairs (a < b) that share all ROWS_PER_BAND min-hashes of at least one band."""
    import numpy as np

    vocabulary: dict[str, int] = {}
    word_ids = [np.fromiter((vocabulary.setdefault(w, len(vocabulary)) for w in _shingles(t)), dtype=np.int64)
                for t in texts]
    n_hashes = BANDS * ROWS_PER_BAND
    values = np.random.default_rng(0).integers(0, 2**32, size=(len(vocabulary), n_hashes), dtype=np.uint32)
    signature = np.empty((len(texts), n_hashes), dtype=np.uint32)
    for start in range(0, len(texts), CHUNK):
        chunk = word_ids[start:start + CHUNK]
        lengths = np.array([len(ids) for ids in chunk])
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        signature[start:start + len(chunk)] = np.minimum.reduceat(values[np.concatenate(chunk)], offsets, axis=0)
    pairs: set[tuple[int, int]] = set()
    for band in range(BANDS):
        keys = np.ascontiguousarray(signature[:, band * ROWS_PER_BAND:(band + 1) * ROWS_PER_BAND])
        keys = keys.view(np.dtype((np.void, keys.dtype.itemsize * ROWS_PER_BAND))).ravel()
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]]))
        ends = np.concatenate([starts[1:], [len(order)]])
        for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            members = sorted(order[s:e].tolist())
            if len(members) > 200:  # a templated bucket: neighbours in text order stand in for every pair
                members.sort(key=texts.__getitem__)
                pairs.update((min(a, b), max(a, b)) for k, a in enumerate(members) for b in members[k + 1:k + 11])
            else:
                pairs.update((a, b) for k, a in enumerate(members) for b in members[k + 1:])
    return pairs
