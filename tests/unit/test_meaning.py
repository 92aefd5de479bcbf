"""Compression that keeps meaning: structure, meaning units and coarse-to-fine selection on hand-written prompts.

``tests/unit/meaning/cases_*.yaml`` holds 158 prompts written for this suite (support RAG with system prompts,
policies full of negations, few-shot multiple choice, output-format instructions, JSON, code review requests,
email threads, names, units, dates, German/French/Spanish), each with the units a careful human editor would keep
at rate 0.5 (``must_keep``). An item counts as kept when its words survive in order; only the function words a
reader does without (articles, "is/are", pronouns, "of/to/in/for/with") may be missing. Every case is checked
for the invariants that hold whatever the budget (units whole, JSON and code intact, the prompt's questions and
options kept); the share of all items kept is a floor measured on this suite (graph 610/697 = 0.88, extractive
601/697 = 0.86 on 7 December 2026; plain word selection 191/697 = 0.27), so a regression fails. Items whose keeping needs judgement beyond the words (the answer to a
paraphrased question) are what the reader-measured benchmarks and the trained policy are for.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from rlpc_core import Compressor
from rlpc_core.selection import filler_mask, sentence_ids
from rlpc_core.units import find_units
from rlpc_core.words import split_words

CASES = [case for path in sorted((Path(__file__).parent / "meaning").glob("cases_*.yaml"))
         for case in yaml.safe_load(path.read_text(encoding="utf-8"))]
# What a reader does without; not negations, modals or relations in time and quantity (before, only, than, or).
DROPPABLE = frozenset("""a an the is are was were be been being am it its this that these those of to in on at by
    for with from as and so very just also which who what do does did has have had i me my we our us you your he
    him his she her they them their""".split())
_EDGE = re.compile(r"^[^\w$€£%]+|[^\w%]+$")
FLOOR = {"graph": 0.82, "extractive": 0.82}


def item_kept(item: str, output: str) -> bool:
    """The item's words, in order, in the output; droppable function words may be missing."""
    out = [_EDGE.sub("", w) for w in output.split()]
    j = 0
    for word in item.split():
        w = _EDGE.sub("", word)
        if not w or w.lower() in DROPPABLE:
            continue
        while j < len(out) and out[j] != w:
            j += 1
        if j == len(out):
            return False
        j += 1
    return True


@pytest.fixture(scope="module")
def compressors():
    return {"graph": Compressor(), "extractive": Compressor(policy="extractive")}


@pytest.fixture(scope="module")
def outputs(compressors):
    # one batch call per policy: the extractive policy scores all the prompts in shared forward passes
    prompts, queries = [c["prompt"] for c in CASES], [c.get("query") for c in CASES]
    return {name: dict(zip([c["id"] for c in CASES], comp.compress_batch(prompts, rate=0.5, query=queries)))
            for name, comp in compressors.items()}


def test_the_suite_is_what_it_claims():
    assert len(CASES) >= 150 and len({c["id"] for c in CASES}) == len(CASES)
    categories = {c["category"] for c in CASES}
    assert {"support_rag", "policy_negation", "fewshot_mc", "output_format", "json", "code_review", "email_thread",
            "names", "units", "dates", "non_english"} <= categories
    for case in CASES:
        for item in case["must_keep"]:
            assert item in case["prompt"], (case["id"], item)


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_invariants_on_every_case(case, outputs):
    prompt = case["prompt"]
    words = split_words(prompt)
    for name, results in outputs.items():
        r = results[case["id"]]
        kept = np.asarray(r.kept, dtype=bool)
        assert [w for w, k in zip(words.tokens, kept) if k] == r.text.split(), name  # a subsequence, in order
        for lo, hi in find_units(words.tokens, words.line_breaks).spans:  # units are kept whole or not at all
            assert kept[lo:hi].all() or not kept[lo:hi].any(), (name, " ".join(words.tokens[lo:hi]), r.text)
        for item in case["must_keep"]:
            if item.rstrip().endswith("?") or re.match(r"^\(?[A-J][).]\s", item):  # questions and options
                assert item_kept(item, r.text), (name, item, r.text)
        if case.get("expect_json"):
            assert case["json_text"] in r.text, name
            json.loads(case["json_text"])
        for block in re.findall(r"```.*?```", prompt, flags=re.DOTALL):
            assert block in r.text, name  # code comes out whole
        assert r.budget_met or r.ratio > 0.5, name  # a missed budget only when what must stay exceeds it


@pytest.mark.parametrize("policy", ["graph", "extractive"])
def test_the_units_an_editor_keeps(policy, outputs):
    results = outputs[policy]
    kept = total = 0
    by_category: dict[str, list[int]] = {}
    for case in CASES:
        got = [item_kept(item, results[case["id"]].text) for item in case["must_keep"]]
        kept += sum(got)
        total += len(got)
        by_category.setdefault(case["category"], [0, 0])
        by_category[case["category"]][0] += sum(got)
        by_category[case["category"]][1] += len(got)
    share = kept / total
    report = ", ".join(f"{k} {a}/{b}" for k, (a, b) in sorted(by_category.items()))
    assert share >= FLOOR[policy], f"{policy}: {kept}/{total} items kept ({share:.3f}); {report}"
    assert np.mean([results[c["id"]].budget_met for c in CASES]) >= 0.85  # 140/158 measured


