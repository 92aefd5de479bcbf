"""The guide: a small reader's answer to the query points the selection at the sentence that holds it.

These tests fix the guide's answer (``Guide.answer`` replaced) to check what rlpc does with an answer: where it is
found, how it moves the ranking, when the guide is not asked, and that a failing guide costs nothing but itself. A
real reader runs as the guide in ``tests/integration/test_readers.py``.
"""

from __future__ import annotations

import pytest

from rlpc_core import Compressor
from rlpc_core.guide import MAX_ANSWER_WORDS, Guide, answer_mask
from rlpc_core.words import split_words

# The question shares its words with the first sentence; its answer, a name, is in the last one.
TEXT = ("The Harbour Line opened in the port city of Kessel in 1902 and was the first tram line of the city. Its "
        "green cars ran every ten minutes between the docks and the cathedral square. Its route was drawn by Ilse "
        "Marten, a surveyor from Rostock.")
QUERY = "who designed the first tram line of Kessel"
SPEC = "smollm2-135m-instruct"  # builds without loading: every answer below is fixed by the test


def kept(mask, text):
    words = split_words(text)
    return [w for w, m in zip(words.tokens, mask) if m]


def test_the_answer_is_found_word_for_word_wherever_it_occurs():
    text = "Ilse Marten drew it. The Marten family lived in Rostock, where Ilse Marten, a surveyor, was born."
    assert kept(answer_mask(split_words(text), "Ilse Marten"), text) == ["Ilse", "Marten", "Ilse", "Marten,"]
    # case, edge punctuation and a leading article do not count
    assert kept(answer_mask(split_words(text), "the ROSTOCK."), text) == ["Rostock,"]


def test_the_answer_is_found_inside_joined_words_and_possessives():
    # one written word may hold two ("the narrator—Marten, writing"); a possessive or a symbol does not count
    text = "In Rostock, the narrator—Ilse Marten, writing as Hugo & Luigi—is Marten's subject."
    words = split_words(text)
    assert kept(answer_mask(words, "Ilse Marten"), text) == ["narrator—Ilse", "Marten,"]
    assert kept(answer_mask(words, "Hugo & Luigi"), text) == ["Hugo", "&", "Luigi—is"]
    assert kept(answer_mask(words, "Marten"), text) == ["Marten,", "Marten's"]


@pytest.mark.parametrize("answer", ["", "the", "it was", "Hamburg", " ".join(["word"] * (MAX_ANSWER_WORDS + 1))])
def test_an_answer_that_points_nowhere_changes_nothing(answer):
    text = "It was Ilse Marten who drew the route, word for word."
    assert not answer_mask(split_words(text), answer).any()


def test_the_guides_answer_moves_its_sentence_up(monkeypatch):
    monkeypatch.setattr(Guide, "answer", lambda self, text, query: "Ilse Marten")
    # its sentence ranks second and its short form misses the room left by a token: it is cut to fit, the answer
    # first, rather than skipped for the third sentence
    guided = Compressor(guide=SPEC).compress(TEXT, rate=0.5, query=QUERY)
    plain = Compressor().compress(TEXT, rate=0.5, query=QUERY)
    assert "Ilse Marten" in guided.text and guided.budget_met and guided.fallback is None, guided
    assert "Ilse Marten" not in plain.text, plain.text  # the counterfactual: lexical coverage alone keeps sentence 1


def test_the_guide_is_asked_only_with_a_query(monkeypatch):
    def refuse(self, text, query):
        raise AssertionError("the guide was asked without a query")

    monkeypatch.setattr(Guide, "answer", refuse)
    out = Compressor(guide=SPEC).compress(TEXT + " Who drew the route?", rate=0.5)
    assert out.fallback is None and out.budget_met


def test_a_failing_guide_compresses_without_it_and_says_why(monkeypatch):
    def down(self, text, query):
        raise ConnectionError("reader at http://127.0.0.1:9 is not answering")

    monkeypatch.setattr(Guide, "answer", down)
    out = Compressor(guide=SPEC).compress(TEXT, rate=0.33, query=QUERY)
    plain = Compressor().compress(TEXT, rate=0.33, query=QUERY)
    assert out.text == plain.text and out.budget_met
    assert "guide 'smollm2-135m-instruct' raised ConnectionError" in out.fallback and "without it" in out.fallback


