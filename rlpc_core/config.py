"""Configuration: frozen dataclasses, the one place where every setting and its default is explained.

Every field is checked when the object is built, so a bad value fails at construction with a ``ValueError``
that names the value, the rule and the fix, long before a model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _number(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, fix: str = "") -> None:
    """Check ``lo <= value <= hi`` (``lo < value`` when ``lo_open``) for a real number, bools excluded."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} is not a finite number; {fix or f'pass a number in [{lo}, {hi}]'}")
    low_ok = value > lo if lo_open else value >= lo
    if not (low_ok and value <= hi):
        bracket = "(" if lo_open else "["
        raise ValueError(f"{name}={value!r} is outside {bracket}{lo}, {hi}]; {fix or 'pass a value inside that range'}")


def _integer(name: str, value: Any, lo: int, fix: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name}={value!r} must be an integer >= {lo}; {fix or f'pass an integer of at least {lo}'}")


def check_rate(rate: Any) -> float:
    """Validate a target rate (compressed / original tokens); shared by the API, the CLI and the adapters."""
    _number("rate", rate, 0.0, 1.0, lo_open=True, fix="pass a fraction of the original tokens to keep, e.g. rate=0.5")
    return float(rate)


def check_target_tokens(target_tokens: Any) -> int:
    _integer("target_tokens", target_tokens, 1, fix="pass the number of tokens the compressed prompt may use, e.g. 200")
    return int(target_tokens)


def check_texts(name: str, texts: Any) -> list[str]:
    """A list of strings, or a TypeError naming the argument and the offending item."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"{name} must be a list of str, got {type(texts).__name__}; wrap a single text in a list")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
    return list(texts)


def check_budget(rate: Any, target_tokens: Any) -> None:
    """Validate an optional ``rate`` / ``target_tokens`` pair up front (adapters call this at construction)."""
    if rate is not None and target_tokens is not None:
        raise ValueError(f"got both rate={rate!r} and target_tokens={target_tokens!r}: a budget is one or the "
                         "other; pass only one of them")
    if rate is not None and rate != "auto":  # "auto": the dynamic rate (relevance decides what is kept)
        check_rate(rate)
    if target_tokens is not None:
        check_target_tokens(target_tokens)


@dataclass(frozen=True)
class GraphConfig:
    """Importance graph over a prompt's words, scored with personalized PageRank."""

    #: Words up to this many positions apart are linked: local syntax without a parser (2 links a word to the
    #: words around an article or preposition, e.g. "cost" and "shirt" in "cost of the shirt").
    window: int = 2
    #: PageRank damping. 0.85 is the classic value and the reference design's; lower values trust the
    #: per-word priors below more than the graph structure.
    damping: float = 0.85
    #: Extra random-jump weight for numbers. Numbers carry the facts of math and QA prompts (reference: +3).
    number_boost: float = 3.0
    #: Extra weight for quantity words (half, twice, total, average, each, per, ...) (reference: +2).
    quantity_boost: float = 2.0
    #: Extra weight for the first content word after a number: its unit ("48 muffins", "$3 each" -> what costs
    #: $3 is said nearby). A number kept without its unit is a number the reader cannot use.
    unit_boost: float = 2.0
    #: Extra weight for capitalised words inside a sentence (a cheap entity detector: no NER model needed).
    entity_boost: float = 1.0
    #: Extra weight for the words of a sentence that ends with "?": the question a prompt asks.
    question_boost: float = 1.0
    #: Random-jump weight of a stopword relative to a content word (1.0). Low, not zero: some function words
    #: ("not", "no") are kept in the list below the stopwords, and the rest still receive mass through links.
    stopword_weight: float = 0.1
    #: Share of all random-jump mass placed on the query's terms when a query is given. 0.5 makes the query as
    #: strong as the whole passage's own priors: question-aware without ignoring the passage.
    query_weight: float = 0.5
    #: How far each word's score is pulled towards its sentence's mean score. Keeping whole relevant sentences
    #: beats keeping scattered strong words for QA (the answer sits next to the words that match the question).
    sentence_weight: float = 0.3
    #: Link content words whose MiniLM embeddings have cosine above ``similarity_threshold`` (reference: 0.75).
    #: Off by default: it costs a MiniLM forward per prompt and helps mainly for paraphrased queries.
    use_embeddings: bool = False
    similarity_threshold: float = 0.75
    #: Model spec of the embedder used when ``use_embeddings`` is on.
    embedder: str = "all-minilm-l6-v2"
    #: Prompts are scored in chunks of about this many words, so cost grows linearly with length and a
    #: 1 MB prompt never builds one huge graph. 512 words hold a typical retrieved passage whole.
    chunk_words: int = 512
    #: Protect every number (digits and number words): a compressed math prompt that loses a quantity is wrong.
    protect_numbers: bool = True

    def __post_init__(self) -> None:
        _integer("window", self.window, 1)
        _number("damping", self.damping, 0.0, 1.0, lo_open=True, fix="use a value like 0.85")
        for name in ("number_boost", "quantity_boost", "unit_boost", "entity_boost", "question_boost"):
            _number(name, getattr(self, name), 0.0, 100.0)
        _number("stopword_weight", self.stopword_weight, 0.0, 1.0)
        _number("query_weight", self.query_weight, 0.0, 1.0, fix="use a share in [0, 1), e.g. 0.5")
        _require(self.query_weight < 1.0, f"query_weight={self.query_weight!r} must be below 1: the passage needs "
                 "some random-jump mass of its own; use e.g. 0.5")
        _number("sentence_weight", self.sentence_weight, 0.0, 1.0)
        _number("similarity_threshold", self.similarity_threshold, -1.0, 1.0)
        _integer("chunk_words", self.chunk_words, 16, fix="use a few hundred words, e.g. 512")