def test_before_this_change_far_fewer_units_survived(outputs):
    """The same suite with plain word selection (the graph's scores, numbers protected): what users got before."""
    plain = Compressor(selection={"words_only": True})
    kept = sum(item_kept(i, plain.compress(c["prompt"], rate=0.5, query=c.get("query")).text)
               for c in CASES for i in c["must_keep"])
    now = sum(item_kept(i, outputs["graph"][c["id"]].text) for c in CASES for i in c["must_keep"])
    assert now >= kept + 200, (now, kept)


# ---------------------------------------------------------------- the examples of the issue, one by one

def test_negations_keep_what_they_negate():
    c = Compressor(tokenizer="words")
    text = ("Our plans differ in price and support. Refunds are not available for the Enterprise plan after the first "
            "30 days. The Starter plan includes email support and 10 GB of storage. Enterprise customers get a "
            "dedicated account manager. Can I get a refund on Enterprise after two months?")
    for rate in (0.5, 0.7):
        out = c.compress(text, rate=rate).text
        assert "not available" in out and "Enterprise" in out and "30 days" in out, out
    de = Compressor(tokenizer="words").compress(
        "Die Rückgabe ist nicht später als bis zum 30. April möglich. Danach gilt der normale Umtausch im Laden, "
        "aber nur mit Kassenbon und Originalverpackung. Bis wann kann ich die Ware zurückgeben?", rate=0.5).text
    assert "nicht später als bis zum 30. April" in de, de


def test_a_rag_prompt_keeps_its_instructions_and_its_question():
    prompt = ("System: Answer only from the context. Never promise refunds. If the answer is not in the context, "
              "say you will escalate.\n\nContext:\nThe Pro plan costs $29 per month and has a 98.7% uptime target. "
              "Service credits of 10% are given for each hour below target. Credits are applied to the next invoice "
              "and cannot be paid out in cash. The Starter plan has no uptime target. Our office in Lyon is closed on "
              "public holidays, and the support line answers from 9:00 to 17:00 CET.\n\nUser: I am on Pro and the "
              "uptime was 98.1% last month. Can I get my credit as cash?")
    r = Compressor().compress(prompt, rate=0.5)
    for must in ("Answer only from the context.", "Never promise refunds.",
                 "I am on Pro and the uptime was 98.1% last month. Can I get my credit as cash?", "cannot be paid out"):
        assert must in r.text, (must, r.text)
    assert r.budget_met


def test_multiple_choice_keeps_options_the_not_and_the_format():
    prompt = ("Reply with the letter only.\n\nQuestion: Which of these is NOT a prime number?\n(A) 2 (B) 3 (C) 9 (D) 11\n\n"
              "Background: a prime number has exactly two divisors, 1 and itself. The number 1 is not prime. Even "
              "numbers above 2 are never prime, and every prime above 3 is one more or one less than a multiple of 6.")
    out = Compressor().compress(prompt, rate=0.5).text
    for must in ("Reply with the letter only.", "Which of these is NOT a prime number?", "(A) 2", "(B) 3", "(C) 9",
                 "(D) 11"):
        assert must in out, (must, out)


def test_names_survive_whole_with_the_query():
    text = ("Acme Cloud was founded in 2011 by Claire Dubois, a former network engineer, in a small office in Lyon. "
            "Its first product was a backup service for dental practices. In 2015 the company hired Marc Petit as "
            "chief technology officer, and in 2019 it opened a second office in Montreal led by Sofia Almeida. "
            "Today Acme Cloud employs 340 people and sells storage and backup to small firms across Europe.")
    out = Compressor().compress(text, rate=0.5, query="Who founded Acme Cloud?").text
    assert "Claire Dubois" in out and "founded" in out, out


def test_a_tight_budget_keeps_numbers_with_what_they_count():
    from rlpc_core.cli import EXAMPLE_PROMPT

    c = Compressor()
    demo = c.compress(EXAMPLE_PROMPT, rate=0.5)  # what `rlpc compress --example` shows: instruction and question stay
    assert demo.budget_met and "Think step by step" in demo.text and "How much profit" in demo.text, demo.text
    # the instruction and the question leave room for a third of the facts: the first ones, which the later ones build
    # on, and which say what costs what (ranked by score alone, "twice as many cookies" and "30 more cookies" came first)
    assert "muffins for $3 each" in demo.text and "48 muffins" in demo.text, demo.text
    problem = EXAMPLE_PROMPT.split("Question: ", 1)[1]
    half = c.compress(problem, rate=0.5)
    assert half.budget_met and "muffins for $3 each" in half.text and "cookies for $1.50 each" in half.text, half.text
    third = c.compress(problem, rate=0.33)
    assert third.budget_met and "muffins for $3 each" in third.text and "profit" in third.text, third.text
    for r in (demo, half, third):
        out = r.text.split()
        is_num = [bool(re.fullmatch(r"\$?\d[\d.,]*", w)) for w in out]
        for k, w in enumerate(out):
            if is_num[k]:
                neighbours = [j for j in (k - 1, k + 1) if 0 <= j < len(out) and not is_num[j]]
                assert neighbours, f"a bare number {w!r} in {r.text!r}"


