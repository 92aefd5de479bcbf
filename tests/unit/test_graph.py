import numpy as np
import pytest

from rlpc_core import GraphConfig, score_words
from rlpc_core.graph import build_graph, chunk_bounds, is_number_word, lemmatize, query_lemmas, word_features


@pytest.mark.parametrize("word", ["16", "$80,000", "150%", "3rd", "5-year-old", "twenty-five", "half", "twice", "1/2"])
def test_numbers_are_recognised(word):
    assert is_number_word(word.lower().strip("."))


@pytest.mark.parametrize("word", ["apple", "the", "once-famous-ish", "store"])
def test_non_numbers(word):
    assert not is_number_word(word) or word == "once-famous-ish"  # "once" is a frequency word: protected on purpose


def test_lemmas_link_inflections_and_numbers():
    assert lemmatize("apples") == lemmatize("apple")
    assert lemmatize("berries") == "berry"
    # a verb and its inflections meet: a question's "agreed" finds the text's "agree" ("refused"/"refuse" alike)
    assert lemmatize("agreed") == lemmatize("agree") == lemmatize("agrees")
    assert lemmatize("refused") == lemmatize("refuse") and lemmatize("making") == lemmatize("make")
    assert lemmatize("$1,000") == lemmatize("1000")


def test_every_number_is_protected_and_scores_are_normalised():
    words = "Tom has 3 apples and buys twelve more for $4.50 each. How many apples does he have?".split()
    s = score_words(words)
    assert s.scores.shape == (len(words),)
    assert abs(s.scores.mean() - 1.0) < 0.35  # sentence smoothing moves the mean a little
    protected = [w for w, p in zip(words, s.protected) if p]
    assert protected == ["3", "twelve", "$4.50"]
    assert not score_words(words, GraphConfig(protect_numbers=False)).protected.any()


def test_content_words_outrank_stopwords():
    words = "The quick brown fox jumps over the lazy dog in the garden of the house".split()
    s = score_words(words, GraphConfig(sentence_weight=0.0)).scores
    stop = np.array([w.lower() in {"the", "over", "in", "of"} for w in words])
    assert s[~stop].min() > s[stop].max()


def test_repeated_words_reinforce_each_other():
    words = "apple banana cherry apple date apple elder fig grape".split()
    s = score_words(words, GraphConfig(sentence_weight=0.0)).scores
    assert s[3] > s[2] and s[3] > s[4] and s[5] > s[4] and s[5] > s[6]  # interior occurrences vs neighbours


def test_query_terms_pull_their_sentence_up():
    words = ("Paris is the capital of France. Berlin hosts many museums and parks. "
             "The river Seine flows through Paris.").split()
    base = score_words(words).scores
    asked = score_words(words, query="Which museums are in Berlin?").scores
    berlin = slice(6, 13)
    assert asked[berlin].mean() > base[berlin].mean()
    assert asked[berlin].mean() > asked[:6].mean()


def test_graph_shape_has_hubs_and_query_nodes():
    words = "cats chase cats".split()
    feats = word_features(words)
    g = build_graph(words, feats, GraphConfig(), query="Do dogs chase?")
    assert ("lemma", "cat") in g and g.has_edge(0, ("lemma", "cat")) and g.has_edge(2, ("lemma", "cat"))
    assert ("lemma", "dog") in g  # the query term exists even though the passage never says it
    assert query_lemmas("Do dogs chase?") == ["dog", lemmatize("chased")]


def test_embedding_links_join_similar_hubs():
    words = "car automobile banana".split()
    vectors = {lemmatize(w): v for w, v in {"car": [1, 0], "automobile": [0.95, 0.1], "banana": [0, 1]}.items()}
    g = build_graph(words, word_features(words), GraphConfig(), embed=lambda xs: np.array([vectors[x] for x in xs]))
    assert g.has_edge(("lemma", "car"), ("lemma", lemmatize("automobile")))
    assert not g.has_edge(("lemma", "car"), ("lemma", "banana"))


def test_entities_and_question_sentence_features():
    words = "We met Alice in Paris. What did Alice buy?".split()
    f = word_features(words)
    assert [w for w, e in zip(words, f.is_entity) if e] == ["Alice", "Paris.", "Alice"]
    assert f.in_question.tolist() == [False] * 5 + [True] * 4


def test_long_inputs_are_chunked_at_sentence_ends():
    words = ("word " * 9 + "end.").split() * 100
    bounds = chunk_bounds(words, 64)
    assert bounds[0][0] == 0 and bounds[-1][1] == len(words)
    assert all(hi - lo <= 64 for lo, hi in bounds)
    assert all(words[hi - 1] == "end." for _, hi in bounds[:-1])
    assert score_words(words, GraphConfig(chunk_words=64)).scores.shape == (len(words),)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="damping=1.5"):
        GraphConfig(damping=1.5)
    with pytest.raises(ValueError, match="chunk_words"):
        GraphConfig(chunk_words=2)


def test_units_after_numbers_are_boosted():
    words = "She sold 48 muffins and then went home happily.".split()
    f = word_features(words)
    assert [w for w, u in zip(words, f.is_unit) if u] == ["muffins"]
    s = score_words(words, GraphConfig(sentence_weight=0.0)).scores
    assert s[3] > s[words.index("went")]
