"""Deduplication: exact (hash of case- and punctuation-folded words) and near (MinHash LSH from
datasketch over word shingles, each candidate confirmed by its exact Jaccard similarity), plus the
leakage check between splits. The first occurrence of a group is kept.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from datasketch import MinHash, MinHashLSH

WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Duplicate:
    of: int  # index of the kept record this one duplicates
    kind: str  # "exact" or "near"
    similarity: float


def normalised_words(text: str) -> list[str]:
    return WORD.findall(text.casefold())


def exact_key(text: str) -> str:
    return hashlib.sha256(" ".join(normalised_words(text)).encode()).hexdigest()


def shingles(text: str, size: int) -> set[bytes]:
    words = normalised_words(text)
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDuplicateIndex:
    """MinHash LSH for candidates, exact Jaccard on shingles to confirm them."""

    def __init__(self, threshold: float, num_perm: int = 128, shingle_words: int = 3):
        self.threshold = threshold
        self.num_perm = num_perm
        self.shingle_words = shingle_words
        # LSH finds candidates a little below the threshold; the exact check decides. Weighting
        # false negatives over false positives keeps pairs at the threshold from being missed
        # (equal weights miss about 1 in 8 at 0.8); an extra candidate costs only an exact check.
        self.lsh = MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=num_perm, weights=(0.1, 0.9))
        self.sets: dict[int, set[bytes]] = {}

    def signatures(self, texts: list[str]) -> tuple[list[set[bytes]], list[MinHash]]:
        sets = [shingles(t, self.shingle_words) for t in texts]
        return sets, MinHash.bulk(sets, num_perm=self.num_perm, seed=1)

    def best_match(self, shingle_set: set[bytes], minhash: MinHash) -> tuple[int, float] | None:
        best = None
        for candidate in self.lsh.query(minhash):
            similarity = jaccard(shingle_set, self.sets[candidate])
            if similarity >= self.threshold and (best is None or (similarity, -candidate) > (best[1], -best[0])):
                best = (candidate, similarity)
        return best

    def add(self, key: int, shingle_set: set[bytes], minhash: MinHash) -> None:
        self.lsh.insert(key, minhash)
        self.sets[key] = shingle_set


def find_duplicates(texts: list[str], *, keys: list[str] | None = None, exact: bool = True, near: bool = True, threshold: float = 0.8,
                    num_perm: int = 128, shingle_words: int = 3, progress=None) -> list[Duplicate | None]:
    """For each text: None if kept, else the Duplicate it is of (always an earlier, kept text).
    `keys` are the texts' exact_key values when the caller already has them."""
    result: list[Duplicate | None] = [None] * len(texts)
    first_with_key: dict[str, int] = {}
    if exact:
        for i, key in enumerate(keys if keys is not None else map(exact_key, texts)):
            if key in first_with_key:
                result[i] = Duplicate(first_with_key[key], "exact", 1.0)
            else:
                first_with_key[key] = i
    if near:
        index = NearDuplicateIndex(threshold, num_perm, shingle_words)
        remaining = [i for i in range(len(texts)) if result[i] is None]
        for start in range(0, len(remaining), 5000):
            chunk = remaining[start:start + 5000]
            sets, minhashes = index.signatures([texts[i] for i in chunk])
            for i, shingle_set, minhash in zip(chunk, sets, minhashes):
                match = index.best_match(shingle_set, minhash)
                if match:
                    result[i] = Duplicate(match[0], "near", round(match[1], 4))
                else:
                    index.add(i, shingle_set, minhash)
            if progress:
                progress(len(chunk))
    return result


def near_duplicate_pairs(queries: list[str], corpus: list[str], *, threshold: float = 0.8,
                         num_perm: int = 128, shingle_words: int = 3) -> list[tuple[int, int, float]]:
    """(query index, corpus index, similarity) for each query with a near duplicate in the corpus."""
    index = NearDuplicateIndex(threshold, num_perm, shingle_words)
    for start in range(0, len(corpus), 5000):
        sets, minhashes = index.signatures(corpus[start:start + 5000])
        for offset, (shingle_set, minhash) in enumerate(zip(sets, minhashes)):
            index.add(start + offset, shingle_set, minhash)
    pairs = []
    if not queries:
        return pairs
    sets, minhashes = index.signatures(queries)
    for qi, (shingle_set, minhash) in enumerate(zip(sets, minhashes)):
        match = index.best_match(shingle_set, minhash)
        if match:
            pairs.append((qi, match[0], round(match[1], 4)))
    return pairs