def test_a_multi_paragraph_context_keeps_the_sentences_that_answer():
    paragraphs = [
        "The Harbour Line opened on January 7, 1943, running between the docks and the cathedral square.",
        "Its trams were painted green until a fleet of red cars arrived from Basel on September 30, 1956.",
        "The line closed for repairs in 1948 after a flood, and again on October 3, 1952 when the bridge was rebuilt.",
        "A radio series about the line aired on June 26, 1953 and ran for fewer than 24 episodes.",
        "The depot at Kleinfeld was designed by the architect Hanna Reuter, who also built the city's main library.",
        "Hanna Reuter was born in Graz in 1901 and studied in Vienna before moving to the coast in 1930.",
        "Fares were a flat 10 pfennig until 1962, when zones were introduced.",
        "The last tram ran on May 31, 1971; the tracks were removed the following spring.",
        "Today a cycle path follows most of the old route, with plaques at each former stop.",
        "The city museum keeps one green car, number 14, on permanent display.",
    ]
    text = "\n\n".join(paragraphs)
    out = Compressor().compress(text, rate=0.5, query="Where was the architect of the Kleinfeld depot born?").text
    assert "Hanna Reuter" in out and "Graz" in out and "Kleinfeld" in out, out
    assert sum(p.split()[1] in out for p in paragraphs) <= 7  # whole paragraphs went, not every one got a word


def test_a_sentence_repeated_across_retrieved_chunks_is_kept_once(monkeypatch):
    # Retrievers return overlapping chunks: the second copy of a sentence tells the reader nothing new, and its
    # budget goes to the next most relevant sentence instead.
    fact = "The Harbour Line opened on January 7, 1943, running between the docks and the cathedral square."
    chunks = [
        f"The city of Kessel lies on the northern coast. {fact}",
        f"{fact} Its trams were painted green until red cars arrived from Basel in 1956.",
        f"{fact} The depot was designed by the architect Hanna Reuter in 1951.",
        "Fares were a flat 10 pfennig until 1962, when zones were introduced.",
    ]
    query = "When did the Harbour Line open and who designed its depot?"
    out = Compressor().compress("\n\n".join(chunks), rate=0.5, query=query).text
    assert out.count("January 7, 1943") == 1 and "Hanna Reuter" in out, out
    # the counterfactual: without the rule the copies crowd the budget (three dates, the architect cut)
    from rlpc_core import selection

    with monkeypatch.context() as patch:
        patch.setattr(selection, "_repeats", lambda norm, block, *rest: np.zeros(int(block.max()) + 1, dtype=bool))
        before = Compressor().compress("\n\n".join(chunks), rate=0.5, query=query).text
    assert before.count("January 7, 1943") > 1, before
    # the dynamic rate keeps one of several copies
    same = Compressor().compress("\n\n".join([fact] * 4), rate="auto", query=query).text
    assert same.count("January 7, 1943") == 1, same


def test_the_lead_prior_keeps_the_sentence_a_paragraph_opens_with():
    # The lead prior (off by default, for document-like contexts): a paragraph's first sentence names what the
    # paragraph is about (the architect and the depot); its later sentences are detail, and without the prior the
    # detail wins on word importance alone.
    text = "\n\n".join([
        "The Harbour Line was a tram line in the port city of Kessel, opened on January 7, 1943. Its green cars ran "
        "every ten minutes between the docks and the cathedral square. Repairs after a flood in 1948 closed the line "
        "for a summer.",
        "Hanna Reuter was the architect of the Kleinfeld tram depot, finished in 1951. The depot's brick hall held "
        "twenty cars and a workshop for repairs. A fire in 1960 destroyed the workshop roof, which was rebuilt in steel.",
        "The city museum of Kessel keeps one green car, number 14, on permanent display. Visitors may sit inside the "
        "car on the first Sunday of each month. The museum also shows photographs of the docks and the square.",
    ])
    with_lead = Compressor(selection={"lead_bonus": 0.5}).compress(text, rate=0.33).text
    without = Compressor().compress(text, rate=0.33).text
    assert "Hanna Reuter" in with_lead and "depot" in with_lead, with_lead
    assert "Hanna Reuter" not in without, without  # the counterfactual: the prior is what keeps it


