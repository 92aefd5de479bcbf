import re

import numpy as np
import pytest

from rlpc_core.spans import check_protect, find_protected, merge_spans, spans_survive, strip_markup
from rlpc_core.words import join_kept, split_words, words_in_spans


def test_split_words_keeps_offsets_and_punctuation():
    w = split_words("  He paid $80,000.\nThen 150%  more. ")
    assert w.tokens == ["He", "paid", "$80,000.", "Then", "150%", "more."]
    assert all(w.text[s:e] == t for s, e, t in zip(w.starts, w.ends, w.tokens))


def test_join_keeps_runs_verbatim_and_never_glues():
    text = "a  b\tc\n\nd e f"
    w = split_words(text)
    assert join_kept(w, np.ones(len(w), bool)) == text
    keep = np.array([True, False, True, False, True, True])
    assert join_kept(w, keep) == "a\tc\ne f"  # the dropped stretch crossed a newline: one survives
    assert join_kept(w, np.zeros(len(w), bool)) == ""


def test_words_in_spans_marks_every_touched_word():
    text = "alpha beta gamma delta"
    w = split_words(text)
    mask = words_in_spans(w, [(text.index("eta"), text.index("gam") + 2)])
    assert mask.tolist() == [False, True, True, False]


def test_markup_is_removed_and_spans_point_at_the_clean_text():
    clean, spans = strip_markup("Keep <keep>this exact bit</keep> and <keep>that</keep>.")
    assert clean == "Keep this exact bit and that."
    assert [clean[s:e] for s, e in spans] == ["this exact bit", "that"]


@pytest.mark.parametrize("bad, fragment", [
    ("a <keep>b", "never closed"),
    ("a </keep> b", "no matching"),
    ("<keep>a <keep>b</keep></keep>", "cannot nest"),
])
def test_bad_markup_is_a_clear_error(bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        strip_markup(bad)


def test_protect_strings_regexes_and_code_fences():
    text = "Call foo() then bar.\n```python\nx = 1\n```\nID AB-123 and AB-456."
    spans = find_protected(text, check_protect(["foo()", re.compile(r"AB-\d+")]))
    found = [text[s:e] for s, e in spans]
    assert "foo()" in found and "AB-123" in found and "AB-456" in found
    assert any(f.startswith("```python") and f.rstrip().endswith("```") for f in found)
    assert not any("```" in text[s:e] for s, e in find_protected(text, (), keep_code=False))


def test_unclosed_fence_protects_to_the_end():
    text = "intro\n```\ncode line\nmore code"
    (span,) = find_protected(text, ())
    assert text[span[0]:span[1]].endswith("more code")


def test_check_protect_rejects_bad_items():
    with pytest.raises(TypeError, match="re.compile"):
        check_protect([42])
    with pytest.raises(ValueError, match="empty string"):
        check_protect([""])
    assert check_protect("x") == ("x",)


def test_merge_and_survival():
    assert merge_spans([(5, 8), (0, 3), (2, 4), (8, 9)]) == [(0, 4), (5, 9)]
    src = "one two three four"
    assert spans_survive([(4, 7), (14, 18)], src, "two four")
    assert not spans_survive([(4, 7)], src, "one three")
