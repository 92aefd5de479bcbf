"""What the LangChain and LlamaIndex adapters share: the arguments that choose the compressor, checked once.

Every adapter takes either a ready ``compressor=`` or the settings to build one (``policy=``, ``tokenizer=``,
``checkpoint=``, ``compressor_kwargs=`` for any other :class:`~rlpc_core.CompressorConfig` setting), plus
``protect=`` (strings and compiled regexes). Unknown arguments are errors that list the valid ones, so a typo such
as ``rat=0.5`` never passes silently.
"""

from __future__ import annotations

import re
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .compressor import Compressor
from .spans import check_protect


def build_compressor(compressor: Optional[Compressor] = None, *, policy: Optional[str] = None,
                     tokenizer: Optional[str] = None, checkpoint: Optional[str] = None,
                     compressor_kwargs: Optional[dict[str, Any]] = None) -> Compressor:
    """The compressor an adapter runs: ``compressor`` as given, else one built from the other arguments.

    ``checkpoint`` is a folder written by ``save_pretrained`` or a training run (``Compressor.from_pretrained``);
    ``policy``/``tokenizer``/``compressor_kwargs`` override its settings, or the defaults without one.
    """
    build = {"policy": policy, "tokenizer": tokenizer, "checkpoint": checkpoint, "compressor_kwargs": compressor_kwargs}
    if compressor is not None:
        given = [name for name, value in build.items() if value]
        if given:
            raise ValueError(f"compressor= is given together with {', '.join(given)}: these build a compressor, so "
                             "they would be ignored; set them on the Compressor you pass, or drop compressor=")
        if not isinstance(compressor, Compressor):
            raise TypeError(f"compressor= must be an rlpc_core.Compressor, got {type(compressor).__name__}")
        return compressor
    settings = dict(compressor_kwargs or {})
    for name in ("policy", "tokenizer"):
        if build[name] is not None:
            if name in settings:
                raise ValueError(f"{name}={build[name]!r} is given twice (also in compressor_kwargs); pass it once")
            settings[name] = build[name]
    if checkpoint is not None:
        return Compressor.from_pretrained(checkpoint, **settings)
    return Compressor(**settings)


class CompressorArguments(BaseModel):
    """Pydantic fields every adapter has; mix in before the framework's base class."""

    compressor: Optional[Compressor] = Field(
        default=None, exclude=True,
        description="A ready rlpc Compressor; default: one built from policy/tokenizer/checkpoint/compressor_kwargs "
                    "(the embedded default when none is given; it loads nothing until used). Not serialized.")
    policy: Optional[str] = Field(default=None, description="Compression policy: graph (default), extractive, "
                                                            "generative, or a registered one.")
    tokenizer: Optional[str] = Field(default=None, description="Tokenizer budgets are counted in (an alias, a "
                                                               "Hugging Face folder, tiktoken:<encoding>, words).")
    checkpoint: Optional[str] = Field(default=None, description="A compressor folder (save_pretrained or a "
                                                                "training run) to load, as Compressor.from_pretrained.")
    compressor_kwargs: Optional[dict[str, Any]] = Field(
        default=None, description="Any other CompressorConfig setting, e.g. {'selection': {'units': False}}.")
    protect: list[Union[str, re.Pattern]] = Field(
        default_factory=list, description="Strings (every occurrence) and compiled regexes (every match) kept verbatim.")

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known_arguments(cls, data: Any) -> Any:
        # pydantic's own extra="forbid" message names the stray key but not what was meant: list the valid ones
        if isinstance(data, dict):
            names = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            unknown = sorted(k for k in data if k not in names)
            if unknown:
                raise ValueError(f"{cls.__name__} got unknown argument(s) {unknown}: valid arguments are "
                                 f"{', '.join(sorted(cls.model_fields))}")
        return data

    @field_validator("protect", mode="before")
    @classmethod
    def _check_protect(cls, value: Any) -> list:
        return list(check_protect(value))

    @model_validator(mode="after")
    def _build_compressor(self) -> "CompressorArguments":
        built = build_compressor(self.compressor, policy=self.policy, tokenizer=self.tokenizer,
                                 checkpoint=self.checkpoint, compressor_kwargs=self.compressor_kwargs)
        # the field is set without re-running validation (which would build it again)
        object.__setattr__(self, "compressor", built)
        return self

    @classmethod
    def from_pretrained(cls, checkpoint: str, **kwargs: Any):
        """The adapter running a saved compressor folder: ``Adapter.from_pretrained("runs/minilm", rate=0.5)``."""
        return cls(checkpoint=str(checkpoint), **kwargs)


__all__ = ["CompressorArguments", "build_compressor"]