def test_the_answer_type_prior_keeps_the_sentence_that_names_who():
    from rlpc_core.selection import asked_kind

    assert [asked_kind(q) for q in ("who sings the song", "When was it built?", "how many moons does mars have",
                                    "where is the depot", "What is the capital?", None)] == [
        "name", "time", "amount", "name", None, None]
    # The question's words are all in the first sentence; its answer, a name, is in the second.
    text = ("The halftime show of the 2031 championship final took place at the harbour stadium in front of a record "
            "crowd, and the halftime show was broadcast to forty countries. It was headlined by Mara Quinlan, who sang "
            "a medley of her older songs. The stage was built in three weeks by a team of local carpenters.")
    q = "who performed the halftime show at the 2031 championship final"
    typed = Compressor(selection={"answer_type_bonus": 2.0}).compress(text, rate=0.5, query=q).text
    assert "Mara Quinlan" in typed, typed
    untyped = Compressor(selection={"answer_type_bonus": 0.0}).compress(text, rate=0.5, query=q).text
    assert "Mara Quinlan" not in untyped, untyped  # the counterfactual: the prior is what keeps the name


def test_a_sentence_cut_to_fit_keeps_the_words_beside_the_questions_terms(monkeypatch):
    # One sentence, far over the budget: what it keeps of itself should answer the question. The reader is given the
    # question, so the words beside its terms ("destroyed the wheel") count for more than the sentence's numbers.
    from rlpc_core import selection

    text = ("The spring flood destroyed the wheel of the old mill, which the founders built in 1820 from 300 tons of "
            "local stone to grind flour for 40 farms and 12 bakers in the valley.")
    q = "What did the spring flood destroy?"
    near = Compressor(tokenizer="words").compress(text, rate=0.25, query=q)
    assert "wheel" in near.text.split() and near.budget_met, near.text
    monkeypatch.setattr(selection, "NEAR_WINDOW", 0)  # the counterfactual: without the rule the numbers take the room
    assert "wheel" not in Compressor(tokenizer="words").compress(text, rate=0.25, query=q).text.split()


def test_a_passage_for_a_how_many_query_is_a_context_not_a_word_problem():
    # Short and number-heavy like a word problem, but it asks nothing itself: compressed for a separate query, its
    # sentences are kept or dropped whole, not every sentence cut down to its numbers.
    text = ("A metal staircase reaches the main deck after 1,776 steps, and the upper deck 100 m above after 2,579 "
            "steps. The stairs are meant for emergency use only and are closed to the public, except twice a year "
            "for charity climbs. The average climber takes about 30 minutes to reach the base of the dome. The "
            "fastest climb, 7 minutes 52 seconds, was set in 1989 by a police officer from the province.")
    r = Compressor(tokenizer="words").compress(text, rate=0.5, query="how many steps does the tower have")
    assert "after 2,579 steps" in r.text and r.budget_met, r.text
    words = text.split()
    assert len(r.kept) == len(words)
    start = 0
    for sentence in text.split(". "):
        n = len(sentence.split())
        share = sum(r.kept[start : start + n]) / n
        assert share == 0 or share >= 0.6, (sentence, r.text)  # whole (short form) or dropped, never bare numbers
        start += n
    # the same text asking its own question is a word problem: every fact's number stays
    problem = text + " How many minutes faster than the average climber was the record?"
    assert "30 minutes" in Compressor(tokenizer="words").compress(problem, rate=0.5).text


def test_few_shot_examples_go_whole_before_any_word_inside_one():
    demos = "\n\n".join(f"Q: What is {a} plus {b}?\nA: {a} plus {b} is {a + b}. The answer is {a + b}."
                        for a, b in ((2, 3), (10, 7), (4, 4), (12, 30), (5, 9)))
    prompt = f"Answer the last question like the examples.\n\n{demos}\n\nQ: What is 6 plus 8?\nA:"
    r = Compressor(tokenizer="words").compress(prompt, rate=0.5)
    kept_demos = [d for d in demos.split("\n\n") if d in r.text]
    assert 1 <= len(kept_demos) < 5 and "Q: What is 6 plus 8?" in r.text, r.text
    for d in demos.split("\n\n"):  # every example is in the output whole or not at all
        assert d in r.text or not any(line in r.text for line in d.split("\n")), (d, r.text)


def test_json_and_code_come_out_whole():
    payload = {"order": 1042, "items": [{"sku": "A-7", "qty": 2}, {"sku": "B-1", "qty": 1}], "note": "gift"}
    prompt = ("We received the order below from the shop's API last night, and the warehouse says something is off "
              "with the quantities, but nobody has had time to look at it in detail yet.\n\n"
              + json.dumps(payload, indent=2) + "\n\nHow many items does order 1042 contain in total?")
    out = Compressor().compress(prompt, rate=0.5).text
    assert json.dumps(payload, indent=2) in out
    code = "```python\ndef add(a, b):\n    return a - b\n```"
    review = ("Please review this function and list the bugs. It was written in a hurry during the release week and "
              "the author has since left the team, so nobody remembers why it looks like this.\n\n" + code)
    assert code in Compressor().compress(review, rate=0.5).text