@dataclass(frozen=True)
class SelectionConfig:
    """How kept words are chosen under a budget: prompt structure, meaning units, coarse-to-fine blocks."""

    #: Find the prompt's structure (instructions, the question, options, demonstrations, roles, headings, JSON)
    #: and keep instructions, the question and options verbatim. Off: every word is compressible (markup and
    #: ``protect=`` still hold).
    structure: bool = True
    #: Keep meaning units whole (negations with their scope, bounds, quantities, names, dates).
    units: bool = True
    #: JSON in a prompt: ``whole`` (verbatim) or ``values`` (the words inside string values are compressible;
    #: keys, numbers, brackets and quotes stay, so the JSON still parses).
    json: str = "whole"
    #: Share of a kept sentence's tokens its short form may cut (filler first). Beyond that, whole low-value
    #: sentences go instead: a reader understands fewer whole sentences better than more telegraphic ones.
    max_word_drop: float = 0.4
    #: The same share for number-bearing sentences of dense prompts (most sentences carry a number, as in a math
    #: problem), where dropping a sentence loses a fact the answer needs: they may be cut down to their units.
    dense_word_drop: float = 0.75
    #: Weight of a sentence's coverage of the question (IDF-weighted shared words, in [0, 1]) in its value, next
    #: to the policy's ranking of its words (in [0, 1]).
    query_relevance: float = 2.0
    #: Weight of its paragraph's coverage: in a multi-document context, the answer sentence often shares no word
    #: with the question while its paragraph does.
    paragraph_relevance: float = 1.0
    #: Extra value of a sentence that states a rule: a negation or a modal of obligation (must, only, never,
    #: unless, required). Constraints decide answers more often than narrative does.
    rule_bonus: float = 1.0
    #: Extra value of a paragraph's first sentence (the "lead" prior): encyclopedic and news paragraphs open with the
    #: fact they are about, and a vague question ("who sings ...") often shares fewer words with that sentence than
    #: with a later one. Off by default: on 150 *train* rows per set (answer survival, rate 0.33 / 0.5) 0.5 gained
    #: 2-3 points on NQ and was neutral on SQuAD and multi-paragraph contexts, 2.0 cost SQuAD 6 points at 0.33, and
    #: even 0.25 makes a RAG prompt's one-paragraph context keep its opening price line over the rule that answers
    #: the user ("cannot be paid out in cash"). Worth trying (0.5) for Wikipedia- or news-like documents.
    lead_bonus: float = 0.0
    #: Extra value of a sentence about the question that holds the kind of answer it asks for: a name for
    #: "who"/"where", a year or date for "when", a number for "how many" (``selection.asked_kind``). Chosen on
    #: *train* rows with the 1.5B reader (80 per set, rates 0.33 / 0.5; ``python -m training.evaluate --split train
    #: --development --limit 80`` on two saved compressors, 0 and 2): +2.5 points of reader accuracy on NQ, no row
    #: worse; SQuAD, whose questions mostly start "What", unchanged. 0 turns it off.
    answer_type_bonus: float = 2.0
    #: Extra value of a sentence holding the guide's answer (``CompressorConfig.guide``: a small reader that
    #: answers the query from the whole text first). Chosen on 200 SQuAD and 197 NQ *train* rows with the 1.5B
    #: reader (docs/compression.md): 0.5 to 2.0 are level on NQ, where the question's words rarely find the answer's
    #: sentence; on SQuAD, whose questions paraphrase that sentence, 1.0 lets a sentence that covers the question
    #: much better outrank a wrong guess (points lost at rate 0.33: 8.0 against 12.5 with 2.0). Used only when a
    #: guide is set and the call gives a query; 0 turns the guide's answer off (in the ranking and in cuts).
    guide_bonus: float = 1.0
    #: Share of ``guide_bonus`` for a sentence holding the guide's second guess (:meth:`Guide.runner_up`: the reply
    #: it would have given had it begun otherwise, when that beginning had at least a 5% chance; llama.cpp guides,
    #: in process or behind ``rlpc serve-reader``). Chosen on the same train rows (docs/compression.md): points lost
    #: at 0.33 / 0.5, SQuAD 5.5 / 6.0 with 1.0, 6.0 / 7.0 with 0.5, 7.5 / 8.5 with none; NQ 17.3 / 7.6, 16.8 / 9.6,
    #: 17.8 / 10.2. 0 asks for none.
    guide_runner_up: float = 1.0
    #: Tokens of a long text the guide reads, if not 0 (the whole text): the paragraphs and sentences that cover
    #: the query best, in reading order (:func:`rlpc_core.selection.relevant_excerpt`), so that its time does not
    #: grow with the text. Off by default: on *train* rows (the 0.5B guide, docs/compression.md) 512 made it 2.5x
    #: faster and more often right on multi-paragraph contexts of one article (18 of 40 answers against 13), 7.6x
    #: faster and far less often right among 20 retrieved passages (1 of 20 against 6), whose question shares few
    #: words with the passage that answers it.
    guide_reads: int = 0
    #: Weight of the policy's own block logit in a block's value: the mean of its raw word scores over the block's
    #: content words, added to the value above (whose policy part is only the scores' within-prompt ranks, a small
    #: share next to the question coverage and the priors). 0 for policies whose scores are not logits (the
    #: graph). A policy trained with block actions sets it in its recipe (its checkpoint saves it): training then
    #: samples blocks by this same value, so what reinforcement learning changes is what inference ranks by.
    policy_logit_weight: float = 0.0
    #: A math problem (a short, plain prompt asking for a quantity) keeps its question verbatim unless the question
    #: alone would take more than this share of the budget: then its filler may go too, for the facts' sake.
    math_question_share: float = 0.3
    #: ``rate="auto"``: keep the blocks whose value reaches this share of the best block's.
    auto_threshold: float = 0.6
    #: Plain word selection (keep the best-scoring words, numbers protected), as before structure existed.
    #: For peers and ablations; the default is the coarse-to-fine selection above.
    words_only: bool = False

    def __post_init__(self) -> None:
        for name in ("structure", "units", "words_only"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
        if self.json not in ("whole", "values"):
            raise ValueError(f"json={self.json!r} must be 'whole' (keep JSON verbatim) or 'values' (compress the text "
                             "of string values only)")
        _number("max_word_drop", self.max_word_drop, 0.0, 1.0)
        _number("dense_word_drop", self.dense_word_drop, 0.0, 1.0)
        _number("query_relevance", self.query_relevance, 0.0, 10.0)
        _number("paragraph_relevance", self.paragraph_relevance, 0.0, 10.0)
        _number("policy_logit_weight", self.policy_logit_weight, 0.0, 10.0)
        _number("rule_bonus", self.rule_bonus, 0.0, 10.0)
        _number("lead_bonus", self.lead_bonus, 0.0, 10.0)
        _number("answer_type_bonus", self.answer_type_bonus, 0.0, 10.0)
        _number("guide_bonus", self.guide_bonus, 0.0, 10.0)
        _number("guide_runner_up", self.guide_runner_up, 0.0, 1.0)
        _integer("guide_reads", self.guide_reads, 0)
        _number("math_question_share", self.math_question_share, 0.0, 1.0)
        _number("auto_threshold", self.auto_threshold, 0.0, 1.0, fix="use a share of the best block's value, e.g. 0.6")


HINT_MODES = ("none", "list", "markers")


@dataclass(frozen=True)
class GenerativeConfig:
    """A causal LM that rewrites the prompt (the reference design's policy shape)."""

    #: Base model that rewrites: an embedded alias, a Hugging Face id or a folder. The embedded SmolLM2 runs on
    #: a CPU; the reference design's ``microsoft/Phi-3-mini-4k-instruct`` (+ LoRA) is the GPU choice.
    model: str = "smollm2-135m-instruct"
    #: How the importance graph's hints reach the policy: ``none``; ``list`` (one line naming the words to keep,
    #: leaving the text itself untouched); ``markers`` (the reference's ``@@word@@`` inline marks, which the policy
    #: must learn to strip). ``list`` is the default because marks leak into outputs of an untrained model.
    hints: str = "list"
    #: Share of the prompt's words named in the hints (the reference marked the top 40%). Numbers always are.
    hint_share: float = 0.4
    #: Generation limit as a multiple of the target length in policy tokens: room for the policy's own
    #: tokenization, without letting a rambling model run on (longer outputs are rejected anyway).
    max_new_tokens_factor: float = 1.5
    #: Weights' dtype: float32 is fastest on CPUs here; bfloat16 on GPUs.
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"model={self.model!r} must be a model spec, e.g. 'smollm2-135m-instruct'")
        if self.hints not in HINT_MODES:
            raise ValueError(f"hints={self.hints!r} must be one of {', '.join(HINT_MODES)}; 'list' is the default")
        _number("hint_share", self.hint_share, 0.0, 1.0)
        _number("max_new_tokens_factor", self.max_new_tokens_factor, 1.0, 10.0, fix="use e.g. 1.5")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype={self.dtype!r} must be float32, bfloat16 or float16")


