"""Deduplication: exact (hash of case- and punctuation-folded words) and near (MinHash LSH over
word shingles, each candidate confirmed by its exact Jaccard similarity), plus the leakage check
between splits. The first occurrence of a group is kept.

The work is split so that it scales: each record's key and LSH band hashes are computed on
their own (in worker processes, or Ray tasks), and the decisions are taken afterwards in one
pass over those compact values in input order:
- exact: the first position of each key (a sort of the keys);
- near: records that share a band bucket are candidates, exactly as in an LSH index queried
  record by record; only buckets holding two or more records matter, so the ordered pass walks
  those records alone, compares each with the *kept* earlier members of its buckets (exact
  Jaccard on shingles, fetched on demand), and keeps it or marks it a duplicate of the best.
The results equal those of inserting the records one by one into an LSH index of kept records.

MinHash signatures come from rensa (Rust); the bands (b, r) are the ones datasketch's
MinHashLSH picks for the same threshold and weights. A band is bucketed by a 64-bit hash of its
values: a collision only adds a candidate, which the exact Jaccard check then rejects.
"""
from __future__ import annotations

import hashlib
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

WORD = re.compile(r"\w+")
SIGNATURE_SEED = 1
CHUNK = 5000  # positions per progress report of the ordered pass

_MIX = np.uint64(0x100000001B3)  # FNV-1a prime, applied to 32-bit words
_OFFSET = np.uint64(0xCBF29CE484222325)


@dataclass(frozen=True)
class Duplicate:
    of: int  # index of the kept record this one duplicates
    kind: str  # "exact" or "near"
    similarity: float


def normalised_words(text: str) -> list[str]:
    return WORD.findall(text.casefold())


def exact_key(text: str) -> str:
    return key_of_words(normalised_words(text)).hex()


def key_of_words(words: list[str]) -> bytes:
    """The 32-byte exact-duplicate key (sha256 of the folded words); its hex form is exact_key."""
    return hashlib.sha256(" ".join(words).encode()).digest()


def shingle_strings(words: list[str], size: int) -> set[str]:
    if len(words) <= size:
        return {" ".join(words)}
    return set(map(" ".join, zip(*(words[i:] for i in range(size)))))


def shingles(text: str, size: int) -> set[bytes]:
    return {s.encode() for s in shingle_strings(normalised_words(text), size)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) as datasketch's MinHashLSH chooses them. LSH finds candidates a
    little below the threshold; the exact check decides. Weighting false negatives over false
    positives keeps pairs at the threshold from being missed (equal weights miss about 1 in 8
    at 0.8); an extra candidate costs only an exact check."""
    from datasketch import MinHashLSH
    lsh = MinHashLSH(threshold=max(0.05, threshold - 0.1), num_perm=num_perm, weights=(0.1, 0.9))
    return lsh.b, lsh.r


def band_hashes(shingle_sets: Sequence[set[str]], num_perm: int, bands: int, rows: int) -> np.ndarray:
    """(records, bands) uint64: one hash per LSH band of each set's MinHash signature."""
    import rensa
    if not shingle_sets:
        return np.zeros((0, bands), np.uint64)
    matrix = rensa.RMinHash.digest_matrix_from_token_sets(shingle_sets, num_perm, SIGNATURE_SEED)
    digests = np.array(matrix.to_rows(), dtype=np.uint64)[:, :bands * rows].reshape(len(shingle_sets), bands, rows)
    hashed = np.full((len(shingle_sets), bands), _OFFSET, np.uint64)
    for row in range(rows):
        hashed = (hashed ^ digests[:, :, row]) * _MIX
    hashed ^= hashed >> np.uint64(29)  # fold the high bits down so every bit depends on every value
    return hashed


def first_occurrences(keys: np.ndarray) -> np.ndarray:
    """For each position, the first position holding the same key ((n, width) uint8 keys)."""
    if len(keys) == 0:
        return np.zeros(0, np.int64)
    flat = np.ascontiguousarray(keys).view(np.dtype((np.void, keys.shape[1]))).ravel()
    _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)  # stable: first wins
    return first[inverse.ravel()].astype(np.int64)