def test_the_dynamic_rate_keeps_what_is_relevant():
    text = ("The library opens at 9:00 on weekdays and at 10:00 on Saturdays. It is closed on Sundays. "
            "The reading room on the second floor has 120 seats. A café on the ground floor sells coffee and cakes. "
            "The building was designed in 1968 and renovated in 2004. Parking is free for the first two hours.")
    c = Compressor(tokenizer="words")
    r = c.compress(text, rate="auto", query="When does the library open on Saturdays?")
    assert "10:00 on Saturdays" in r.text and r.ratio < 0.8 and r.budget_met and r.target_tokens == r.compressed_tokens
    wide = c.compress(text, rate="auto", query="Tell me about the library building and its history.")
    assert "1968" in wide.text


def test_the_dynamic_rate_keeps_a_word_problem_whole():
    # every sentence of a word problem is a fact its answer needs; relevance alone kept the sentence that shares the
    # question's words ("The P.T.O. decided to provide shirts ...") and dropped every price and count
    problem = ("The P.T.O. decided to provide shirts for the elementary students for track and field day. Each grade "
               "was given a different color. 101 Kindergartners wore orange shirts that cost $5.80 each. 113 first "
               "graders wore yellow shirts that cost $5 each. How much did the P.T.O. spend on shirts for field day?")
    r = Compressor(tokenizer="words").compress(problem, rate="auto")
    assert r.text == problem and r.ratio == 1.0
    # a context compressed for a separate question is not a word problem: the dynamic rate still cuts it
    context = ("The shop opened in 1998 on Main Street. It sold 48 muffins on its first day. The owner, Ana Ruiz, "
               "trained in Lyon. The shop closed for renovation in 2015 and reopened a year later.")
    assert Compressor(tokenizer="words").compress(context, rate="auto", query="Who owns the shop?").ratio < 1.0


def test_markup_overrides_the_rules():
    from rlpc_core.spans import strip_tags
    from rlpc_core.structure import CONTEXT, INSTRUCTION, analyze

    text = ("<instruction>Summarise in one line.</instruction> The pump failed at 3 am. <compress>Answer with the "
            "letter only.</compress> The night shift restarted it at 4 am and logged the fault for the morning team.")
    clean, typed = strip_tags(text)
    words = split_words(clean)
    kinds = dict(zip(words.tokens, analyze(words, typed=typed).kind))
    assert kinds["Summarise"] == INSTRUCTION and kinds["letter"] == CONTEXT  # the caller said: compressible
    r = Compressor(tokenizer="words").compress(text, target_tokens=6)
    assert r.text.startswith("Summarise in one line.") and "<" not in r.text


def test_json_values_mode_compresses_string_values_and_still_parses():
    payload = {"id": 7, "description": "A very long and rather repetitive description of the product that goes on "
               "and on about colours, materials and the story of the company that makes it", "tags": ["red", "wool"],
               "price": 49.5, "ok": True, "note": None}
    prompt = "Here is the record.\n\n" + json.dumps(payload, indent=2) + "\n\nWhat is the price?"
    whole = Compressor().compress(prompt, rate=0.5)
    assert json.dumps(payload, indent=2) in whole.text  # the default: JSON verbatim
    values = Compressor(selection={"json": "values"}).compress(prompt, rate=0.5)
    body = json.loads(values.text[values.text.index("{"): values.text.rindex("}") + 1])
    assert set(body) == set(payload) and body["price"] == 49.5 and body["tags"] == ["red", "wool"]
    assert len(body["description"]) < len(payload["description"]) and values.compressed_tokens < whole.compressed_tokens
    with pytest.raises(ValueError, match="json='partly'"):
        Compressor(selection={"json": "partly"})


def test_compress_shared_spends_one_budget_where_the_query_needs_it():
    docs = ["Acme Cloud was founded in 2011 by Claire Dubois in Lyon. It sells storage to small firms.",
            "The Lyon office is near the river. Parking is free for visitors on weekdays.",
            "Our mascot is a blue heron called Pip. It appears on every invoice and on the office door."]
    c = Compressor(tokenizer="words")
    results = c.compress_shared(docs, rate=0.4, query="Who founded Acme Cloud?")
    assert len(results) == 3 and "Claire Dubois" in results[0].text
    total = sum(len(d.split()) for d in docs)
    assert sum(r.compressed_tokens for r in results) <= round(0.4 * total) and results[0].budget_met
    assert results[0].compressed_tokens >= max(r.compressed_tokens for r in results[1:])
    for doc, r in zip(docs, results):  # each result describes its own document
        assert r.original_tokens == len(doc.split()) and len(r.kept) == len(doc.split())
        assert [w for w, k in zip(doc.split(), r.kept) if k] == r.text.split()
    assert c.compress_shared([], rate=0.5) == []
    with pytest.raises(TypeError, match="texts must be a list"):
        c.compress_shared("one text", rate=0.5)


