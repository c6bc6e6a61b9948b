"""Retrieval quality per search method on a corpus built here: Recall@5 and MRR@10 for
paraphrased questions (the chunk's ideas in other words) and keyword questions (a code or name
the chunk holds, with a generic word).

    .venv/bin/python bench/rag_quality.py [--chunks 400] [--questions 150]

No model is downloaded: a deterministic fake embedder stands in for one. It knows synonyms
(each word of a synonym set maps to the set's own direction) and gives other words, codes and
names a weak direction of their own, as a small embedding model does for rare tokens. So it
can show how fusion trades the two rankings when the semantic one understands paraphrases and
the lexical one matches exact terms; it cannot say how well a real model understands text.
The store is the embedded one (Qdrant Edge), searched as /v1/search does, embedding excluded.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api.rag.edge_engine import EdgeEngine  # noqa: E402
from api.rag.schemas import FusionMethod, SearchMethod  # noqa: E402
from api.rag.vectors import NewChunk, Scope, SearchQuery, VectorStore  # noqa: E402

DIMENSIONS = 256
RARE_WEIGHT = 0.35  # how strongly a word outside the synonym sets (a code, a name) moves a vector

SYNONYMS = [
    ["budget", "funds", "allowance", "spending"], ["hotel", "lodging", "accommodation", "inn"],
    ["travel", "trip", "journey", "voyage"], ["approval", "authorisation", "consent", "permission"],
    ["laptop", "notebook", "computer", "workstation"], ["password", "passphrase", "credentials", "login"],
    ["reset", "renew", "replace", "change"], ["leave", "vacation", "holiday", "absence"],
    ["sick", "ill", "unwell", "ailing"], ["parental", "maternity", "paternity", "childbirth"],
    ["expense", "receipt", "reimbursement", "refund"], ["meal", "food", "lunch", "dinner"],
    ["train", "rail", "railway", "locomotive"], ["flight", "plane", "airline", "aircraft"],
    ["booking", "reservation", "reserve", "book"], ["security", "safety", "protection", "safeguard"],
    ["badge", "pass", "card", "keycard"], ["lost", "missing", "misplaced", "mislaid"],
    ["office", "workplace", "premises", "building"], ["remote", "home", "telework", "distance"],
    ["equipment", "gear", "hardware", "devices"], ["training", "course", "workshop", "lesson"],
    ["manager", "supervisor", "boss", "lead"], ["request", "ask", "apply", "petition"],
    ["deadline", "due", "cutoff", "limit"], ["report", "declare", "notify", "inform"],
    ["contract", "agreement", "deal", "arrangement"], ["insurance", "coverage", "cover", "indemnity"],
    ["doctor", "physician", "clinic", "medic"], ["salary", "pay", "wage", "earnings"],
]
CONCEPT = {word: index for index, words in enumerate(SYNONYMS) for word in words}
FILLER = "the a of for to and your with on by in is are be this that".split()


def _direction(seed: str) -> list[float]:
    rng = random.Random(hashlib.blake2b(seed.encode(), digest_size=8).digest())
    vector = [rng.gauss(0, 1) for _ in range(DIMENSIONS)]
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector]


class FakeModel:
    """A synonym-aware embedder: deterministic, instant, and only as smart as its table."""

    def __init__(self) -> None:
        self._cache: dict[str, list[float]] = {}

    def _word(self, word: str) -> tuple[list[float], float]:
        if word in CONCEPT:
            key, weight = f"concept:{CONCEPT[word]}", 1.0
        else:
            key, weight = f"word:{word}", (0.0 if word in FILLER else RARE_WEIGHT)
        if key not in self._cache:
            self._cache[key] = _direction(key)
        return self._cache[key], weight

    def embed(self, text: str) -> list[float]:
        total = [0.0] * DIMENSIONS
        for word in re.findall(r"[\w-]+", text.lower()):
            direction, weight = self._word(word)
            for i in range(DIMENSIONS):
                total[i] += weight * direction[i]
        norm = sum(x * x for x in total) ** 0.5 or 1.0
        return [x / norm for x in total]


@dataclass(frozen=True)
class Question:
    text: str
    document: int
    chunk: int
    kind: str  # "paraphrase" or "keyword"


def build_corpus(chunks: int, questions: int, seed: int = 7) -> tuple[dict[int, list[str]], list[Question]]:
    """Documents of 4 chunks; each chunk names 4 ideas in their first word and a code of its
    own. Paraphrases say 3 of its ideas in other words (one idea keeps its word); keyword
    questions give its code and one generic word."""
    rng = random.Random(seed)
    documents: dict[int, list[str]] = {}
    facts: list[tuple[int, int, list[int], str]] = []
    for n in range(chunks):
        document, chunk = n // 4 + 1, n % 4 + 1
        ideas = rng.sample(range(len(SYNONYMS)), 4)
        code = f"{rng.choice(['HR', 'IT', 'FIN', 'OPS'])}-{rng.randint(1000, 9999)}"
        words = [SYNONYMS[i][0] for i in ideas]
        text = (f"{words[0].capitalize()} and {words[1]}: the {words[2]} rules for {words[3]} are set out in "
                f"form {code}; see the {rng.choice(FILLER[:6])} handbook.")
        documents.setdefault(document, []).append(text)
        facts.append((document, chunk, ideas, code))
    asked: list[Question] = []
    for document, chunk, ideas, code in rng.sample(facts, min(questions, len(facts))):
        kept = rng.choice(ideas)
        words = [SYNONYMS[i][0] if i == kept else rng.choice(SYNONYMS[i][1:]) for i in ideas[:3] + [kept]]
        asked.append(Question(f"what about {' '.join(dict.fromkeys(words))}?", document, chunk, "paraphrase"))
        generic = SYNONYMS[rng.choice(ideas)][0]
        asked.append(Question(f"{code} {generic}", document, chunk, "keyword"))
    return documents, asked


VARIANTS: dict[str, dict[str, object]] = {
    "semantic": {"method": SearchMethod.semantic},
    "lexical": {"method": SearchMethod.lexical},
    "hybrid, RRF 1:1 (before)": {"method": SearchMethod.hybrid, "fusion": FusionMethod.rrf, "semantic_weight": 1.0, "lexical_weight": 1.0},
    "hybrid, RRF 0.7:0.3": {"method": SearchMethod.hybrid, "fusion": FusionMethod.rrf, "semantic_weight": 0.7, "lexical_weight": 0.3},
    "hybrid, DBSF 1:1": {"method": SearchMethod.hybrid, "fusion": FusionMethod.dbsf, "semantic_weight": 1.0, "lexical_weight": 1.0},
    "hybrid, DBSF 0.6:0.4": {"method": SearchMethod.hybrid, "fusion": FusionMethod.dbsf, "semantic_weight": 0.6, "lexical_weight": 0.4},
    "hybrid, DBSF 0.7:0.3 (default)": {"method": SearchMethod.hybrid, "fusion": FusionMethod.dbsf, "semantic_weight": 0.7, "lexical_weight": 0.3},
    "hybrid, DBSF 0.8:0.2": {"method": SearchMethod.hybrid, "fusion": FusionMethod.dbsf, "semantic_weight": 0.8, "lexical_weight": 0.2},
}


async def evaluate(chunks: int, questions: int) -> None:
    model = FakeModel()
    documents, asked = build_corpus(chunks, questions)
    with tempfile.TemporaryDirectory() as tmp:
        vectors = VectorStore(None, "quality", engine=EdgeEngine(tmp, "quality"))
        for document, texts in documents.items():
            new = [NewChunk(i, text, {}) for i, text in enumerate(texts, start=1)]
            await vectors.upsert(1, 1, document, new, [model.embed(t) for t in texts], ready=True, created=0)
        print(f"{sum(len(t) for t in documents.values())} chunks in {len(documents)} documents; "
              f"{len(asked) // 2} paraphrased and {len(asked) // 2} keyword questions\n")
        print("| method | paraphrased Recall@5 | paraphrased MRR@10 | keyword Recall@5 | keyword MRR@10 |")
        print("|---|---|---|---|---|")
        for name, variant in VARIANTS.items():
            scores: dict[str, list[tuple[float, float]]] = {"paraphrase": [], "keyword": []}
            for question in asked:
                query = SearchQuery(text=question.text, vector=model.embed(question.text), metadata_filter=None, limit=10,
                                    offset=0, **variant)  # type: ignore[arg-type]
                found = [(c.document_id, c.chunk_id) for c, _ in await vectors.search(Scope([1], [], {1: 1}), query)]
                target = (question.document, question.chunk)
                rank = found.index(target) + 1 if target in found else None
                scores[question.kind].append((1.0 if rank and rank <= 5 else 0.0, 1 / rank if rank else 0.0))
            cells = []
            for kind in ("paraphrase", "keyword"):
                pairs = scores[kind]
                cells += [f"{sum(p[0] for p in pairs) / len(pairs):.3f}", f"{sum(p[1] for p in pairs) / len(pairs):.3f}"]
            print(f"| {name} | " + " | ".join(cells) + " |")
        await vectors.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=400)
    parser.add_argument("--questions", type=int, default=150, help="chunks asked about (one question of each kind)")
    args = parser.parse_args()
    asyncio.run(evaluate(args.chunks, args.questions))


if __name__ == "__main__":
    main()
