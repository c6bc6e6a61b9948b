"""Sparse lexical vectors (BM25 term weights) computed here, with no downloaded model.

A chunk's vector holds, for each of its terms, BM25's saturated term frequency; a query's
holds 1 per term. Qdrant's IDF modifier multiplies by each term's inverse document frequency
at query time, so the dot product is the BM25 score. Terms are hashed to 32-bit indices.

Terms are folded (case, accents), stripped of the language's most common function words and
reduced to their Snowball stem, as search engines' analyzers do: "served" finds "serves", and
"what is served" is not matched on "is" by every short chunk. The language is a setting
(`rag.lexical_language`); changing it needs the documents ingested again.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter

import Stemmer

_WORD = re.compile(r"\w+", re.UNICODE)
K1 = 1.2
B = 0.75
AVERAGE_TERMS = 256  # a typical chunk: 2048 characters ≈ 300 words

NO_LANGUAGE = "none"  # fold and split only: no stop words, no stemming

# Function words carry no topic; kept short on purpose, they are matched after folding.
_STOP_WORDS: dict[str, frozenset[str]] = {
    "english": frozenset(
        "a about above after again against all am an and any are as at be because been before being below between "
        "both but by can could did do does doing down during each few for from further had has have having he her "
        "here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not "
        "now of off on once only or other our ours ourselves out over own same she should so some such than that the "
        "their theirs them themselves then there these they this those through to too under until up very was we "
        "were what when where which while who whom why will with would you your yours yourself yourselves".split()
    ),
    "french": frozenset(
        "a au aux avec ce ces cet cette dans de des du elle elles en est et etre eu il ils je la le les leur leurs lui "
        "ma mais me meme mes moi mon ne nos notre nous on ou par pas pour qu que qui sa se ses si son sont sur ta te "
        "tes toi ton tu un une vos votre vous y c d j l m n s t a ete etait sera ont avait".split()
    ),
}


def languages() -> list[str]:
    return [NO_LANGUAGE, *Stemmer.algorithms()]


def _fold(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return [t for t in _WORD.findall(folded) if len(t) > 1 or t.isdigit()]


def _index(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big")


def _vector(weights: dict[int, float]) -> tuple[list[int], list[float]]:
    indices = sorted(weights)
    return indices, [weights[i] for i in indices]


class LexicalAnalyzer:
    """Turns chunks and queries into BM25 sparse vectors for one language."""

    def __init__(self, language: str = "english") -> None:
        if language not in languages():
            raise ValueError(f"unknown lexical language {language!r}: one of {', '.join(languages())}")
        self.language = language
        self._stemmer = None if language == NO_LANGUAGE else Stemmer.Stemmer(language)
        self._stop_words = _STOP_WORDS.get(language, frozenset())

    def terms(self, text: str) -> list[str]:
        words = [word for word in _fold(text) if word not in self._stop_words]
        return self._stemmer.stemWords(words) if self._stemmer is not None else words

    def document_weights(self, text: str) -> tuple[list[int], list[float]]:
        """A chunk's sparse vector: its terms' indices and BM25 weights."""
        found = self.terms(text)
        length_norm = 1 - B + B * len(found) / AVERAGE_TERMS
        weights: dict[int, float] = {}
        for term, count in Counter(found).items():
            index = _index(term)
            weights[index] = weights.get(index, 0.0) + count * (K1 + 1) / (count + K1 * length_norm)
        return _vector(weights)

    def query_weights(self, text: str) -> tuple[list[int], list[float]]:
        return _vector({_index(term): 1.0 for term in set(self.terms(text))})