HANDBOOK = """# Kestrel Cloud handbook

## Pricing
### Starter
The Starter plan includes 2 projects and 1 GB of storage for free.
### Team
Team costs $12 per user per month and includes 100 GB of storage.

## Support
Support answers within 24 hours on weekdays. Phone support is only available on the Enterprise plan.

## Security
All data is encrypted at rest with AES-256. Audit logs are kept for one year.
"""


def _orphan_headings(text: str) -> list[str]:
    """Heading lines with no text under them before a heading of their level or above (or the end)."""
    lines = [line for line in text.splitlines() if line.strip()]
    level = [len(line) - len(line.lstrip("#")) for line in lines]
    orphans = []
    for k, line in enumerate(lines):
        if not level[k]:
            continue
        under = []
        for j in range(k + 1, len(lines)):
            if level[j] and level[j] <= level[k]:
                break
            under.append(lines[j])
        if not any(not u.startswith("#") for u in under):
            orphans.append(line)
    return orphans


@pytest.mark.parametrize("rate", [0.25, 0.4, 0.6, "auto"])
def test_a_heading_goes_with_its_section(rate):
    # A heading is kept when something of its section is and dropped with it: the output is never a column of bare
    # headings, and the tokens they held go to text that answers.
    r = Compressor().compress(HANDBOOK, rate=rate, query="How much does the Team plan cost per user?")
    assert "$12 per user per month" in r.text and "### Team" in r.text, r.text
    assert _orphan_headings(r.text) == [], r.text  # "## Pricing" stays only above the Team section it leads to
    if rate != "auto":
        assert r.budget_met, (r.text, r.compressed_tokens)


def test_a_heading_over_verbatim_text_or_protected_by_the_caller_stays():
    prompt = ("Instructions:\nAnswer in one word.\n\nNotes:\nThe depot at Kleinfeld was designed by Hanna Reuter. "
              "The trams were painted green until 1956. Fares were a flat 10 pfennig until 1962.")
    out = Compressor().compress(prompt, rate=0.3, query="Who designed the depot?").text
    assert out.startswith("Instructions:\nAnswer in one word.") and "Hanna Reuter" in out, out
    cut = Compressor().compress(HANDBOOK, rate=0.25, query="How much does the Team plan cost per user?").text
    assert "## Security" not in cut, cut
    kept = Compressor().compress(HANDBOOK, rate=0.25, query="How much does the Team plan cost per user?",
                                 protect=["## Security"]).text
    assert "## Security" in kept, kept


def test_an_overshoot_is_taken_back_by_whole_sentences_not_scattered_words():
    # Word costs need not add up to the text's token count (tokens merge and split at new boundaries): the
    # overshoot is taken from the least valuable kept sentence (whole, if the cut would take half of it), not from
    # the weakest words wherever they are.
    from rlpc_core.config import SelectionConfig
    from rlpc_core.selection import select
    from rlpc_core.structure import analyze

    text = ("Limits apply per workspace, not per key. The API returns HTTP 429 when a limit is exceeded. Keys can "
            "be rotated from the dashboard. Old keys stay valid for 24 hours after rotation.")
    words = split_words(text)
    units = find_units(words.tokens, words.line_breaks)
    st = analyze(words, query="Why do extra keys not raise the limit?")
    costs = np.ones(len(words), dtype=np.int64)
    scores = np.linspace(1.0, 0.0, len(words))
    none = np.zeros(len(words), dtype=bool)
    args = (words, costs, scores, none, none, st, units, 20)
    kw = dict(query="Why do extra keys not raise the limit?", config=SelectionConfig())
    plain, _ = select(*args, **kw)
    overhead = 6  # what the real count adds on top of the word costs
    refit, _ = select(*args, **kw, count=lambda keep: int(costs[keep].sum()) + overhead)
    assert int(costs[refit].sum()) + overhead <= 20 < int(costs[plain].sum()) + overhead
    kept = " ".join(w for w, k in zip(words.tokens, refit) if k)
    assert "Limits apply per workspace, not per key." in kept, kept  # the best sentence whole
    # every other kept sentence is whole or gone: no fragment of a few words survives the cut
    sentences = ["The API returns HTTP 429 when a limit is exceeded.", "Keys can be rotated from the dashboard.",
                 "Old keys stay valid for 24 hours after rotation."]
    for sentence in sentences:
        share = sum(w in kept.split() for w in sentence.split()) / len(sentence.split())
        assert share == 0 or share >= 0.5, (sentence, kept)


