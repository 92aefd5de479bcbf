"""The importance graph: which words a prompt cannot lose.

Pure functions over a list of words. Nodes are the words plus one hub per content lemma; edges link words
that sit near each other, every occurrence of a lemma to its hub (so repeated words and repeated numbers
reinforce each other), the query's terms to their hubs, and, optionally, hubs whose MiniLM embeddings are
similar. Personalized PageRank then spreads a prior that favours numbers, quantity words, entities, the
question sentence and the query's terms. Numbers are also returned as protected: they survive any budget.

No parser or NER model is needed, so scoring a 500-word passage takes milliseconds and works offline.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import networkx as nx
import numpy as np

from .config import GraphConfig
from .words import SENTENCE_END

Embed = Callable[[list[str]], np.ndarray]

STOPWORDS = frozenset(
    """a about above after again against am an and any are as at be because been before being below between
    but by can could did do does doing down during for from further had has have having he her here hers
    herself him himself his i if in into is it its itself just me my myself nor of off on once or other
    our ours ourselves out over own same she should so some such that the their theirs them themselves then
    there these they this those through to too under until up very was we were while will with would you your yours yourself yourselves also into onto upon""".split()
)
# Negations change a prompt's meaning; they are never treated as droppable filler.
NEGATIONS = frozenset("not no never none nothing nobody neither nor without n't cannot".split())

NUMBER_WORDS = frozenset(
    """zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
    seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred hundreds thousand
    thousands million millions billion billions trillion dozen dozens half halves quarter quarters third thirds
    fourth fourths fifth fifths tenth tenths twice thrice double triple quadruple once""".split()
)
QUANTITY_WORDS = frozenset(
    """total average each per every more less fewer than percent percentage times remaining remainder left
    sum difference rest all both most least many much increase increased decrease decreased profit cost costs
    price rate ratio only except extra additional another twice""".split()
)

_EDGE_PUNCT = re.compile(r"^[^\w$€£%]+|[^\w%]+$")
_HAS_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class WordFeatures:
    """Per-word facts the graph and trained policies use (arrays of the same length as the words)."""

    norm: list[str]  # lowercased, edge punctuation removed
    lemma: list[str]  # crude lemma used to link repeated words ("apples" ~ "apple")
    is_number: np.ndarray
    is_quantity: np.ndarray
    is_entity: np.ndarray
    is_stop: np.ndarray
    sentence: np.ndarray  # sentence index of each word
    in_question: np.ndarray  # word belongs to a sentence that ends with "?"
    is_unit: np.ndarray  # first content word within two words after a number, in the same sentence


@dataclass(frozen=True)
class GraphScores:
    #: Importance of each word, mean 1.0 within each chunk so chunks of a long prompt are comparable.
    scores: np.ndarray
    #: Words that must survive any budget (numbers, when ``protect_numbers``).
    protected: np.ndarray


@functools.lru_cache(maxsize=1 << 16)
def normalize(word: str) -> str:
    # cached: words repeat, and the graph, the units and the selection all normalise the same ones
    return _EDGE_PUNCT.sub("", word).lower()


@functools.lru_cache(maxsize=1 << 16)
def lemmatize(norm: str) -> str:
    """A deliberately small suffix stripper: enough to link "apples"/"apple", "agreed"/"agree"/"agrees" and
    "making"/"make" ("bought"-free inflections). A base form loses its final "e", so that it meets the stem of its
    "-ed"/"-ing" forms ("agree", "agrees", "agreed" -> "agre"; "make", "making" -> "mak")."""
    if _HAS_DIGIT.search(norm):
        return norm.replace(",", "").lstrip("$€£")  # "$1,000" and "1000" are the same quantity
    if norm.endswith("'s") or norm.endswith("’s"):
        norm = norm[:-2]
    if len(norm) > 4 and norm.endswith("ies"):
        return norm[:-3] + "y"
    if len(norm) > 4 and norm.endswith(("sses", "xes", "ches", "shes")):
        return norm[:-2]
    if len(norm) > 5 and norm.endswith("ing"):
        return norm[:-3]
    if len(norm) > 4 and norm.endswith("ed"):
        return norm[:-2]
    if len(norm) > 3 and norm.endswith("s") and not norm.endswith(("ss", "us", "is")):
        norm = norm[:-1]
    return norm[:-1] if len(norm) > 3 and norm.endswith("e") else norm


def is_number_word(norm: str) -> bool:
    """Digits anywhere ("$80,000", "150%", "3rd", "5-year-old") or a number word ("twenty-five", "half")."""
    if _HAS_DIGIT.search(norm):
        return True
    return any(part in NUMBER_WORDS for part in norm.split("-"))


def word_features(words: Sequence[str]) -> WordFeatures:
    n = len(words)
    norm = [normalize(w) for w in words]
    lemma = [lemmatize(x) for x in norm]
    is_number = np.fromiter((is_number_word(x) for x in norm), dtype=bool, count=n)
    is_quantity = np.fromiter((x in QUANTITY_WORDS for x in norm), dtype=bool, count=n)
    is_stop = np.fromiter((x in STOPWORDS or not x for x in norm), dtype=bool, count=n)
    sentence = np.zeros(n, dtype=np.int64)
    is_entity = np.zeros(n, dtype=bool)
    sid, starts_sentence = 0, True
    for i, w in enumerate(words):
        sentence[i] = sid
        core = _EDGE_PUNCT.sub("", w)
        if core[:1].isupper() and not starts_sentence and not is_stop[i] and core != "I":
            is_entity[i] = True
        elif core.isupper() and len(core) > 1:  # acronyms count even at a sentence start
            is_entity[i] = True
        starts_sentence = bool(SENTENCE_END.search(w))
        if starts_sentence:
            sid += 1
    question_sentences = {int(sentence[i]) for i, w in enumerate(words) if w.rstrip("\"')]").endswith("?")}
    in_question = np.fromiter((int(s) in question_sentences for s in sentence), dtype=bool, count=n)
    is_unit = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(is_number).tolist():
        for j in (i + 1, i + 2):
            if j < n and sentence[j] == sentence[i] and not is_stop[j] and not is_number[j]:
                is_unit[j] = True
                break
    return WordFeatures(norm, lemma, is_number, is_quantity, is_entity, is_stop, sentence, in_question, is_unit)


def query_lemmas(query: Optional[str]) -> list[str]:
    """Content lemmas of a query, in order, without repeats."""
    if not query:
        return []
    seen: dict[str, None] = {}
    for w in query.split():
        norm = normalize(w)
        if norm and norm not in STOPWORDS:
            seen.setdefault(lemmatize(norm), None)
    return list(seen)


def build_graph(
    words: Sequence[str],
    feats: WordFeatures,
    config: GraphConfig,
    *,
    query: Optional[str] = None,
    embed: Optional[Embed] = None,
) -> nx.Graph:
    """Word nodes ``0..n-1`` plus hub nodes ``("lemma", l)``; edge attribute ``weight``."""
    n = len(words)
    g = nx.Graph()
    g.add_nodes_from(range(n))
    # adjacency within a window; weaker across a sentence boundary
    for d in range(1, config.window + 1):
        for i in range(n - d):
            same = feats.sentence[i] == feats.sentence[i + d]
            g.add_edge(i, i + d, weight=(1.0 / d) * (1.0 if same else 0.3))
    # every content word (and number) to its lemma hub: repeats reinforce each other through the hub, and the
    # edge grows with the lemma's count (sqrt: a topic word repeated 20 times should not drown everything else)
    content = [i for i in range(n) if not feats.is_stop[i] or feats.is_number[i]]
    counts = Counter(feats.lemma[i] for i in content)
    for i in content:
        g.add_edge(i, ("lemma", feats.lemma[i]), weight=float(np.sqrt(counts[feats.lemma[i]])))
    for lem in query_lemmas(query):
        g.add_node(("lemma", lem))  # a query term absent from the passage still exists, linked only by similarity
    if embed is not None:
        _link_similar_hubs(g, embed, config.similarity_threshold)
    return g


def _link_similar_hubs(g: nx.Graph, embed: Embed, threshold: float) -> None:
    hubs = [node for node in g.nodes if isinstance(node, tuple) and not _HAS_DIGIT.search(node[1])]
    if len(hubs) < 2:
        return
    vectors = np.asarray(embed([lem for _, lem in hubs]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-8)
    sims = vectors @ vectors.T
    rows, cols = np.nonzero(np.triu(sims, k=1) > threshold)
    for a, b in zip(rows.tolist(), cols.tolist()):
        g.add_edge(hubs[a], hubs[b], weight=float(sims[a, b]))


def _droppable_stopwords(feats: WordFeatures) -> np.ndarray:
    negation = np.fromiter((x in NEGATIONS for x in feats.norm), dtype=bool, count=len(feats.norm))
    return feats.is_stop & ~negation


def personalization(feats: WordFeatures, config: GraphConfig, query: Optional[str]) -> dict:
    """Random-jump prior: content words 1, stopwords ``stopword_weight``, plus boosts; a share on the query."""
    prior = np.where(_droppable_stopwords(feats), config.stopword_weight, 1.0)
    prior = (
        prior
        + config.number_boost * feats.is_number
        + config.quantity_boost * feats.is_quantity
        + config.unit_boost * feats.is_unit
        + config.entity_boost * feats.is_entity
        + config.question_boost * (feats.in_question & ~feats.is_stop)
    )
    weights = {i: float(p) for i, p in enumerate(prior)}
    lemmas = query_lemmas(query)
    if lemmas and config.query_weight > 0:
        # the query's share of total mass, split evenly over its terms
        total = float(prior.sum())
        per_term = total * config.query_weight / (1.0 - config.query_weight) / len(lemmas)
        for lem in lemmas:
            weights[("lemma", lem)] = per_term
    return weights


def score_words(
    words: Sequence[str],
    config: GraphConfig = GraphConfig(),
    *,
    query: Optional[str] = None,
    embed: Optional[Embed] = None,
) -> GraphScores:
    """Score every word of a prompt; long prompts are scored chunk by chunk (cost linear in length)."""
    n = len(words)
    scores = np.zeros(n, dtype=np.float64)
    protected = np.zeros(n, dtype=bool)
    if n == 0:
        return GraphScores(scores, protected)
    for lo, hi in chunk_bounds(words, config.chunk_words):
        chunk = words[lo:hi]
        feats = word_features(chunk)
        scores[lo:hi] = _score_chunk(chunk, feats, config, query, embed)
        if config.protect_numbers:
            protected[lo:hi] = feats.is_number
    return GraphScores(scores, protected)


def _score_chunk(words, feats: WordFeatures, config: GraphConfig, query, embed) -> np.ndarray:
    n = len(words)
    g = build_graph(words, feats, config, query=query, embed=embed)
    s = pagerank(g, alpha=config.damping, personalization=personalization(feats, config, query))[:n]
    # Links carry mass into stopwords as freely as into content words (a stopword next to a number would outrank
    # the sentence's nouns); scale them down after ranking so they go first when the budget is tight.
    s = np.where(_droppable_stopwords(feats), s * np.sqrt(config.stopword_weight), s)
    s = s / s.mean() if s.mean() > 0 else np.ones(n)
    if config.sentence_weight > 0:
        sums = np.bincount(feats.sentence, weights=s)
        counts = np.bincount(feats.sentence)
        s = (1 - config.sentence_weight) * s + config.sentence_weight * (sums / counts)[feats.sentence]
    return s


def pagerank(g: nx.Graph, *, alpha: float, personalization: dict, tol: float = 1e-6, max_iter: int = 100) -> np.ndarray:
    """Personalised PageRank of ``g``'s nodes (in ``g.nodes`` order) by power iteration on its weighted adjacency.

    The same fixed point as ``nx.pagerank`` (dangling nodes jump by the personalisation, the same stopping rule),
    computed with numpy alone: networkx's own version converts through scipy.sparse, whose import costs ~0.3 s,
    more than scoring a 1k-token prompt, and the graphs here are a few hundred nodes (one chunk), dense is fine.
    """
    nodes = list(g.nodes)
    size = len(nodes)
    adjacency = nx.to_numpy_array(g, nodelist=nodes, weight="weight", dtype=np.float64)
    out_weight = adjacency.sum(axis=1)
    dangling = out_weight == 0
    transition = np.divide(adjacency, out_weight[:, None], out=np.zeros_like(adjacency), where=~dangling[:, None])
    jump = np.fromiter((personalization.get(v, 0.0) for v in nodes), dtype=np.float64, count=size)
    jump = jump / jump.sum() if jump.sum() > 0 else np.full(size, 1.0 / size)
    x = np.full(size, 1.0 / size)
    for _ in range(max_iter):
        last = x
        x = alpha * (x @ transition + x[dangling].sum() * jump) + (1 - alpha) * jump
        if np.abs(x - last).sum() < size * tol:
            break
    return x


def chunk_bounds(words: Sequence[str], size: int) -> list[tuple[int, int]]:
    """Cut ``words`` into chunks of at most ``size`` words, preferring to end a chunk at a sentence end."""
    n = len(words)
    bounds, lo = [], 0
    while lo < n:
        hi = min(lo + size, n)
        if hi < n:
            # look back over the last quarter of the chunk for a sentence end
            for j in range(hi, lo + (3 * size) // 4, -1):
                if SENTENCE_END.search(words[j - 1]):
                    hi = j
                    break
        bounds.append((lo, hi))
        lo = hi
    return bounds