QUANTIZE_MODES = ("none", "int8")


@dataclass(frozen=True)
class ExtractiveConfig:
    """The extractive MiniLM policy (``policy="extractive"``): a token classifier that scores words keep/drop."""

    #: Trained head + adapter: ``embedded`` (the weights shipped in the package) or a folder holding
    #: ``extractive.json`` and ``extractive.safetensors``. A checkpoint's own weights take precedence.
    weights: str = "embedded"
    #: Encoder window in word pieces (question + chunk). MiniLM's positions stop at 512; longer texts are chunked.
    max_length: int = 512
    #: Word pieces of the question kept in every chunk's window; the rest of the window holds the text.
    query_max_tokens: int = 64
    #: Chunks per forward pass: larger batches amortise the per-call overhead, smaller ones bound memory.
    batch_size: int = 8
    #: ``none`` (default): fp32 weights, batch-invariant. ``int8``: dynamic int8 quantization of the encoder's
    #: linear layers, 2.1x faster on one CPU core but measured 0.5-1 point lower answer survival on every held-out
    #: set (keep masks agree on 97-98% of words; benchmarks/results/extractive_speed/speed.md), and activations are
    #: scaled per batch, so a text's scores can move slightly with what it is batched with in ``compress_batch``.
    quantize: str = "none"

    def __post_init__(self) -> None:
        if not isinstance(self.weights, str) or not self.weights:
            raise ValueError(f"weights={self.weights!r} must be 'embedded' or a folder of trained extractive weights")
        _integer("max_length", self.max_length, 64, fix="use a window of at most 512 word pieces, e.g. 512")
        _require(self.max_length <= 512, f"max_length={self.max_length!r} exceeds MiniLM's 512 positions; use 512 "
                 "or less (longer texts are chunked)")
        _integer("query_max_tokens", self.query_max_tokens, 0, fix="use e.g. 64")
        _require(self.query_max_tokens <= self.max_length // 2, f"query_max_tokens={self.query_max_tokens!r} must "
                 f"leave at least half of max_length={self.max_length} to the text; use e.g. 64")
        _integer("batch_size", self.batch_size, 1, fix="use e.g. 8")
        if self.quantize not in QUANTIZE_MODES:
            raise ValueError(f"quantize={self.quantize!r} must be one of {', '.join(QUANTIZE_MODES)}")