def test_a_section_label_keeps_its_title_and_an_emptied_section_loses_its_heading():
    from rlpc_core.selection import plan_blocks, trim_weakest
    from rlpc_core.config import SelectionConfig
    from rlpc_core.structure import KIND_NAMES, analyze

    doc = ("Section: Rate limits\nGrowth plans allow 600 requests a minute.\n\nSection: Webhooks\nEndpoints must "
           "respond within 10 seconds.")
    words = split_words(doc)
    st = analyze(words, query="How many requests a minute?")
    assert [KIND_NAMES[k] for k in st.kind[:3]] == ["heading"] * 3  # "Section: Rate limits", title and all
    units = find_units(words.tokens, words.line_breaks)
    costs = np.ones(len(words), dtype=np.int64)
    none = np.zeros(len(words), dtype=bool)
    plan = plan_blocks(words, costs, np.linspace(1, 0, len(words)), none, st.verbatim, st, units,
                       query="How many requests a minute?", config=SelectionConfig())
    keep = np.ones(len(words), dtype=bool)
    trimmed = trim_weakest(plan, keep, over=6)  # takes the weaker section's sentence whole, then its heading
    kept = " ".join(w for w, k in zip(words.tokens, trimmed) if k)
    assert kept.startswith("Section: Rate limits Growth plans allow 600 requests"), kept
    assert "Webhooks" not in kept and "seconds" not in kept and kept.count("Section:") == 1, kept


def test_a_clause_after_a_semicolon_is_kept_or_dropped_on_its_own():
    # a list of rules joined by semicolons is one sentence; as one block it fits whole or not at all, and a long one
    # loses to shorter, weaker sentences. Each clause is a block: the one the task needs is kept whole.
    prompt = ("The dashboard shows one bar per day and the sales team reads it every morning before the stand-up. "
              "The requirement, agreed in the planning meeting with the product owner and the two analysts: the range "
              "includes both the start and the end date; if the end date is before the start date, the function must "
              "raise ValueError rather than return an empty list; dates are plain date values, so time zones do not "
              "apply; weekends count like any other day.\n\nWhat must the function do when the end date is before "
              "the start date?")
    out = Compressor().compress(prompt, rate=0.5).text
    assert item_kept("if the end date is before the start date, the function must raise ValueError rather than "
                     "return an empty list;", out), out
    assert not item_kept("The requirement, agreed in the planning meeting with the product owner", out), out
    from rlpc_core.selection import sentence_ids
    words = split_words("Rule one applies; rule two does not. Rule three.")
    assert sentence_ids(words)[0].tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]


CHAT = """User: Can you help me plan meals for next week? I'm vegetarian and I cook for two.
Assistant: Of course! Do you have any allergies, and how much time do you have on weeknights?
User: No allergies. My partner hates mushrooms. Weeknights I have about 30 minutes.
Assistant: Got it. Monday chickpea curry, Tuesday halloumi wraps, Wednesday pasta with peppers, Thursday bean tacos.
User: By the way, is it normal for a new rice cooker to smell a bit like plastic the first time?
Assistant: Yes, that is common. Run it once with water and a little lemon juice.
User: Thanks. Now write me one shopping list for the four dinners, grouped by supermarket section."""


@pytest.mark.parametrize("rate", [0.3, 0.5])
def test_a_chat_turn_cut_whole_takes_its_role_label_with_it(rate):
    r = Compressor().compress(CHAT, rate=rate)
    bare = [line for line in r.text.splitlines() if line.strip().rstrip(":") in ("User", "Assistant")]
    assert bare == [], r.text
    assert "Now write me one shopping list for the four dinners, grouped by supermarket section." in r.text, r.text
    assert r.budget_met, r.text


@pytest.mark.parametrize("rate", [0.35, 0.5])
def test_a_kept_table_row_keeps_its_first_cell(rate):
    table = ("Quarterly hosting quotes (per month, excluding VAT)\n"
             "| Provider | vCPU | RAM | Storage | Price | Data centre |\n|---|---|---|---|---|---|\n"
             "| NimbusHost | 8 | 32 GB | 500 GB SSD | €189 | Frankfurt |\n| BlueCrate | 8 | 32 GB | 1 TB SSD | €214 | Dublin |\n"
             "| Kettle Cloud | 8 | 16 GB | 500 GB SSD | €119 | Warsaw |\n| Orbita | 8 | 32 GB | 750 GB NVMe | €176 | Lyon |\n\n"
             "Which provider with at least 32 GB of RAM is cheapest per month?")
    out = Compressor().compress(table, rate=rate).text
    for key, price in (("NimbusHost", "€189"), ("BlueCrate", "€214"), ("Kettle Cloud", "€119"), ("Orbita", "€176")):
        assert (price in out) <= (key in out), out  # a price only with the provider it belongs to
    assert "€176" in out and "Orbita" in out, out


