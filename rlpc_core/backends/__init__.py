"""Where an evaluator's answers come from: one small interface, three kinds of reader.

A reader spec names the backend:

* ``llamacpp:<alias or path.gguf>``: llama.cpp in this process (``pip install 'rlpc[reader]'``); the GGUF's own
  chat template, greedy decoding, teacher-forced likelihoods from the model's logits;
* ``openai:<base_url>#<model>``: any OpenAI-compatible server (llama.cpp's, vLLM, Ollama, OpenAI itself), e.g.
  ``openai:http://127.0.0.1:8080/v1#qwen2.5-coder-1.5b-instruct``; the API key comes from an environment variable;
* anything else: a transformers causal LM (an embedded alias, a local folder or a hub id), as before.

Every backend answers user messages (it applies its chat template itself) and yields ``(index, value)`` pairs as
they are computed, in any order, so that :class:`~rlpc_core.evaluator.Evaluator` stores each one in its cache the
moment it exists: a reader that dies mid-run loses nothing already paid for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping, Optional, Protocol, Sequence

LLAMACPP = "llamacpp:"
OPENAI = "openai:"


class ReaderError(RuntimeError):
    """A reader could not answer; the message names the reader, what happened and what to do."""


class ReaderUnavailable(ReaderError):
    """The reader's server cannot be reached (refused, timed out, gone mid-run)."""


class ReaderCapabilityError(ReaderError):
    """The reader cannot do what was asked (e.g. a server that gives no prompt log-probabilities)."""


@dataclass(frozen=True)
class Reply:
    """One generated reply and what it cost."""

    #: The reply alone: never the prompt, the chat template or the system message.
    text: str
    #: Tokens of the rendered prompt (chat template included) and of the reply, as the reader counts them.
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    #: Prompt tokens whose KV cache was reused from the previous request (llama.cpp's prefix cache): not prefilled.
    reused_tokens: int = 0
    #: Seconds spent on the prompt (prefill) and on decoding; ``None`` where the backend cannot tell them apart.
    prefill_seconds: Optional[float] = None
    generation_seconds: Optional[float] = None
    #: Wall seconds of the whole request, as the client saw it.
    seconds: Optional[float] = None
    #: ``stop`` (end of turn or a stop string) or ``length`` (ran out of max_new_tokens).
    finish_reason: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Reply":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Backend(Protocol):
    """What an evaluator needs from a reader."""

    #: Everything the outputs depend on, for cache keys (a GGUF's sha256; a server's URL and model name).
    identity: str
    #: One line for reports: which model, where, how it runs.
    description: str

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int,
                 stop: Sequence[str] = ()) -> Iterator[tuple[int, Reply]]:
        """Greedy replies to user messages, yielded as ``(index into prompts, reply)`` as each is done."""

    def loglikelihood(self, pairs: Sequence[tuple[str, str]]) -> Iterator[tuple[int, float]]:
        """Mean log-probability per token of each target as the assistant's reply to its user message."""


def backend_kind(spec: str) -> str:
    """``llamacpp``, ``openai`` or ``transformers`` for a reader spec."""
    if spec.startswith(LLAMACPP):
        return "llamacpp"
    if spec.startswith(OPENAI):
        return "openai"
    return "transformers"


#: Settings each backend accepts beyond the evaluator's own, with why their defaults are what they are.
BACKEND_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "transformers": (),
    # n_ctx 4096: a ~2k-token few-shot prompt plus a 256-token chain of thought; threads None: all cores.
    "llamacpp": ("n_ctx", "threads", "prefix_cache"),
    "openai": ("concurrency", "timeout", "retries", "api_key_env", "chat_template"),
}


def make_backend(spec: str, *, dtype: str = "float32", device: str = "cpu", batch_size: int = 4,
                 options: Optional[Mapping[str, Any]] = None) -> Backend:
    """The backend for ``spec``; unknown options raise, naming the ones this backend takes."""
    kind = backend_kind(spec)
    options = dict(options or {})
    unknown = sorted(set(options) - set(BACKEND_OPTIONS[kind]))
    if unknown:
        valid = ", ".join(BACKEND_OPTIONS[kind]) or "none"
        raise ValueError(f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a setting of {kind} readers "
                         f"(reader {spec!r}); valid settings: {valid}")
    if kind == "llamacpp":
        from .llamacpp import LlamaCppBackend

        return LlamaCppBackend(spec[len(LLAMACPP):], **options)
    if kind == "openai":
        from .openai import OpenAIBackend

        return OpenAIBackend(spec[len(OPENAI):], **options)
    from .hf import TransformersBackend

    return TransformersBackend(spec, dtype=dtype, device=device, batch_size=batch_size)


__all__ = ["BACKEND_OPTIONS", "Backend", "LLAMACPP", "OPENAI", "ReaderCapabilityError", "ReaderError",
           "ReaderUnavailable", "Reply", "backend_kind", "make_backend"]
