"""Prompt structure and meaning units, rule by rule (the selection that uses them is tested in test_meaning.py)."""

from __future__ import annotations

import pytest

from rlpc_core import Compressor
from rlpc_core.spans import strip_tags
from rlpc_core.structure import KIND_NAMES, analyze, json_spans, task_text
from rlpc_core.units import find_units
from rlpc_core.words import split_words


def kinds(text: str, query=None) -> dict[str, str]:
    clean, typed = strip_tags(text)
    words = split_words(clean)
    st = analyze(words, query=query, typed=typed)
    return {w: KIND_NAMES[k] for w, k in zip(words.tokens, st.kind)}


def units(text: str) -> list[tuple[str, str]]:
    words = split_words(text)
    u = find_units(words.tokens, words.line_breaks)
    return [(" ".join(words.tokens[a:b]), k) for (a, b), k in zip(u.spans, u.kinds)]


# ---------------------------------------------------------------- structure

def test_system_turn_context_and_user_question():
    k = kinds("System: Answer only from the context. Never promise refunds.\n\nContext:\nPlans cost $9 a month. "
              "Refunds are handled by billing.\n\nUser: I paid yesterday. Can I get a refund?")
    assert k["System:"] == "role" and k["Never"] == "instruction" and k["Context:"] == "heading"
    assert k["Plans"] == "context" and k["billing."] == "context"
    assert k["User:"] == "role" and k["paid"] == "question" and k["refund?"] == "question"  # the setup goes with it


def test_a_separate_query_means_no_question_is_looked_for_in_the_text():
    k = kinds("Paris is in France. Is Lyon in France too?", query="Where is Paris?")
    assert k["Lyon"] == "context"


def test_options_inline_and_one_per_line_and_their_question():
    k = kinds("Reply with the letter only.\n\nQuestion: Which is NOT prime?\n(A) 2 (B) 3 (C) 9")
    assert k["Reply"] == "instruction" and k["NOT"] == "question" and k["(A)"] == "option" and k["9"] == "option"
    k = kinds("Pick one.\nWhat colour is the sky?\nA) red\nB) blue\nC) green")
    assert k["A)"] == "option" and k["green"] == "option"
    assert kinds("Our plan has three parts: (A) design and (C) launch.")["(A)"] == "context"  # not A, B, C in order


def test_few_shot_demonstrations_and_the_question_asked():
    text = ("Answer like the examples.\n\nQ: What is 2 plus 3?\nA: 5\n\nQ: What is 4 plus 4?\nA: 8\n\n"
            "Q: What is 6 plus 8?\nA:")
    clean = split_words(text)
    st = analyze(clean)
    by_word = list(zip(clean.tokens, st.kind, st.demo))
    demos = {d for _, k, d in by_word if KIND_NAMES[k] == "demonstration"}
    assert demos == {0, 1}
    assert [KIND_NAMES[k] for w, k, _ in by_word if w == "8?"] == ["question"]
    # FAQ entries are units too, and the customer's question after them is not part of the last one
    k = kinds("Q: Do you ship abroad?\nA: Yes, to the EU.\nQ: Can I return earrings?\nA: No.\n"
              "Customer question: I bought earrings on 2 June. Can I send them back?")
    assert k["bought"] == "question" and k["abroad?"] == "demonstration"


def test_a_worked_example_keeps_its_final_answer_line_and_loses_it_with_itself():
    # GSM8K's worked solutions end with "#### 72", which reads as a markdown heading: it belongs to its example, so
    # an example the budget drops takes its answer with it (before, 9 of 12 answers outlived their examples)
    demos = [(f"A baker made {n} rolls in the morning and half as many in the afternoon. How many rolls did she "
              f"make in all?\nAnswer: In the afternoon she made {n}/2 = {n // 2} rolls.\nIn all she made {n}+{n // 2} "
              f"= {n + n // 2} rolls.\n#### {n + n // 2}") for n in (48, 60, 72, 84, 96, 108)]
    text = "\n\n".join(f"Question: {d}" for d in demos)
    clean = split_words(text)
    st = analyze(clean)
    answer_kinds = {KIND_NAMES[k] for w, k in zip(clean.tokens, st.kind) if w == "####"}
    assert answer_kinds == {"demonstration"}
    out = Compressor().compress(text, rate=0.33).text
    kept_examples = out.count("Question:")
    assert 0 < kept_examples < len(demos) and out.count("####") == kept_examples


def test_passages_and_options_are_not_demonstrations():
    k = kinds("Passage: The salt works closed in 1890.\n\nQuestion: Why did they close?\nA) floods\nB) prices\n\n"
              "Reply with the letter only.")
    assert k["salt"] == "context" and k["A)"] == "option" and k["Why"] == "question"


def test_instructions_at_the_edges_and_format_cues_anywhere():
    k = kinds("You are a careful assistant for Kestrel Bank. Use only the passages below.\n\nPassages:\n"
              "Cards are blocked after three wrong PINs. Call us to unblock them.\n\n"
              "Which rule applies? Answer in one word.")
    assert k["careful"] == "instruction" and k["Use"] == "instruction"  # the opening paragraph addresses the model
    assert k["Call"] == "context"  # an imperative inside the retrieved context is content
    assert k["word."] == "instruction"
    assert kinds("Mark is a copy-editor. He edits 10 pages a day. How many pages in a week?")["Mark"] == "context"
    assert kinds("For each bug, give the line and a fix.\n\nThe code is below.")["give"] == "instruction"


