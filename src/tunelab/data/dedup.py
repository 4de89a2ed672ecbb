"""Deduplication: exact (hash of case- and punctuation-folded words) and near (MinHash LSH from
datasketch over word shingles, each candidate confirmed by its exact Jaccard similarity), plus the
leakage check between splits. The first occurrence of a group is kept.
"""
from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable
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
        self.minhashes: dict[int, MinHash] = {}

    def __contains__(self, key: int) -> bool:
        return key in self.sets

    def signatures(self, texts: list[str]) -> tuple[list[set[bytes]], list[MinHash]]:
        sets = [shingles(t, self.shingle_words) for t in texts]
        # crc32 (one C call per shingle) is ample for MinHash, which only needs a well-spread
        # 32-bit value before its own random permutations; it is ~3x faster than the sha1 default
        return sets, MinHash.bulk(sets, num_perm=self.num_perm, seed=1, hashfunc=zlib.crc32)

    def best_match(self, shingle_set: set[bytes], minhash: MinHash,
                   accept: Callable[[int], bool] | None = None) -> tuple[int, float] | None:
        """The most similar indexed key at or above the threshold (ties: the lowest key)."""
        best = None
        for candidate in self.lsh.query(minhash):
            if accept is not None and not accept(candidate):
                continue
            similarity = jaccard(shingle_set, self.sets[candidate])
            if similarity >= self.threshold and (best is None or (similarity, -candidate) > (best[1], -best[0])):
                best = (candidate, similarity)
        return best

    def add(self, key: int, shingle_set: set[bytes], minhash: MinHash) -> None:
        self.lsh.insert(key, minhash)
        self.sets[key] = shingle_set
        self.minhashes[key] = minhash

    def add_texts(self, keyed_texts: dict[int, str]) -> None:
        keys = [k for k in keyed_texts if k not in self]
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start:start + CHUNK]
            sets, minhashes = self.signatures([keyed_texts[k] for k in chunk])
            for key, shingle_set, minhash in zip(chunk, sets, minhashes):
                self.add(key, shingle_set, minhash)

    def leaks(self, held_out: list[int], train: set[int]) -> list[tuple[int, int, float]]:
        """(held-out key, train key, similarity) for each indexed held-out record with a near
        duplicate among the indexed train records."""
        pairs = []
        for key in held_out:
            match = self.best_match(self.sets[key], self.minhashes[key], accept=train.__contains__)
            if match:
                pairs.append((key, match[0], round(match[1], 4)))
        return pairs


CHUNK = 5000


def find_duplicates(texts: list[str], *, keys: list[str] | None = None, exact: bool = True, near: bool = True, threshold: float = 0.8,
                    num_perm: int = 128, shingle_words: int = 3, progress=None,
                    index: NearDuplicateIndex | None = None) -> list[Duplicate | None]:
    """For each text: None if kept, else the Duplicate it is of (always an earlier, kept text).
    `keys` are the texts' exact_key values when the caller already has them. A given `index` is
    filled with the kept texts (keyed by position), for the leakage check to reuse."""
    result: list[Duplicate | None] = [None] * len(texts)
    first_with_key: dict[str, int] = {}
    if exact:
        for i, key in enumerate(keys if keys is not None else map(exact_key, texts)):
            if key in first_with_key:
                result[i] = Duplicate(first_with_key[key], "exact", 1.0)
            else:
                first_with_key[key] = i
    if near:
        index = index if index is not None else NearDuplicateIndex(threshold, num_perm, shingle_words)
        remaining = [i for i in range(len(texts)) if result[i] is None]
        for start in range(0, len(remaining), CHUNK):
            chunk = remaining[start:start + CHUNK]
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
    offset = len(corpus)  # queries are keyed after the corpus
    index.add_texts({**dict(enumerate(corpus)), **{offset + i: q for i, q in enumerate(queries)}})
    pairs = index.leaks([offset + i for i in range(len(queries))], set(range(len(corpus))))
    return [(q - offset, c, s) for q, c, s in pairs]
