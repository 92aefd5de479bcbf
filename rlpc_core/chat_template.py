"""Render a chat template (the Jinja text GGUF files and llama.cpp servers carry) for one user message.

Likelihood over an HTTP API scores ``render(message) + target`` as plain text, so the client must know where the
assistant's reply begins; the same text the server's own chat endpoint would build. Rendering runs in Jinja's
sandbox (a template comes from a model file or a server, never trusted code).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from typing import Any, Callable


def _raise(message: str) -> None:
    raise ValueError(f"the chat template raised: {message}")


def _tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _environment() -> Any:
    # The settings transformers and llama-cpp-python render chat templates with: trim/lstrip blocks, loop
    # controls, {% generation %} as a pass-through, tojson without ASCII escapes. Same settings, same text.
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class _GenerationTag(Extension):
        tags = {"generation"}

        def parse(self, parser: jinja2.parser.Parser) -> Any:
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    return env


def renderer(template: str, *, bos_token: str = "", eos_token: str = "") -> tuple[str, Callable[[str], str]]:
    """``(identity, render)`` where ``render(user_message)`` ends where the assistant's reply begins."""
    env = _environment()
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: _dt.datetime.now().strftime(fmt)
    compiled = env.from_string(template)
    identity = "jinja:" + hashlib.sha256(f"{template}\x00{bos_token}\x00{eos_token}".encode()).hexdigest()[:16]

    def render(message: str) -> str:
        return compiled.render(messages=[{"role": "user", "content": message}], add_generation_prompt=True,
                               bos_token=bos_token, eos_token=eos_token)

    return identity, render


def plain_renderer() -> Callable[[str], str]:
    """No template: the message, then a blank line (what the transformers backend does for template-less models)."""
    return lambda message: message + "\n\n"


__all__ = ["plain_renderer", "renderer"]
