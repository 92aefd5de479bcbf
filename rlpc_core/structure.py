"""Prompt structure: which parts of a prompt are instructions, the question, options, examples, or context.

A reader needs some parts of a prompt whole: the instructions (what to do, in what format), the question, the
options of a multiple-choice question, chat-role labels, headings, code and JSON. Only the rest (retrieved
context, background, the body of worked examples) is what compression should spend its cuts on. This module
finds those parts with cheap, language-light rules (no parser, no model), on the whitespace words the
compressor keeps or drops:

* **roles**: ``System:``, ``User:``, ``Assistant:`` (and ``Human:``, ``AI:``) labels, ``### Instruction:``,
  ``<|system|>``; a system turn's text is an instruction;
* **instructions**: sentences that tell the model what to do or how to answer, in the prompt's first and last
  paragraphs and wherever they name the output ("Reply with the letter only", "Return valid JSON", "Never promise
  refunds"): imperative openings, "you must/should", format words;
* **the question**: the last question of the prompt (a sentence ending in "?", or what follows the last
  ``Question:`` label) when the caller gives no separate ``query``;
* **options**: runs of lettered options, ``(A) red (B) blue`` inline or one per line, kept with their labels;
* **demonstrations**: few-shot examples (``Q:``/``A:``, ``Question:``/``Answer:``, ``Input:``/``Output:``,
  ``Example N:``), each one unit that is kept or dropped whole before any word inside one is cut;
* **headings and list markers**: Markdown headings and ``Label:`` lines are kept; a list marker (``-``, ``1.``)
  goes with its item (kept when any word of the item is);
* **code and JSON**: fenced code blocks and JSON objects or arrays, kept whole (they must still parse).

The caller overrides any of it with markup (:mod:`rlpc_core.spans`): ``<keep>…</keep>`` (verbatim),
``<question>…</question>`` and ``<instruction>…</instruction>`` (verbatim, typed), ``<demo>…</demo>`` (one
demonstration), ``<compress>…</compress>`` (compressible whatever the rules say). Nothing here ever changes the
text; it labels words.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .words import Words, ends_sentence, words_in_spans

# Word kinds, in order of precedence (a word gets the first that applies).
KEEP, CODE, JSON_, ROLE, HEADING, QUESTION, INSTRUCTION, OPTION, MARKER, DEMO, CONTEXT = range(11)
KIND_NAMES = ("keep", "code", "json", "role", "heading", "question", "instruction", "option", "marker",
              "demonstration", "context")
#: Kinds never compressed by default: the compressor keeps these words whatever the budget.
VERBATIM = frozenset({KEEP, CODE, JSON_, ROLE, HEADING, QUESTION, INSTRUCTION})

_ROLE = re.compile(r"^[ \t]*(?:#{1,4}[ \t]*)?(?P<role>system|user|assistant|human|ai|bot|customer|agent|model|"
                   r"instruction|instructions|response|système|sistema|utilisateur|usuario|benutzer|nutzer|"
                   r"assistent|assistente|asistente)[ \t]*:", re.IGNORECASE | re.MULTILINE)
_SYSTEM_ROLES = ("system", "instruction", "instructions", "système", "sistema")
#: Turns of the side that answers (the model's earlier replies, a support agent's): "You can add chilli flakes at the
#: table" there speaks to the user, it gives the model no order.
_REPLYING_ROLES = ("assistant", "ai", "bot", "model", "agent", "assistent", "assistente", "asistente")
# Labels whose section is made of instructions ("Rules:", "Instructions:"), not of context.
_RULE_LABELS = re.compile(r"^(?:rules|instructions?|guidelines|constraints|requirements|task|your task|policy for "
                          r"answers|how to answer|règles|consignes|regeln|anweisungen|reglas|instrucciones)\b",
                          re.IGNORECASE)
_SPECIAL_ROLE = re.compile(r"<\|(?:system|user|assistant|im_start|im_end|end)\|>|<\|im_start\|>\w+")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t]+\S[^\n]*$", re.MULTILINE)
# "Context:", "Documents:", "Options:" alone on a line, or a short label opening a line ("Question: ...")
#: A section label with its short title on one line ("Section: Rate limits", "Step 3: Install"): the title is the
#: heading's name, not a sentence of the section.
_SECTION_TITLE = re.compile(r"^[ \t]*(?:section|chapter|part|topic|article|clause|step|phase|stage|module|lesson|"
                            r"appendix|abschnitt|kapitel|chapitre|sección|capítulo)[ \t]*[\w.]*[ \t]*:[ \t]*"
                            r"[^\n.!?]{1,60}$", re.IGNORECASE | re.MULTILINE)
_LABEL_LINE = re.compile(r"^[ \t]*[A-Z][\w /()'-]{0,40}:[ \t]*$", re.MULTILINE)
_LINE_LABEL = re.compile(r"^[ \t]*(?P<label>(?:[A-Z][a-z]+[ \t]?){1,3}(?:\d+)?:)(?=[ \t]+\S)", re.MULTILINE)
_LIST_MARKER = re.compile(r"^[ \t]*(?P<m>[-*•‣▪]|\d{1,3}[.)]|[ivx]{1,4}[.)])[ \t]+(?=\S)", re.MULTILINE)
_OPTION_LINE = re.compile(r"^[ \t]*(?P<m>\(?(?P<l>[A-Ja-j])[).:])[ \t]+\S[^\n]*$", re.MULTILINE)
_INLINE_OPTION = re.compile(r"\((?P<l>[A-J])\)[ \t]*[^()\n]+")
_DEMO_Q = re.compile(r"^[ \t]*(?P<label>Q|Question|Input|Problem|Example(?:[ \t]+\d+)?|Text|Review|Sentence|"
                     r"Passage|Premise)[ \t]*\d*[ \t]*[:.)][ \t]*", re.IGNORECASE | re.MULTILINE)
# an answer label takes a colon: "A)" and "A." open options, not answers
_DEMO_A = re.compile(r"^[ \t]*(?P<label>A|Answer|Output|Solution|Label|Sentiment|Result|Response)[ \t]*:",
                     re.IGNORECASE | re.MULTILINE)
_SENT_END = re.compile(r"[.!?][\"')\]]*$")
_IMPERATIVE = frozenset("""answer reply respond return output write summarise summarize translate classify give
    provide list explain use do don't dont never always only make ensure be keep format include avoid think solve
    choose select pick rate rank extract identify review draft fix check compare describe state cite mention limit
    start end put wrap follow read consider assume ignore focus note remember respond refuse decline tell show
    generate create rewrite convert count calculate compute determine find label tag mark please turn sort group
    organise organize fill complete suggest recommend propose help tell""".split())
# Phrases that only an instruction to the model contains: how to answer, in what form.
_SUBJECT_VERBS = frozenset("is are was were has had will would can could may might shall should must 's does did "
                           "likes wants needs makes gets buys sells has".split())
# words that often follow an imperative and end in s ("list items", "give details") are not a verb of a subject
_IMPERATIVE_NEXT = frozenset("its us this these those details steps items results options points reasons ideas "
                             "examples sentences words questions answers".split())
_FORMAT_CUES = re.compile(
    r"\b(?:you (?:must|should) (?:answer|reply|respond|use only|only)|your (?:task|answer|reply|response|job) (?:is|should)|"
    # an order to answer in some form opens its clause ("Reply with the letter", "If unsure, answer in one word",
    # "You must respond in French"); "the show would return with", "Atlanta would answer in the second quarter" are
    # narrative
    r"(?:^[\s\-*•>#\d.)]*|[,;:]\s*|\b(?:please|always|only|must|should|then|you to|need to)\s+)"
    r"(?:answer|reply|respond|return|output)s? (?:with|in|only|as)\b(?! \d)|(?:answer|reply|respond) (?:briefly|concisely)|"
    r"valid json|in json|json (?:object|format)|in one word|one word only|letter only|the letter of|"
    r"(?:in|as|use) (?:at most )?(?:\d+|one|two|three|four|five) (?:bullet|bullets|bullet points|sentences|words)|"
    r"at most \d+ (?:words|sentences|bullets)|no more than \d+ (?:words|sentences)|"
    r"do not (?:include|add|explain|answer|repeat) |don't (?:include|add|explain)|no explanations?|"
    r"step by step|final answer|output format|"
    # a language is an instruction only as the language of the output ("Write it in German", "in English only"),
    # not wherever a sentence mentions one ("In English, Sinéad is also spelled Sinead")
    r"\b(?:answer|reply|respond|write|output|translate|summari[sz]e|explain|return)\b[^.!?\n]{0,60}?\bin "
    r"(?:english|french|german|spanish)\b|\bin (?:english|french|german|spanish) only\b)",
    re.IGNORECASE)
_CONTEXT_LABELS = re.compile(r"^(?:context|documents?|passages?|sources?|background|transcript|article|text|"
                             r"notes?|data|knowledge|retrieved|search results?|excerpts?|email|thread|history)\b",
                             re.IGNORECASE)


@dataclass(frozen=True)
class Structure:
    """Per-word labels of a prompt (arrays as long as its words)."""

    #: Kind of each word (``KEEP`` ... ``CONTEXT``; names in :data:`KIND_NAMES`).
    kind: np.ndarray
    #: Demonstration index of each word (``-1`` outside demonstrations).
    demo: np.ndarray
    #: List item each marker word belongs to, as the index of the item's first word after the marker (else -1).
    marker_of: np.ndarray
    #: Per-word prior on the value of what holds it: negative for boilerplate (greetings, sign-offs, signatures,
    #: disclaimers: -1) and quoted history ("> ...", "On ... wrote:": -0.5), 0 elsewhere.
    prior: Optional[np.ndarray] = None

    @property
    def verbatim(self) -> np.ndarray:
        """Words kept whatever the budget: instructions, the question and its options, roles, headings, code,
        JSON, markup. (Options inside a demonstration go with their demonstration.)"""
        return np.isin(self.kind, list(VERBATIM)) | ((self.kind == OPTION) & (self.demo < 0))

    def count(self, kind: int) -> int:
        return int((self.kind == kind).sum())


def _lines(text: str) -> list[tuple[int, int]]:
    out, pos = [], 0
    for line in text.split("\n"):
        out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out


def json_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of JSON objects and arrays in ``text`` (parsed, not guessed)."""
    spans, decoder, pos = [], json.JSONDecoder(), 0
    for m in re.finditer(r"[{\[]", text):
        start = m.start()
        if start < pos:
            continue
        line_start = text.rfind("\n", 0, start) + 1
        before = text[line_start:start].strip()
        if before and not before.endswith((":", "=", "(", ",", "`")):
            continue  # a bracket inside prose, not a JSON value
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            continue
        # a real payload, not "[1]" in prose: a non-empty object, or an array of objects/arrays or of 2+ items
        if (isinstance(value, dict) and value) or (isinstance(value, list) and value and (
                len(value) >= 2 or isinstance(value[0], (dict, list)))):
            spans.append((start, end))
            pos = end
    return spans


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def json_value_interiors(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Inside the JSON at ``text[start:end]``: the character spans between the quotes of each string *value* (not
    of keys: a key is a string followed by a colon)."""
    out = []
    for m in _JSON_STRING.finditer(text, start, end):
        after = text[m.end():end].lstrip()
        if not after.startswith(":") and m.end() - m.start() > 2:
            out.append((m.start() + 1, m.end() - 1))
    return out


_NEXT_WORD = re.compile(r"(\s*)(\S+)")


def _sentence_spans(text: str, lo: int, hi: int) -> list[tuple[int, int]]:
    """Sentences of ``text[lo:hi]``: they end at a line break, or after . ! ? followed by a space where
    :func:`~rlpc_core.words.ends_sentence` says so (not after an abbreviation, nor before a word in lower case)."""
    out, start = [], lo
    for m in re.finditer(r"(?<=[.!?])[\"')\]]*(?=\s)|\n", text[lo:hi]):
        end = lo + m.end()
        nxt = _NEXT_WORD.match(text, end, hi)
        if m.group() != "\n" and nxt and "\n" not in nxt.group(1):
            word = text[max(text.rfind(c, start, end) for c in " \t\n") + 1 : end]
            if not ends_sentence(word, nxt.group(2)):
                continue
        if text[start:end].strip():
            out.append((start, end))
        start = end
    if text[start:hi].strip():
        out.append((start, hi))
    return out


#: Adverbs that open an order ("Only answer ...", "Never share ...") and the words after which they do not ("Only
#: several hundred are ...", "Never before had ...").
_ADVERB_ORDERS = frozenset("only never always".split())
_NOT_A_VERB = frozenset("""the a an this that these those his her its their our my your after before when if in on at by
    for with to from during since until once then one two three four five several few some many most much more less
    about around nearly recently now later again once yet""".split())
_PRONOUNS = frozenset("i you we they he she it your our their".split())
#: Words that may open an order before its verb ("Now write ...", "Finally, list ...").
_DISCOURSE = frozenset("now then next finally also so and ok okay lastly first second third".split())
#: Verbs of an order whose object is the prompt's own text: a prompt that ends with one asks for that, and a question
#: inside the text before it (a meeting's "Anything else?", an earlier turn of a chat) is part of the material.
_TASK_VERBS = frozenset("""summarise summarize write draft translate rewrite list classify extract review proofread
    compose create generate convert outline""".split())
#: ... unless it is about the answer's form ("Write only the number.", "Write your answer in one word."): then the
#: question before it is still the one asked.
_ABOUT_THE_ANSWER = re.compile(r"\b(?:answer|reply|response|only|number|letter|word|words|digits?|result|yes|no)\b",
                               re.IGNORECASE)
#: What opens a condition before an order: "If the user is locked out, give ...", "When asked, reply ...".
_CONDITION = re.compile(r"^\W*(?:if|when|whenever|unless|once|before|after|while|where|wherever|otherwise|in case|"
                        r"as soon as|for (?:each|every|any|all)|should|wenn|falls|sobald|si|quand|lorsque|cuando)\b",
                        re.IGNORECASE)
_ADDRESS = re.compile(r"^(?:you are|you're|you will|you'll|you must|you should|you can|your (?:task|job|role|goal)|"
                      r"act as|tu es|vous êtes|du bist|sie sind|eres|usted es)\b", re.IGNORECASE)


def _opens_with_imperative(clause: str) -> bool:
    text = clause.strip().lstrip("-*•>#0123456789.) ")
    if text[:1] in "\"“'‘«„":
        return False  # a quoted title ("Put Your Hand in the Hand" is a song) or speech, not an order to the model
    words = text.split()
    if len(words) > 2 and re.sub(r"[^\w]", "", words[0]).lower() in _DISCOURSE:
        words = words[1:]  # "Now write me a shopping list", "Finally, list the risks"
    if not words:
        return False
    first = re.sub(r"[^\w']", "", words[0]).lower()
    raw_second = re.sub(r"[^\w']", "", words[1]) if len(words) > 1 else ""
    second = raw_second.lower()
    # "Answer ...", "Never ...", "Write Python code" (a name after the verb is its object), but not a name as the
    # subject of a verb ("Mark is a copy-editor", "Grace writes ...")
    if first not in _IMPERATIVE:
        return False
    capitalised = raw_second[:1].isupper() and not raw_second.isupper()
    if first == "do" and second not in ("not", "n't") and (capitalised or second in _PRONOUNS):
        return False  # "Do NOT share ..." gives an order; "Do You Love Me?" is a title, "Do you have ...?" asks
    if first in _ADVERB_ORDERS and (second in _NOT_A_VERB or capitalised or second[:1].isdigit()):
        return False  # "Only several hundred are ...", "Only Mexico and Brazil have ...": not an order
    third = re.sub(r"[^\w']", "", words[2]).lower() if len(words) > 2 else ""
    if capitalised and (third in _SUBJECT_VERBS or third == "of"):
        return False  # a name as the subject: "Mark Whitaker was named ...", "Mark Sutherland of Rolling Stone ..."
    if second in _SUBJECT_VERBS or (words[0][:1].isupper() and second.endswith("s") and second not in _IMPERATIVE_NEXT
                                    and len(second) > 3 and not second.endswith("ss")):
        return False
    return True


def _is_instruction(sentence: str) -> bool:
    """An imperative sentence ("Answer ...", "If the user is locked out, give ..."), one that addresses the model
    ("You are the support bot ..."), or one naming the output's form."""
    stripped = sentence.strip()
    if _opens_with_imperative(stripped) or _ADDRESS.match(stripped.lstrip("-*•>#0123456789.) ")):
        return True
    head, sep, tail = stripped.partition(",")
    if sep and len(head.split()) <= 10 and _CONDITION.match(head) and tail.strip()[:1].islower() and \
            _opens_with_imperative(tail):
        return True  # an opening condition, then the order (not "He invited Eustace II, Count of Boulogne ...")
    return bool(_FORMAT_CUES.search(sentence))


def _paragraphs(text: str) -> list[tuple[int, int]]:
    out, start = [], 0
    for m in re.finditer(r"\n[ \t]*\n", text):
        if text[start : m.start()].strip():
            out.append((start, m.start()))
        start = m.end()
    if text[start:].strip():
        out.append((start, len(text)))
    return out


def analyze(words: Words, *, query: Optional[str] = None, typed: Sequence[tuple[int, int, str]] = (),
            verbatim_spans: Sequence[tuple[int, int]] = (), rules: bool = True, json_values: bool = False) -> Structure:
    """Label every word of a prompt. ``typed``: caller markup spans (``question``, ``instruction``, ``demo``,
    ``compress``) over the clean text; ``verbatim_spans``: spans that must come out verbatim (``<keep>``,
    ``protect=``, code fences); ``rules=False``: the caller's markup only, no detection; ``json_values``: the words
    inside JSON string values are compressible (keys, numbers, brackets and every quote stay, so it still parses)."""
    text = words.text
    n = len(words)
    kind = np.full(n, CONTEXT, dtype=np.int64)
    demo = np.full(n, -1, dtype=np.int64)
    marker_of = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return Structure(kind, demo, marker_of)
    assigned = np.zeros(n, dtype=bool)

    def label(spans, k: int, *, force: bool = False) -> np.ndarray:
        mask = words_in_spans(words, spans)
        if not force:
            mask &= ~assigned
        kind[mask] = k
        assigned[mask] = True
        return mask

    # 1. what the caller said
    label(verbatim_spans, KEEP)
    compress_mask = words_in_spans(words, [(a, b) for a, b, t in typed if t == "compress"])
    assigned |= compress_mask  # the caller wants these compressible: no rule below may claim them
    label([(a, b) for a, b, t in typed if t == "question"], QUESTION)
    label([(a, b) for a, b, t in typed if t == "instruction"], INSTRUCTION)
    for d, (a, b, _) in enumerate([s for s in typed if s[2] == "demo"]):
        mask = words_in_spans(words, [(a, b)]) & ~(kind == KEEP)
        kind[mask], demo[mask] = DEMO, d
        assigned |= mask
    caller_demos = int((demo >= 0).any())
    prior = np.zeros(n, dtype=np.float64)
    if not rules:
        return Structure(kind, demo, marker_of, prior)

    # 2. code is verbatim already (fences arrive in verbatim_spans); JSON
    found_json = json_spans(text)
    if json_values:
        inner = words_in_spans(words, [seg for a, b in found_json for seg in json_value_interiors(text, a, b)])
        touching = words_in_spans(words, found_json)
        # a word holding a quote, a bracket or a key stays; words wholly inside a string value may go
        whole = np.asarray([bool(re.search(r'["{}\[\]:]', w)) for w in words.tokens], dtype=bool)
        label_mask = touching & ~(inner & ~whole)
        kind[label_mask & ~assigned] = JSON_
        assigned |= touching
    else:
        label(found_json, JSON_)

    # 3. roles and the system turn
    lines = _lines(text)
    role_spans, system_spans, replies = [], [], []
    role_hits = list(_ROLE.finditer(text))
    for j, m in enumerate(role_hits):
        role_spans.append((m.start("role"), m.end()))
        if m.group("role").lower() in _REPLYING_ROLES:  # what the other side said earlier gives no order to the model
            replies.append((m.end(), role_hits[j + 1].start() if j + 1 < len(role_hits) else len(text)))
        if m.group("role").lower() in _SYSTEM_ROLES:
            # the system turn: up to the next role, blank line or label line ("Context:" opens the context)
            end = role_hits[j + 1].start() if j + 1 < len(role_hits) else len(text)
            stop = re.search(r"\n[ \t]*\n|\n[ \t]*[A-Z][\w /()'-]{0,40}:[ \t]*(?:\n|$)", text[m.end():end])
            system_spans.append((m.end(), m.end() + stop.start() if stop else end))
    role_spans += [(m.start(), m.end()) for m in _SPECIAL_ROLE.finditer(text)]
    label(role_spans, ROLE)

    # 4. headings and label lines ("## Refunds", "Context:"), and labels opening a line ("Question: ...")
    label([(m.start(), m.end()) for m in _HEADING.finditer(text)], HEADING)
    label([(m.start(), m.end()) for m in _LABEL_LINE.finditer(text)], HEADING)
    line_labels = [(m.start("label"), m.end("label")) for m in _LINE_LABEL.finditer(text)]

    # 5. few-shot demonstrations (unless the caller marked them): question labels that have an answer label
    if not caller_demos:
        qs = [m for m in _DEMO_Q.finditer(text) if not assigned[_word_at(words, m.start("label"))]]
        starts = [m.start() for m in qs]
        answered = []
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(text)
            a = _DEMO_A.search(text, start, end)
            if a:
                # an example ends with its answer: at a blank line or a new label line after the answer's line
                line_end = text.find("\n", a.end())
                nxt = re.compile(r"\n[ \t]*\n|\n[ \t]*(?:[A-Z][\w'-]*[ \t]){0,2}[A-Za-z][\w'-]*[ \t]?:")
                stop = nxt.search(text, line_end if line_end >= 0 else end, end) if line_end >= 0 else None
                end = stop.start() if stop else end
            rest = text[a.end():end].strip() if a else ""
            answered.append((start, end, bool(a) and bool(rest)))
        complete = [s for s in answered if s[2]]
        if len(complete) >= 2 or (len(complete) == 1 and len(answered) >= 2):
            for d, (a, b, done) in enumerate(answered):
                # a line inside an example that reads as a heading is part of it: GSM8K's "#### 60" is the
                # example's final answer, and left a heading it would outlive every dropped example
                mask = words_in_spans(words, [(a, b)]) & (~assigned | (kind == HEADING))
                if done:
                    kind[mask], demo[mask] = DEMO, d
                    assigned |= mask
                else:  # the last, unanswered one is the question asked
                    label([(a, b)], QUESTION)

    # 6. options: lettered lines (A, B, C ... in order) and inline "(A) .. (B) .."
    option_spans = []
    run: list[tuple[int, int, str]] = []
    for m in _OPTION_LINE.finditer(text):
        letter = m.group("l").upper()
        if run and ord(letter) == ord(run[-1][2]) + 1 and text[run[-1][1] : m.start()].strip() == "":
            run.append((m.start(), m.end(), letter))
        else:
            if len(run) >= 2:
                option_spans += [(a, b) for a, b, _ in run]
            run = [(m.start(), m.end(), letter)] if letter == "A" else []
    if len(run) >= 2:
        option_spans += [(a, b) for a, b, _ in run]
    for line_lo, line_hi in lines:
        hits = list(_INLINE_OPTION.finditer(text, line_lo, line_hi))
        letters = [h.group("l") for h in hits]
        if len(hits) >= 2 and letters == [chr(ord("A") + i) for i in range(len(hits))]:
            option_spans += [(h.start(), h.end()) for h in hits]
    in_demo = demo >= 0
    opt_mask = words_in_spans(words, option_spans)
    # options of a demonstration stay part of it (dropped with it, kept with it); others are verbatim
    kind[opt_mask & ~assigned] = OPTION
    assigned |= opt_mask & ~in_demo
    opt_in_demo = opt_mask & in_demo & (kind == DEMO)
    kind[opt_in_demo] = OPTION  # still carries its demo index

    # 7. the question asked, when the caller gives none: the last question of the prompt outside examples
    if query is None and not (kind == QUESTION).any():
        q_span = _last_question(text, words, assigned)
        if q_span is not None:
            label([q_span], QUESTION)

    # 8. instructions: the system turn; imperative or format sentences in the first and last paragraphs and
    # anywhere they name the output
    label(system_spans, INSTRUCTION)
    label(_rule_sections(text), INSTRUCTION)
    paragraphs = _paragraphs(text)
    if paragraphs:
        # an opening paragraph that addresses the model or gives orders is the prompt's instructions: all of it
        lo, hi = paragraphs[0]
        first_sents = _sentence_spans(text, lo, hi)
        if len(text[lo:hi].split()) <= 90 and any(_is_instruction(text[a:b]) for a, b in first_sents) and \
                len(paragraphs) > 1 and not any(ca <= lo < cb for ca, cb in _context_regions(text)):
            label([(lo, hi)], INSTRUCTION)
    edges = {0, len(paragraphs) - 1} if paragraphs else set()
    context_after_label = _context_regions(text)
    for p, (lo, hi) in enumerate(paragraphs):
        for a, b in _sentence_spans(text, lo, hi):
            sentence = text[a:b]
            inside_context = any(ca <= a < cb for ca, cb in context_after_label + replies)
            edge = p in edges and not inside_context
            if (edge and _is_instruction(sentence)) or _FORMAT_CUES.search(sentence):
                mask = words_in_spans(words, [(a, b)]) & ~assigned
                if mask.any() and not (kind[mask] == DEMO).any():
                    kind[mask] = INSTRUCTION
                    assigned |= mask

    # 9. labels opening a line stay with whatever they open ("Section: Rate limits" is a heading, title and all);
    # list markers go with their item
    label(line_labels, HEADING)
    label([(m.start(), m.end()) for m in _SECTION_TITLE.finditer(text)], HEADING)
    for m in _LIST_MARKER.finditer(text):
        i = _word_at(words, m.start("m"))
        if i is not None and kind[i] == CONTEXT and i + 1 < n:
            kind[i] = MARKER
            marker_of[i] = i + 1
    kind[compress_mask & ~words_in_spans(words, verbatim_spans)] = CONTEXT
    demo[compress_mask] = -1
    boiler, quoted = boilerplate_spans(text)
    prior[words_in_spans(words, quoted)] = -0.5
    prior[words_in_spans(words, boiler)] = -1.0
    return Structure(kind, demo, marker_of, prior)


_GREETING = re.compile(r"^[ \t]*(?:dear|hi|hello|hey|good (?:morning|afternoon|evening)|greetings|liebe[rs]?|"
                       r"sehr geehrte[rs]?|bonjour|hola|estimad[oa]s?)\b[^\n]{0,60}$", re.IGNORECASE | re.MULTILINE)
_SIGN_OFF = re.compile(r"^[ \t]*(?:(?:kind|best|warm|many thanks and)? ?regards|best(?: wishes)?|thanks|thank you|"
                       r"many thanks|cheers|sincerely|yours(?: sincerely| faithfully| truly)?|all the best|"
                       r"mit freundlichen grüßen|viele grüße|cordialement|bien à vous|saludos|atentamente)[,.!]?[ \t]*$",
                       re.IGNORECASE | re.MULTILINE)
_DISCLAIMER = re.compile(r"^[^\n]*(?:confidential|intended (?:solely|only) for|unsubscribe|do not reply to this|"
                         r"sent from my|this (?:e-?mail|message) (?:and any|may contain)|registered in|"
                         r"privacy (?:notice|policy))[^\n]*$", re.IGNORECASE | re.MULTILINE)
#: A message's routing lines (From, To, Cc, Date ...): metadata a reader rarely needs; "Subject:" says what it is about.
_MAIL_HEADER = re.compile(r"^[ \t]*(?:from|to|cc|bcc|sent|date|reply-to|von|an|gesendet|de|à|envoyé|para|enviado)"
                          r"[ \t]*:[^\n]*$", re.IGNORECASE | re.MULTILINE)
_QUOTED = re.compile(r"^[ \t]*>[^\n]*$|^[ \t]*On [^\n]{4,120}wrote:[ \t]*$|^-{2,}[ \t]*(?:original message|forwarded)[^\n]*$",
                     re.IGNORECASE | re.MULTILINE)


def boilerplate_spans(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """``(boilerplate, quoted)`` character spans: greetings, sign-offs with the signature lines after them (up to a
    blank line), disclaimers, a message's routing headers when it has at least two (From, To, Date: a single
    "Date:" line may be a fact); quoted history. Worth less to a reader than the message itself."""
    boiler = [(m.start(), m.end()) for m in _GREETING.finditer(text)]
    headers = [(m.start(), m.end()) for m in _MAIL_HEADER.finditer(text)]
    if len(headers) >= 2:
        boiler += headers
    boiler += [(m.start(), m.end()) for m in _DISCLAIMER.finditer(text)]
    for m in _SIGN_OFF.finditer(text):
        end = text.find("\n\n", m.end())
        end = len(text) if end < 0 else end
        # the signature: the few short lines after the sign-off
        sig_end = m.end()
        for line in text[m.end():end].split("\n")[1:6]:
            if len(line.split()) > 8:
                break
            sig_end += len(line) + 1
        boiler.append((m.start(), min(end, sig_end)))
    quoted = [(m.start(), m.end()) for m in _QUOTED.finditer(text)]
    return boiler, quoted


def task_text(words: Words, structure: Structure) -> str:
    """What the prompt asks: its question, else the instruction sentences of its last paragraph ("Give me a
    checklist of ..."): the text relevance is measured against when the caller gives no query."""
    asked = structure.kind == QUESTION
    if not asked.any():
        instr = np.flatnonzero(structure.kind == INSTRUCTION)
        if instr.size:
            text, starts = words.text, words.starts
            last_par = text.rfind("\n\n", 0, int(starts[-1])) if len(words) else -1
            asked = np.zeros(len(words), dtype=bool)
            asked[instr[starts[instr] > last_par]] = True
    return " ".join(w for w, a in zip(words.tokens, asked) if a)


def _word_at(words: Words, char: int) -> Optional[int]:
    i = int(np.searchsorted(words.ends, char, side="right"))
    return i if i < len(words) and words.starts[i] <= char < words.ends[i] + 1 else None


def _rule_sections(text: str) -> list[tuple[int, int]]:
    """Spans under a label such as "Rules:" or "Instructions:", up to the next label line or blank line."""
    out = []
    for m in list(_LABEL_LINE.finditer(text)) + list(_HEADING.finditer(text)):
        name = m.group(0).strip().lstrip("#").strip()
        if _RULE_LABELS.match(name):
            rest = text[m.end():]
            stop = re.search(r"\n[ \t]*\n|\n[ \t]*#|\n[ \t]*[A-Z][\w /()'-]{0,40}:[ \t]*\n", rest)
            out.append((m.end(), m.end() + (stop.start() if stop else len(rest))))
    return out


def _context_regions(text: str) -> list[tuple[int, int]]:
    """Spans that follow a context label ("Context:", "Documents:") up to the next label line or the end."""
    labels = list(_LABEL_LINE.finditer(text)) + list(_LINE_LABEL.finditer(text))
    labels.sort(key=lambda m: m.start())
    out = []
    for j, m in enumerate(labels):
        name = m.group(0).strip()
        if _CONTEXT_LABELS.match(name):
            end = labels[j + 1].start() if j + 1 < len(labels) else len(text)
            out.append((m.end(), end))
    return out


def _asks_a_task(sentence: str) -> bool:
    """An order to do something with the text (summarise, write, translate, list ...), not a question's format."""
    body = sentence.strip().lstrip("-*•>#0123456789.) ")
    role = _ROLE.match(body)
    if role:
        body = body[role.end():]
    words = [re.sub(r"[^\w']", "", w).lower() for w in body.split()[:3]]
    while words and (words[0] in _DISCOURSE or words[0] == "please"):
        words = words[1:]
    return bool(words) and words[0] in _TASK_VERBS and not sentence.rstrip().endswith("?") and \
        not _ABOUT_THE_ANSWER.search(" ".join(body.split()[:6])) and _opens_with_imperative(body)


def _last_question(text: str, words: Words, assigned: np.ndarray) -> Optional[tuple[int, int]]:
    """The span of the prompt's last question: after the last ``Question:`` label, else the last "?" sentence
    in the final paragraph (questions inside retrieved context are not the one being asked)."""
    labels = [m for m in re.finditer(r"^[ \t]*(?:(?:\w+[ \t])?question|Q|query)[ \t]*:", text,
                                     re.IGNORECASE | re.MULTILINE)]
    for m in reversed(labels):
        i = _word_at(words, m.start())
        if i is None or not assigned[i]:
            end = text.find("\n\n", m.end())
            return (m.start(), len(text) if end < 0 else end)
    paragraphs = _paragraphs(text)
    if not paragraphs:
        return None
    lo, hi = paragraphs[-1]
    last = _sentence_spans(text, lo, hi)
    if last and _asks_a_task(text[last[-1][0] : last[-1][1]]):
        return None  # "Summarise this meeting ...", "Now write me a shopping list ...": the closing order is the ask
    if "?" not in text[lo:hi] and len(paragraphs) > 1 and len(text[lo:hi].split()) <= 25:
        lo = paragraphs[-2][0]  # a closing instruction ("Answer with a number only.") after the question
    sentences = _sentence_spans(text, lo, hi)
    for j in range(len(sentences) - 1, -1, -1):
        a, b = sentences[j]
        if text[a:b].rstrip().rstrip("\"')]").endswith("?"):
            inside = words_in_spans(words, [(a, b)])
            if inside.any() and not assigned[inside].all():  # a role label before it is fine
                # the question with what sets it up: the sentences before it in its turn or short paragraph
                role = [m for m in _ROLE.finditer(text, lo, a)]
                start = role[-1].end() if role else lo
                # in a user's turn, or a short closing paragraph of a longer prompt, the setup is part of what is
                # asked; so is a setup on the question's own line ("I need 48 muffins. How many eggs ...?"); a
                # prompt that is one run of prose (a math problem) asks only its last sentence
                if len(text[start:b].split()) > (80 if role else 40) or (not role and len(paragraphs) < 2):
                    line = text.rfind("\n", lo, a) + 1
                    start = line if line > lo and len(text[line:b].split()) <= 40 else a
                return (start, b)
    return None


__all__ = ["CODE", "CONTEXT", "DEMO", "HEADING", "INSTRUCTION", "JSON_", "KEEP", "KIND_NAMES", "MARKER", "OPTION",
           "QUESTION", "ROLE", "Structure", "VERBATIM", "analyze", "json_spans", "json_value_interiors", "task_text"]