def test_the_guide_is_a_setting_checked_at_construction_and_saved(tmp_path):
    for bad in ("", "  ", 3):
        with pytest.raises(ValueError, match="guide=.* must be None or a reader spec"):
            Compressor(guide=bad)
    with pytest.raises(Exception, match="no such file"):
        Compressor(guide="llamacpp:no/such/model.gguf")
    with pytest.raises(ValueError, match="n_ctx is not a setting of transformers readers"):
        Compressor(guide=SPEC, guide_options={"n_ctx": 16384})  # the reader's own settings, checked by it
    with pytest.raises(ValueError, match="guide_options=.* must be a dict"):
        Compressor(guide=SPEC, guide_options=[("n_ctx", 1)])
    Compressor(guide=SPEC, guide_options={"batch_size": 2}, selection={"guide_bonus": 3.0}).save_pretrained(tmp_path)
    loaded = Compressor.from_pretrained(tmp_path)
    assert loaded.config.guide == SPEC and loaded.config.selection.guide_bonus == 3.0
    assert repr(loaded) == f"Compressor(policy='graph', tokenizer='smollm2-135m-instruct', guide={SPEC!r})"
    import pickle  # frameworks that pickle components (worker processes) get the guide back, rebuilt

    again = pickle.loads(pickle.dumps(loaded))
    assert again.guide is not None and again.guide.spec == SPEC and again.config == loaded.config
    assert loaded.config.guide_options == {"batch_size": 2} and loaded.guide.evaluator.batch_size == 2


def test_a_shared_budget_asks_the_guide_once_per_query_over_every_document(monkeypatch):
    pytest.importorskip("langchain_core", reason="the langchain extra is not installed")
    from langchain_core.documents import Document

    from langchain_rlpc import RLPCDocumentCompressor

    asked = []
    monkeypatch.setattr(Guide, "answer", lambda self, text, query: asked.append(text) or "Ilse Marten")
    docs = [Document(page_content=p + ".", metadata={"i": i}) for i, p in enumerate(TEXT.split(". "))]
    out = RLPCDocumentCompressor(shared_budget=True, rate=0.5, compressor_kwargs={"guide": SPEC}).compress_documents(
        docs, QUERY)
    assert len(asked) == 1 and all(d.page_content.rstrip(".") in asked[0] for d in docs)  # one call, all documents
    assert any("Ilse Marten" in d.page_content for d in out)


def test_a_sentence_cut_to_fit_keeps_the_guides_answer_first(monkeypatch):
    # The answering sentence is too long for the budget and must be cut to its best words. Names and dates are what
    # meaning units protect, and there are several of each here; "which artist ..." does not say by its opening that
    # it asks for a name, so without the guide the words beside the question's take the room and "Marta Olsen" is
    # cut. The guide's answer goes first.
    text = ("Marta Olsen (born March 3, 1950 – died June 9, 2011) was a Danish sculptor, best known for carving the "
            "Harbour Lion of Aarhus on 14 May 1988.  Born in Vejle, Denmark, she died in Lyon, France.")
    query = "which artist carved the harbour lion of aarhus in 1988"
    monkeypatch.setattr(Guide, "answer", lambda self, t, q: "Marta Olsen")
    guided = Compressor(guide=SPEC).compress(text, rate=0.33, query=query)
    assert "Marta Olsen" in guided.text and guided.budget_met, guided.text
    assert "Marta Olsen" not in Compressor().compress(text, rate=0.33, query=query).text


def test_the_guides_answer_keeps_its_room_when_a_sentence_ranked_above_takes_the_budget(monkeypatch):
    # The second sentence shares most of the question's words, ranks first and does not fit even in its short form:
    # cut to fit, it took the whole budget (dates, "becoming serving") and the name the guide found in the first
    # sentence was never reached; kept, the name was then the first words an overshoot trimmed, its sentence being
    # the least valuable. The guide's answer keeps its room, and its sentence is trimmed last.
    text = ("The board, worried about the paper's future, turned to Ada Whitcombe, its Lisbon correspondent.  She took "
            "over as editor of the Harbour Gazette on March 4, 1971, and stayed with the paper until her retirement "
            "on May 30, 1999, becoming the longest serving editor in the paper's history.")
    query = "who had the longest tenure as editor of the harbour gazette"
    monkeypatch.setattr(Guide, "answer", lambda self, t, q: "Ada Whitcombe")
    for rate in (0.33, 0.5):
        guided = Compressor(guide=SPEC).compress(text, rate=rate, query=query)
        assert "Ada Whitcombe" in guided.text and guided.budget_met, guided.text
        assert "May 30, 1999" in guided.text, guided.text  # the sentence ranked first still gets the rest
        assert "Ada Whitcombe" not in Compressor().compress(text, rate=rate, query=query).text


