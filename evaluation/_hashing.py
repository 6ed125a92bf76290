"""63-bit hashes of ids: the evaluator joins and groups on integers instead of strings."""

from __future__ import annotations

import functools
import string
from collections.abc import Sequence

import numpy as np
import pandas as pd


def id_hash(text: str) -> int:
    """A 63-bit hash of an id: joins and unit grouping on integers instead of strings."""
    if len(text) == 32:
        value = _hex_prefix(text)
        if value >= 0:
            return value
    return _siphash(text)


@functools.lru_cache(maxsize=65_536)
def _siphash(text: str) -> int:
    return int(_siphashes([text])[0])


def id_hashes(texts: Sequence[str]) -> np.ndarray:
    """`id_hash` of each text, for a batch at once: the service's decision ids are random hex
    already (their first 16 digits are the hash); any other id is hashed by pandas' vectorised
    SipHash. Per id in Python, hashing was a fifth of reading a log (``bench/experiment_report.py``)."""
    hexlike = [i for i, text in enumerate(texts) if len(text) == 32]
    if not hexlike:  # no service decision ids (unit ids, candidates): all hashed at once
        return _siphashes(texts)
    hashes = np.zeros(len(texts), dtype=np.int64)
    parsed = _hex_prefixes([texts[i] for i in hexlike])
    other = [i for i, value in zip(hexlike, parsed, strict=True) if value < 0]
    hashes[hexlike] = parsed
    if len(hexlike) < len(texts):
        taken = set(hexlike)
        other += [i for i in range(len(texts)) if i not in taken]
    if other:
        hashes[other] = _siphashes([texts[i] for i in other])
    return hashes


def _siphashes(texts: Sequence[str]) -> np.ndarray:
    """pandas' SipHash of each text, halved to 63 bits. Not categorized first: finding the
    distinct texts before hashing them took 7/8 of the time, on unit ids as on other ids."""
    words: np.ndarray = pd.util.hash_array(np.array(texts, dtype=object), categorize=False)
    return (words >> np.uint64(1)).astype(np.int64)


def _hex_prefixes(texts: list[str]) -> np.ndarray:
    """The first 16 hex digits of each text as a 63-bit integer; -1 where they are not all hex."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    try:
        raw = bytes.fromhex("".join(text[:16] for text in texts))
    except ValueError:
        raw = b""
    if len(raw) == 8 * len(texts):  # fromhex skips spaces: a shorter result means one had some
        return (np.frombuffer(raw, dtype=">u8") >> np.uint64(1)).astype(np.int64)
    return np.array([_hex_prefix(text) for text in texts], dtype=np.int64)


def _hex_prefix(text: str) -> int:
    prefix = text[:16]
    if all(c in string.hexdigits for c in prefix):
        return int(prefix, 16) >> 1
    return -1


def candidate_hashes(candidates: Sequence[str | None]) -> np.ndarray:
    """Hashes of candidate ids, 0 for none (binary decisions, reports naming no candidate).
    Few distinct ids recur: each is hashed once per batch."""
    distinct = sorted({c for c in candidates if c is not None})
    hashes = dict(zip(distinct, id_hashes(distinct).tolist(), strict=True))
    return np.array([0 if c is None else hashes[c] for c in candidates], dtype=np.int64)