def test_a_passage_that_only_looks_like_orders_is_context():
    # a one-paragraph passage: every sentence sits at an edge, where imperatives would count as the prompt's orders
    passage = ("He sent his envoy Odo, Count of Arles, to the synod in 1052. Only a few hundred copies survive. "
               "Only Norway and Chile have hosted the race twice. \"Take Me Home Tonight\" is a single by the band. "
               "Do You Remember was their second album. In English, the town is also spelled Aachen. "
               "The crew return in 2019 for a second season. For example, consider the case of the lighthouse. "
               "The show would return with six new episodes. Leeds would answer in the second half. Mark Ellery was "
               "named editor. Only 4120 firms had a licence.")
    k = kinds(passage, query="Who was sent to the synod?")
    orders = [w for w, kind in k.items() if kind == "instruction"]
    assert orders == [], orders
    # the same forms that are orders stay orders
    k = kinds("Only answer from the passage. Do NOT guess. Write Python code if asked. If a date is missing, say so. "
              "Reply in English only. If unsure, reply with unknown. You must respond in French.\n\nPassage: the pier "
              "opened in 1871.", query="When did the pier open?")
    assert all(k[w] == "instruction" for w in ("answer", "guess.", "Python", "say", "English", "unknown.", "French."))


def test_a_closing_task_is_the_ask_not_a_question_inside_the_material():
    # a meeting's "Anything else?" and an earlier chat turn's question are material; the closing order is the ask
    meeting = ("[00:02] Ana: Completion is 62 percent. [00:40] Ben: Is that the widget? [01:10] Ana: Partly. "
               "Anything else? No? Thanks all.\nSummarise this meeting in three bullet points.")
    k = kinds(meeting)
    assert k["Summarise"] == "instruction" and "question" not in k.values(), k
    chat = ("User: Can you plan meals for next week? I cook for two.\nAssistant: Sure. Any allergies?\nUser: None. "
            "Is it normal for a rice cooker to smell of plastic?\nAssistant: Yes, run it once with water.\n"
            "User: Thanks. Now write me one shopping list for the whole week.")
    k = kinds(chat)
    assert k["shopping"] == "instruction" and k["rice"] == "context", k
    # a question followed by a format order is still the question asked
    assert kinds("The pier opened in 1871.\n\nWhen did the pier open? Answer with a year only.")["1871."] == "context"
    assert kinds("The pier opened in 1871.\n\nWhen did the pier open? Answer with a year only.")["open?"] == "question"
    # ... and so it is before a closing order about the answer's form
    k = kinds("Tom has 3 apples and buys 4 more. How many apples does he have now? Write only the number.")
    assert k["now?"] == "question", k
    assert kinds("I want you to answer with yes or no. Is the pier older than the station?")["want"] == "instruction"


def test_what_the_answering_side_said_gives_the_model_no_order():
    chat = ("User: Is the curry spicy?\nAssistant: It is mild. You can add chilli flakes at the table.\n"
            "User: Thanks. Always reply in French from now on.")
    k = kinds(chat)
    assert k["chilli"] == "context" and k["French"] == "instruction", k


def test_a_messages_routing_headers_count_for_less():
    mail = ("From: Ana Silva <ana@example.com>\nTo: Ben Okafor <ben@example.com>\nDate: Tue, 11 June 2024\n"
            "Subject: Licences\n\nWe agree to 3 more licences from 1 July.")
    words = split_words(mail)
    st = analyze(words)
    prior = dict(zip(words.tokens, st.prior))
    assert prior["<ana@example.com>"] < 0 and prior["<ben@example.com>"] < 0 and prior["Licences"] == 0
    assert prior["agree"] == 0
    # one "Date:" line alone is a fact, not routing
    one = split_words("Date: 11 June 2024\nThe meeting moved to room 4.")
    assert not (analyze(one).prior < 0).any()


def test_headings_list_markers_code_json_and_boilerplate():
    text = ("## Returns\n- Items can be returned within 30 days.\n- Opened cosmetics cannot be returned.\n\n"
            "```python\nprint('hi')\n```\n\nPayload: {\"id\": 7, \"tags\": [\"a\"]}\n\nKind regards,\nMaria Lopez\n"
            "Head of Support")
    clean = split_words(text)
    st = analyze(clean, verbatim_spans=[(text.index("```"), text.index("```", text.index("```") + 3) + 3)])
    k = {w: KIND_NAMES[x] for w, x in zip(clean.tokens, st.kind)}
    assert k["##"] == "heading" and k["Returns"] == "heading" and k["-"] == "marker" and k["print('hi')"] == "keep"
    assert k['{"id":'] == "json" and k['["a"]}'] == "json"
    prior = dict(zip(clean.tokens, st.prior))
    assert prior["regards,"] < 0 and prior["Lopez"] < 0 and prior["Items"] == 0
    assert json_spans('config = {"a": 1} and [1] in prose') == [(9, 17)]