def test_the_sentence_the_guide_points_at_is_kept_whole_when_it_fits(monkeypatch):
    # Its filler may be part of the answer: cut to its short form, "depends on the type of reduction being used"
    # became "depends on type reduction used", which no longer holds the answer the guide found.
    text = ("Of course, the notion of hard problems depends on the type of reduction being used. For complexity classes "
            "larger than P, polynomial-time reductions are commonly used. In particular, the set of problems that are "
            "hard for NP is the set of NP-hard problems. Many researchers have written about these classes over the "
            "years.")
    query = "The complexity of problems often depends on what?"
    monkeypatch.setattr(Guide, "answer", lambda self, t, q: "the type of reduction being used")
    answer_sentence = "Of course, the notion of hard problems depends on the type of reduction being used."
    for rate in (0.5, 0.6):
        guided = Compressor(guide=SPEC).compress(text, rate=rate, query=query)
        assert answer_sentence in guided.text and guided.budget_met, guided.text
        assert answer_sentence not in Compressor().compress(text, rate=rate, query=query).text  # cut without a guide


def test_the_guides_second_guess_ranks_its_sentence_above_the_unrelated_ones(monkeypatch):
    # A wrong answer ("the docks") and, where the guide was less sure how to begin, its second guess: the name. The
    # second guess's sentence ranks above the sentences nothing points at; asked only when its share of the bonus
    # is not 0.
    text = ("The Harbour Line opened in the port city of Kessel in 1902. Its green cars ran every ten minutes between "
            "the docks and the cathedral square. Its route was drawn by Ilse Marten, a surveyor from Rostock. Its cars "
            "were painted a darker green in 1920 and again in 1931.")
    query = "who designed the Harbour Line"
    monkeypatch.setattr(Guide, "answer", lambda self, t, q: "the docks")
    monkeypatch.setattr(Guide, "runner_up", lambda self, t, q, a: ("Ilse Marten", 0.2))
    out = Compressor(guide=SPEC).compress(text, rate=0.6, query=query)
    assert "drawn by Ilse Marten" in out.text and "docks" in out.text and "1931" not in out.text, out.text
    assert out.budget_met and out.fallback is None

    def refuse(self, t, q, a):
        raise AssertionError("the second guess was asked for with guide_runner_up=0")

    monkeypatch.setattr(Guide, "runner_up", refuse)
    alone = Compressor(guide=SPEC, selection={"guide_runner_up": 0}).compress(text, rate=0.6, query=query)
    assert "Ilse Marten" not in alone.text and "1931" in alone.text, alone.text


def test_a_second_guess_needs_a_reader_that_can_force_a_first_token(monkeypatch):
    # a server or transformers guide gives its answer alone: no error, no second guess, nothing loaded for it
    guide = Compressor(guide=SPEC).guide
    assert guide.runner_up(TEXT, QUERY, "Ilse Marten") is None


def test_of_a_long_text_the_guide_reads_the_paragraphs_that_cover_the_query(monkeypatch):
    # Its time grows with what it reads: with guide_reads, of a long text it gets the paragraph that covers the
    # question best, whole (the answer's sentence shares no word with the question), in reading order, within that
    # many tokens; its answer is then found in the whole text.
    filler = ("The valley's orchards were planted in rows along the river, and every spring the growers met at the "
              "old mill to agree on the price of apples, pears and plums for the season. ")
    paragraphs = [filler * 3, TEXT, filler * 3]
    text = "\n\n".join(p.strip() for p in paragraphs)
    read = []
    monkeypatch.setattr(Guide, "answer", lambda self, t, q: read.append(t) or "Ilse Marten")
    out = Compressor(guide=SPEC, selection={"guide_reads": 80}).compress(text, rate=0.33, query=QUERY)
    assert read and TEXT in read[-1] and "orchards" not in read[-1], read
    assert "Ilse Marten" in out.text and out.budget_met, out.text
    Compressor(guide=SPEC).compress(text, rate=0.33, query=QUERY)
    assert read[-1] == text  # 0 (the default) reads the whole text
    Compressor(guide=SPEC, selection={"guide_reads": 512}).compress(TEXT, rate=0.33, query=QUERY)
    assert read[-1] == TEXT  # a text within guide_reads is read as it is