def test_an_overshoot_takes_the_words_of_the_kind_asked_for_last():
    # The cut of a sentence takes the words of the kind the question asks for first (a place for "where"); taking
    # back an overshoot of the exact token count must undo it in reverse, not drop "Tulsa" because its score is low.
    from rlpc_core.config import SelectionConfig
    from rlpc_core.selection import select
    from rlpc_core.structure import analyze

    text = "The story takes place in Tulsa, Oklahoma, in 1965, but this is never stated in the book."
    q = "where do the greasers live"
    words = split_words(text)
    costs = np.ones(len(words), dtype=np.int64)
    costs[words.tokens.index("1965,")] = 3
    scores = np.full(len(words), 0.5)
    scores[words.tokens.index("Tulsa,")] = 0.1  # the policy thinks little of it
    none = np.zeros(len(words), dtype=bool)
    args = (words, costs, scores, none, none, analyze(words, query=q), find_units(words.tokens, words.line_breaks), 7)
    kw = dict(query=q, config=SelectionConfig())
    plain, _ = select(*args, **kw)
    refit, _ = select(*args, **kw, count=lambda keep: int(costs[keep].sum()) + 2)  # 2 tokens more than the costs say
    kept = [w for w, k in zip(words.tokens, refit) if k]
    assert int(costs[refit].sum()) + 2 <= 7 < int(costs[plain].sum()) + 2
    assert {"Tulsa,", "Oklahoma,"} <= set(kept), kept


def test_a_month_is_no_answer_to_who():
    from rlpc_core.graph import normalize
    from rlpc_core.selection import _typed, sentence_ids

    words = split_words("The bridge was opened on December 8, 1991 by Ellen Park after years of delays.")
    units = find_units(words.tokens, words.line_breaks)
    sent, _ = sentence_ids(words, units)
    typed = _typed("name", words, [normalize(w) for w in words.tokens], np.zeros(len(words), dtype=bool), units, sent,
                   "who opened the bridge")
    assert [w for w, t in zip(words.tokens, typed) if t] == ["Ellen", "Park"]
    # in a sentence cut to fit, a lifespan's dates no longer take the room of the name a "who" question asks for
    text = ("Marta Olsen (born March 3, 1950 – died June 9, 2011) was a Danish sculptor, best known for carving the "
            "Harbour Lion of Aarhus on 14 May 1988.  Born in Vejle, Denmark, she died in Lyon, France.")
    out = Compressor().compress(text, rate=0.33, query="who carved the harbour lion of aarhus in 1988")
    assert "Marta Olsen" in out.text and out.budget_met, out.text


def test_a_short_form_cuts_articles_before_the_words_that_bind_a_relation():
    # A kept sentence may lose some of its filler: "the", "a" and "was" a reader restores on its own, "from" and "to"
    # it cannot ("raised old rate of ten euros new rate of twelve euros" no longer says which way the price went).
    text = ("The price of the ticket was raised from the old rate of ten euros to a new rate of twelve euros in the "
            "spring. The museum is open every day except Monday. Its cafe serves lunch until three.")
    out = Compressor().compress(text, rate=0.6, query="How much does a ticket cost now?")
    assert "from old rate of ten euros to new rate of twelve euros" in out.text and out.budget_met, out.text
    assert "except Monday" in out.text, out.text


def test_an_acronym_in_capitals_is_not_the_filler_it_spells():
    # "US" is not "us", "IT" not "it", "WHO" not "who": cut as filler, "Exports from the US to Canada" read "Exports
    # from Canada", the other way round.
    text = ("Tax competition in the US grew after 2008. The WHO said IT support for US hospitals is poor, and it was "
            "not fixed. Exports from the US to Canada rose by 12% in 2015, the report said.")
    for rate in (0.33, 0.5):
        out = Compressor().compress(text, rate=rate, query="where did exports go from the US")
        assert "Exports US Canada" in out.text or "Exports from US to Canada" in out.text, out.text
    words = split_words("The WHO and IT teams told us it is who we are.")
    assert [w for w, f in zip(words.tokens, filler_mask(words)) if not f] == ["WHO", "IT", "teams", "told"]


def test_a_price_list_is_selected_line_by_line_with_its_prices():
    # A list dense with numbers that asks for a total is not a word problem: its lines are items to select whole, not
    # facts to cut to their numbers ("Extras: £5; £30;" said nothing of what costs £5), and a price alone after an
    # item's description ("... pool. £70.") completes that line rather than standing as a sentence of its own.
    text = ("Harbour Gym membership prices (per month, including locker)\n"
            "Basic plan: gym floor, changing rooms, off-peak hours only. £25.\n"
            "Premium plan: gym floor, all classes, sauna, peak hours, one guest pass. £45.\n"
            "Family plan: two adults and up to 3 children, gym floor and pool. £70.\n"
            "Extras: towel service £5; personal trainer session £30; parking permit £8.\n"
            "Joining fee: £20, waived in January. Contracts run 12 months, cancel with 30 days notice.\n"
            "What does a Premium plan with the towel service cost per month?")
    out = Compressor().compress(text, rate=0.4)
    assert "towel service £5" in out.text and out.budget_met, out.text
    assert "Extras: £5" not in out.text, out.text
    words = split_words("Family plan: two adults and pool. £70.\nExtras: towel service £5.")
    sent, _ = sentence_ids(words, find_units(words.tokens))
    assert [int(x) for x in sent] == [0] * 7 + [1] * 4, sent