def test_typed_markup_overrides_detection():
    k = kinds("<question>Summarise the thread.</question> Anna wrote on Monday. <demo>Q: x? A: y.</demo> "
              "<compress>Reply with the letter only.</compress>")
    assert k["Summarise"] == "question" and k["x?"] == "demonstration" and k["letter"] == "context"


def test_task_text_is_the_question_or_the_closing_instruction():
    words = split_words("Notes from the meeting.\n\nGive me a checklist of what to do, with dates.")
    assert task_text(words, analyze(words)).startswith("Give me a checklist")


def test_the_question_is_a_whole_sentence_across_abbreviations():
    # the structure and the selection cut sentences by one rule: "P.T.O." and "Dr." end no sentence, nor does a
    # full stop before a word in lower case ("at 5 p.m. on Friday")
    text = "Dr. Mehta runs the P.T.O. shop. It opens at 5 p.m. on Fridays. How much did the P.T.O. spend on shirts?"
    words = split_words(text)
    asked = [w for w, k in zip(words.tokens, analyze(words).kind) if KIND_NAMES[k] == "question"]
    assert " ".join(asked) == "How much did the P.T.O. spend on shirts?"


# ---------------------------------------------------------------- meaning units

@pytest.mark.parametrize("text, unit", [
    ("Refunds are not available for Enterprise.", "are not available"),
    ("You must never share your password.", "must never share"),
    ("Version 3 is no longer supported.", "is no longer supported."),
    ("Deleted files cannot be restored.", "cannot be restored."),
    ("Ce produit n'est pas disponible.", "n'est pas disponible."),
    ("Passwords need at least 12 characters today.", "at least 12 characters"),
    ("Send it no later than April 30, 2025 please.", "no later than April 30, 2025"),
    ("Die Rückgabe ist nicht später als bis zum 30. April möglich.", "nicht später als bis zum 30. April"),
    ("It sold 48 muffins yesterday.", "48 muffins"),
    ("A bakery sells muffins for $3 each.", "muffins for $3 each."),
    ("It sold twice as many cookies as muffins.", "twice as many cookies"),
    ("The card draws 450 watts at peak.", "450 watts"),
    # what a quantity is counted per belongs to it: "$12" alone is not a wage, "twice" alone not a schedule
    ("Weng earns $12 an hour for babysitting.", "$12 an hour"),
    ("He writes to 2 friends twice a week now.", "twice a week"),
    ("Take 2 pills 3 times a day with water.", "3 times a day"),
    ("He gets a $5 allowance a month from them.", "$5 allowance a month"),
    ("Founded by Claire Dubois in Lyon.", "Claire Dubois"),
    ("She joined Holland America Line in 1990.", "Holland America Line"),
    ("Both teams play in NCAA Division I in the Pac-12.", "NCAA Division I"),  # a numeral, not the pronoun
    ("Deposits at the Bank of New Zealand grew.", "Bank of New Zealand"),
    ("The call is on Monday, 3 March at 10:30 am.", "Monday, 3 March at 10:30 am."),
    ("Doors open at 14:00 CET sharp.", "14:00 CET"),
    ('"Have I Told You Lately" is a hit song by Van Morrison.', '"Have I Told You Lately"'),
    ("In show business he goes by the name 'James P. Flynn'. He lives in Boston.", "'James P. Flynn'."),
    ("Son dernier livre, « La mer à boire », est sorti.", "« La mer à boire »,"),
    ("The “least privilege” rule applies, she said.", "“least privilege”"),
])
def test_units(text, unit):
    assert unit in [u for u, _ in units(text)], units(text)


def test_the_pronoun_i_joins_no_name():
    assert not units("Anna and I went home. Then I left Paris. Weeknights I cook.")


def test_a_quantity_takes_only_a_period_or_measure_after_a():
    # "a friend" is not what 3 apples are counted per
    assert "3 apples" in [u for u, _ in units("She gave 3 apples a friend had picked.")]


def test_quotations_are_short_and_close_on_their_own_mark():
    kinds = lambda text: {u: k for u, k in units(text)}  # noqa: E731
    assert not [u for u, k in units("It's the '90s and rock 'n' roll was king.") if "quotation" in k]
    long = '"' + " ".join(["word"] * 12) + '" and more'
    assert not [u for u, k in units(long) if "quotation" in k]  # a long quotation is ordinary text
    assert not [u for u, k in units('He said "yes\nand no" twice.') if "quotation" in k]  # one line at most
    assert "quotation" in kinds('Call it "done" or "Project Blue Sky" today.').get('"Project Blue Sky"', "")


def test_no_unit_crosses_a_line_break_or_starts_with_a_sentence_opener():
    found = [u for u, _ in units("## Handbook: Leave\nAnnual leave is 25 days.\nContact Claire Dubois.")]
    assert "Leave Annual" not in " | ".join(found) and "Claire Dubois." in found and "Contact Claire Dubois." not in found
    assert not [u for u, k in units("The Company sells tea.") if k == "name"]
