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
# 80 min-hashes: P(candidate) = 1 - (1 - J^4)^20 for word-pair Jaccard J: 0.98 at J=0.6, 0.996 at 0.7, 1.0 at 0.85;
# 0.03 at J=0.2, so unrelated rows rarely need scoring (100,000 support-style rows: 98,000 candidate pairs).
BANDS, ROWS_PER_BAND = 20, 4
COMMON_SHARE = 10  # shingles in more than 1/10 of the texts are boilerplate
SLOT_BITS = 22
CHUNK = 2048  # rows hashed at a time: bounds the (shingles x hashes) array to about 50 MB
_WORD = re.compile(r"\w+")


def normalise(text: str) -> str:
    """Lower case, accents and punctuation off, spaces collapsed: "Hello,  Café!" -> "hello cafe"."""
    text = text.casefold()
    if not text.isascii():  # the per-character pass only where there can be accents
        text = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(_WORD.findall(text))


def similar_pairs(texts: list[str], threshold: float, exact_below: int = EXACT_BELOW) -> list[tuple[int, int, float]]:
    """(i, j, score) with i < j for every pair of texts scoring `threshold` or more (0-100, to 0.1).

    Texts are compared normalised; identical normalised texts score 100. Empty texts are never similar."""

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
        candidates = _score_pairs(distinct, sorted(_lsh_candidates(distinct)), threshold)
    for a, b, score in candidates:
        if score and score >= threshold:
            score = round(float(score), 1)  # float32 from rapidfuzz: compared to 0.1
            pairs += [(min(i, j), max(i, j), score) for i in groups[distinct[a]] for j in groups[distinct[b]]]
    return sorted(pairs)


def _score_pairs(texts: list[str], pairs: list[tuple[int, int]], threshold: float) -> list[tuple[int, int, float]]:
    """fuzz.ratio of each candidate pair, in C++ over both cores (rapidfuzz's cpdist), those at threshold or more."""
    import numpy as np
    from rapidfuzz import fuzz, process

    if not pairs:
        return []
    left, right = zip(*pairs)
    scores = process.cpdist([texts[a] for a in left], [texts[b] for b in right], scorer=fuzz.ratio,
                            score_cutoff=threshold, dtype=np.float32, workers=-1)
    return [(pairs[k][0], pairs[k][1], float(scores[k])) for k in np.flatnonzero(scores >= threshold)]


def _all_pairs_above(texts: list[str], threshold: float) -> list[tuple[int, int, float]]:
    import numpy as np
    from rapidfuzz import fuzz, process

    scores = process.cdist(texts, texts, scorer=fuzz.ratio, score_cutoff=threshold, dtype=np.float32, workers=-1)
    rows, cols = np.nonzero(np.triu(scores, k=1))
    return [(int(a), int(b), float(scores[a, b])) for a, b in zip(rows, cols)]


def _signatures(texts: list[str]):
    """(texts x BANDS*ROWS_PER_BAND) uint32 min-hashes of each text's word pairs ("reset my", "my password").

    Word pairs are rarer than single words, so unrelated rows seldom share a bucket, while a copy with one word
    changed keeps most of them; a one-word text is its own shingle. Shingles are integer codes (word ids), hashed
    by multiply-shift with one odd 64-bit multiplier per hash, all in numpy."""
    import numpy as np

    vocabulary: dict[str, int] = {}
    ids = [[vocabulary.setdefault(w, len(vocabulary)) for w in t.split()] for t in texts]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    flat = np.fromiter((i for x in ids for i in x), dtype=np.int64, count=int(lengths.sum()))
    owner = np.repeat(np.arange(len(texts)), lengths)
    size = len(vocabulary)
    pair = owner[:-1] == owner[1:]
    codes = np.concatenate([flat[:-1][pair] * size + flat[1:][pair], size * size + flat[np.cumsum(lengths) - 1]
                            [lengths == 1]])
    owners = np.concatenate([owner[:-1][pair], np.flatnonzero(lengths == 1)])
    # Boilerplate in most rows ("kind regards", "how do") would put unrelated rows in one bucket: left out of every
    # row alike, except rows that hold nothing else.
    # Counted in 2^22 slots (Fibonacci hashing of the codes): a collision only overcounts a shingle.
    slots = ((codes.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(64 - SLOT_BITS)).astype(np.int64)
    common = np.bincount(slots, minlength=1 << SLOT_BITS)[slots] > max(50, len(texts) // COMMON_SHARE)
    rare_left = np.bincount(owners[~common], minlength=len(texts))
    keep = ~common | (rare_left[owners] == 0)
    order = np.argsort(owners[keep], kind="stable")
    codes, owners = codes[keep][order].astype(np.uint64), owners[keep][order]
    rng = np.random.default_rng(0)
    n_hashes = BANDS * ROWS_PER_BAND
    multipliers = rng.integers(1, 2**63, size=n_hashes, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    offsets = rng.integers(0, 2**63, size=n_hashes, dtype=np.uint64)
    starts = np.searchsorted(owners, np.arange(len(texts)))
    ends = np.append(starts[1:], len(owners))
    signature = np.empty((len(texts), n_hashes), dtype=np.uint32)
    for first in range(0, len(texts), CHUNK):
        last = min(first + CHUNK, len(texts))
        part = codes[starts[first]:ends[last - 1], None]
        hashed = ((part * multipliers + offsets) >> np.uint64(32)).astype(np.uint32)  # wraps mod 2^64, as meant
        signature[first:last] = np.minimum.reduceat(hashed, starts[first:last] - starts[first], axis=0)
    return signature


def _lsh_candidates(texts: list[str]) -> set[tuple[int, int]]:
    """Pairs (a < b) that share all ROWS_PER_BAND min-hashes of at least one band."""
    import numpy as np

    signature = _signatures(texts)
    pairs: set[tuple[int, int]] = set()
    mix = np.random.default_rng(1).integers(1, 2**63, size=ROWS_PER_BAND, dtype=np.uint64) | np.uint64(1)
    for band in range(BANDS):
        # One 64-bit key per row and band (a sum of the band's min-hashes times odd constants, wrapping): sorting
        # integers is fast, and a rare collision only adds a candidate that scoring then drops.
        columns = signature[:, band * ROWS_PER_BAND:(band + 1) * ROWS_PER_BAND].astype(np.uint64)
        keys = (columns * mix).sum(axis=1, dtype=np.uint64)
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
