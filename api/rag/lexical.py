"""Sparse lexical vectors (BM25 term weights) computed here, with no downloaded model.

A chunk's vector holds, for each of its terms, BM25's saturated term frequency; a query's
holds 1 per term. Qdrant's IDF modifier multiplies by each term's inverse document frequency
at query time, so the dot product is the BM25 score. Terms are hashed to 32-bit indices.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter

from qdrant_client import models

_WORD = re.compile(r"\w+", re.UNICODE)
K1 = 1.2
B = 0.75
AVERAGE_TERMS = 256  # a typical chunk: 2048 characters ≈ 300 words


def terms(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return [t for t in _WORD.findall(folded) if len(t) > 1 or t.isdigit()]


def _index(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big")


def _vector(weights: dict[int, float]) -> models.SparseVector:
    indices = sorted(weights)
    return models.SparseVector(indices=indices, values=[weights[i] for i in indices])


def document_vector(text: str) -> models.SparseVector:
    found = terms(text)
    length_norm = 1 - B + B * len(found) / AVERAGE_TERMS
    weights: dict[int, float] = {}
    for term, count in Counter(found).items():
        index = _index(term)
        weights[index] = weights.get(index, 0.0) + count * (K1 + 1) / (count + K1 * length_norm)
    return _vector(weights)


def query_vector(text: str) -> models.SparseVector:
    return _vector({_index(term): 1.0 for term in set(terms(text))})