def shared_buckets(band_columns: Iterable[np.ndarray], members: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(position, bucket id) for every member that shares a band bucket with another member,
    sorted by position, and the number of such buckets (ids are 0 to that, dense). Each column
    holds one band's hashes for all positions."""
    positions, buckets, next_id = [], [], 0
    for column in band_columns:
        hashes = column[members]
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        same = ordered[1:] == ordered[:-1]
        shared = np.zeros(len(ordered), bool)
        shared[1:] |= same
        shared[:-1] |= same
        opens_shared = shared & np.concatenate(([True], ~same))  # the first member of each shared bucket
        ids = np.cumsum(opens_shared) - 1 + next_id
        chosen = np.flatnonzero(shared)
        positions.append(members[order[chosen]])
        buckets.append(ids[chosen])
        next_id += int(opens_shared.sum())
    if not positions:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    position, bucket = np.concatenate(positions), np.concatenate(buckets)
    order = np.argsort(position, kind="stable")
    return position[order].astype(np.int64), bucket[order].astype(np.int64), next_id


@dataclass
class Found:
    """Duplicates by position: `of` is -1 for a kept record, else the kept record it duplicates;
    `near` holds the rounded similarity of each near duplicate (the others are exact)."""
    of: np.ndarray
    near: dict[int, float] = field(default_factory=dict)


def deduplicate(n: int, *, keys: Callable[[], np.ndarray] | None, band_columns: Callable[[], Iterable[np.ndarray]] | None,
                shingles_of: Callable[[int], set], threshold: float,
                progress: Callable[[int], None] | None = None) -> Found:
    """Exact duplicates (when `keys` is given) then near duplicates (when `band_columns` is),
    each record compared with the kept records before it."""
    of = np.full(n, -1, np.int64)
    if keys is not None:
        first = first_occurrences(keys())
        duplicate = first != np.arange(n)
        of[duplicate] = first[duplicate]
    found = Found(of)
    if band_columns is None:
        if progress:
            progress(n)
        return found
    remaining = np.flatnonzero(of < 0)
    position, bucket, buckets = shared_buckets(band_columns(), remaining)
    done = 0
    for last in _resolve_in_order(position, bucket, buckets, found, shingles_of, threshold):
        now = int(np.searchsorted(remaining, last, "right"))  # records up to `last` are decided
        if progress and now > done:
            progress(now - done)
        done = max(done, now)
    if progress and len(remaining) > done:
        progress(len(remaining) - done)
    return found


def _resolve_in_order(position: np.ndarray, bucket: np.ndarray, buckets: int, found: Found,
                      shingles_of: Callable[[int], set], threshold: float) -> Iterator[int]:
    """Walk the records that share a bucket in input order: each is compared with the kept
    earlier members of its buckets, then marked a duplicate or kept (and joins its buckets)."""
    first_kept = array("q", [-1]) * buckets  # the first kept member of each bucket: 8 bytes a bucket
    more_kept: dict[int, list[int]] = {}  # the others, for the few buckets that keep several
    starts = np.flatnonzero(np.concatenate(([True], position[1:] != position[:-1]))) if len(position) else position
    ends = np.append(starts[1:], len(position))
    for chunk in range(0, len(starts), CHUNK):  # a chunk at a time: Python lists of bounded size
        offset = int(starts[chunk])
        last = int(ends[min(chunk + CHUNK, len(starts)) - 1])
        positions, bucket_ids = position[offset:last].tolist(), bucket[offset:last].tolist()
        for start, end in zip(starts[chunk:chunk + CHUNK].tolist(), ends[chunk:chunk + CHUNK].tolist()):
            p, mine = positions[start - offset], bucket_ids[start - offset:end - offset]
            candidates = set()
            for b in mine:
                if first_kept[b] >= 0:
                    candidates.add(first_kept[b])
                    candidates.update(more_kept.get(b, ()))
            match = best_match(shingles_of(p), candidates, shingles_of, threshold) if candidates else None
            if match:
                found.of[p] = match[0]
                found.near[p] = round(match[1], 4)
                continue
            for b in mine:
                if first_kept[b] < 0:
                    first_kept[b] = p
                else:
                    more_kept.setdefault(b, []).append(p)
        yield positions[-1]  # the last position of the chunk


def best_match(mine: set, candidates: Iterable[int], shingles_of: Callable[[int], set],
               threshold: float) -> tuple[int, float] | None:
    """The most similar candidate at or above the threshold (ties: the lowest position)."""
    best = None
    for candidate in sorted(candidates):
        similarity = jaccard(mine, shingles_of(candidate))
        if similarity >= threshold and (best is None or similarity > best[1]):
            best = (candidate, similarity)
    return best


def cross_matches(band_columns: Iterable[np.ndarray], queries: np.ndarray, corpus: np.ndarray,
                  shingles_of: Callable[[int], set], threshold: float) -> list[tuple[int, int, float]]:
    """(query, corpus position, similarity) for each query with a near duplicate in the corpus
    (its best one), in query order; queries and corpus are disjoint sets of positions."""
    members = np.union1d(queries, corpus)
    is_query = np.isin(members, queries)
    candidates: dict[int, set[int]] = {}
    for column in band_columns:
        hashes = column[members]
        order = np.argsort(hashes, kind="stable")
        ordered = hashes[order]
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        ends = np.append(starts[1:], len(ordered))
        for start, end in zip(starts[ends - starts > 1].tolist(), ends[ends - starts > 1].tolist()):
            run = order[start:end]
            asking = members[run[is_query[run]]].tolist()
            answering = members[run[~is_query[run]]].tolist()
            for q in asking:
                if answering:
                    candidates.setdefault(q, set()).update(answering)
    pairs = []
    for q in sorted(candidates):
        match = best_match(shingles_of(q), candidates[q], shingles_of, threshold)
        if match:
            pairs.append((q, match[0], round(match[1], 4)))
    return pairs


# --- in-memory entry points, on lists of texts ----------------------------------------------

def find_duplicates(texts: list[str], *, keys: list[str] | None = None, exact: bool = True, near: bool = True,
                    threshold: float = 0.8, num_perm: int = 128, shingle_words: int = 3,
                    progress=None) -> list[Duplicate | None]:
    """For each text: None if kept, else the Duplicate it is of (always an earlier, kept text).
    `keys` are the texts' exact_key values when the caller already has them."""
    words = [normalised_words(t) for t in texts]
    sets = [shingle_strings(w, shingle_words) for w in words]
    key_bytes = None
    if exact:  # fixed-width keys: the folded words' digest, or a digest of each given key
        digests = [key_of_words(w) for w in words] if keys is None else [hashlib.sha256(k.encode()).digest() for k in keys]
        key_bytes = np.frombuffer(b"".join(digests), np.uint8).reshape(len(texts), 32)
    bands = band_hashes(sets, num_perm, *lsh_bands(threshold, num_perm)) if near else None
    found = deduplicate(len(texts), keys=(lambda: key_bytes) if exact else None,
                        band_columns=(lambda: bands.T) if near else None, shingles_of=sets.__getitem__,
                        threshold=threshold, progress=progress)
    return [None if of < 0 else Duplicate(int(of), "near" if i in found.near else "exact", found.near.get(i, 1.0))
            for i, of in enumerate(found.of.tolist())]


def near_duplicate_pairs(queries: list[str], corpus: list[str], *, threshold: float = 0.8,
                         num_perm: int = 128, shingle_words: int = 3) -> list[tuple[int, int, float]]:
    """(query index, corpus index, similarity) for each query with a near duplicate in the corpus."""
    texts = corpus + queries  # queries are positioned after the corpus
    sets = [shingle_strings(normalised_words(t), shingle_words) for t in texts]
    bands = band_hashes(sets, num_perm, *lsh_bands(threshold, num_perm))
    offset = len(corpus)
    pairs = cross_matches(bands.T, np.arange(offset, len(texts)), np.arange(offset), sets.__getitem__, threshold)
    return [(q - offset, c, s) for q, c, s in pairs]