@dataclass(frozen=True)
class CompressorConfig:
    """Settings of a :class:`rlpc_core.Compressor`; the same object is saved with a checkpoint."""

    #: Which policy compresses. ``graph`` is extractive and training-free; trained policies register more.
    policy: str = "graph"
    #: Default share of the original tokens to keep when a call gives neither ``rate`` nor ``target_tokens``.
    #: 0.5 is the middle of the 30-50% savings users ask for and where peers are usually compared.
    rate: float = 0.5
    #: Tokenizer that budgets and figures are counted in: an embedded alias, a Hugging Face id or folder,
    #: ``tiktoken:<encoding>``, or ``words`` (whitespace words). Default: the embedded SmolLM2 tokenizer, a
    #: 49k-entry BPE close to what chat LLMs bill; set it to your downstream model's tokenizer for exact budgets.
    tokenizer: str = "smollm2-135m-instruct"
    #: Keep fenced code blocks verbatim: dropping a token from code breaks it.
    keep_code: bool = True
    #: Settings of the importance graph (used by the graph policy and as features by trained policies).
    graph: GraphConfig = field(default_factory=GraphConfig)
    #: Settings of the rewriting policy (used when ``policy="generative"``).
    generative: GenerativeConfig = field(default_factory=GenerativeConfig)
    #: Settings of the extractive MiniLM policy (used when ``policy="extractive"``).
    extractive: ExtractiveConfig = field(default_factory=ExtractiveConfig)
    #: How kept words are chosen: structure, meaning units, coarse-to-fine (every extractive policy).
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    #: A small reader that answers the call's ``query`` from the whole text before selection, so that the
    #: sentences holding its answer rank first (:mod:`rlpc_core.guide`): any reader spec, e.g.
    #: ``llamacpp:qwen2.5-coder-0.5b-instruct``. ``None`` (default): no model beyond the policy is run.
    guide: Optional[str] = None
    #: Settings of the guide's reader, as the evaluator takes them: ``n_ctx`` and ``threads`` for llama.cpp (its
    #: context is 4096 tokens by default: a longer text is compressed without the guide, saying so), ``timeout``,
    #: ``retries``, ``api_key_env`` for a server. Unknown settings fail at construction, naming the valid ones.
    guide_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.policy, str) or not self.policy:
            raise ValueError(f"policy={self.policy!r} must be a non-empty policy name, e.g. 'graph'")
        check_rate(self.rate)
        if not isinstance(self.tokenizer, str) or not self.tokenizer:
            raise ValueError(f"tokenizer={self.tokenizer!r} must be a non-empty spec, e.g. 'words' or 'openai-community/gpt2'")
        if self.guide is not None and (not isinstance(self.guide, str) or not self.guide.strip()):
            raise ValueError(f"guide={self.guide!r} must be None or a reader spec, e.g. "
                             "'llamacpp:qwen2.5-coder-0.5b-instruct'")
        if not isinstance(self.guide_options, Mapping) or not all(isinstance(k, str) for k in self.guide_options):
            raise ValueError(f"guide_options={self.guide_options!r} must be a dict of reader settings, e.g. "
                             "{'n_ctx': 16384}")
        for name, kind in _SECTIONS.items():
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a {kind.__name__}; build one with {kind.__name__}(...)")

    def replace(self, **changes: Any) -> "CompressorConfig":
        """A copy with some fields changed; a section (``graph``, ``generative``, ``extractive``) may be given as a dict of changes."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            valid = ", ".join(f.name for f in dataclasses.fields(self))
            raise ValueError(f"unknown setting(s) {sorted(unknown)}: valid settings are {valid}")
        for name in _SECTIONS:
            if isinstance(changes.get(name), Mapping):
                changes[name] = _replace_section(getattr(self, name), changes[name], name)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CompressorConfig":
        data = dict(data)
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - valid
        if unknown:
            raise ValueError(f"unknown setting(s) {sorted(unknown)} in saved config: valid settings are {sorted(valid)}")
        for name, kind in _SECTIONS.items():
            data[name] = _replace_section(kind(), data.get(name) or {}, name)
        return cls(**data)


#: The nested sections of CompressorConfig, each its own frozen dataclass.
_SECTIONS = {"graph": GraphConfig, "generative": GenerativeConfig, "extractive": ExtractiveConfig,
             "selection": SelectionConfig}


def _replace_section(section: Any, changes: Mapping[str, Any], name: str) -> Any:
    fields = {f.name for f in dataclasses.fields(section)}
    bad = set(changes) - fields
    if bad:
        raise ValueError(f"unknown {name} setting(s) {sorted(bad)}: valid settings are {sorted(fields)}")
    return dataclasses.replace(section, **changes)
