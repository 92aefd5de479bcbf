"""A reusable contract for the adapters' constructor arguments (LangChain and LlamaIndex alike).

Subclass ``AdapterArgumentsContract`` in a ``Test*`` class and set ``adapter`` (the class) and ``compress(obj,
text)`` (run the adapter on one text, return the text it produced). Every documented argument must reach the
compressor, unknown arguments must fail with the valid names, and regexes must protect in every adapter.
"""

from __future__ import annotations

import re

import pytest

from rlpc_core import Compressor

TEXT = ("Order ZX-4471-Q shipped on Monday from the northern depot, and the courier promised that the parcel "
        "would arrive before the weekend, weather permitting, at the customer's front door in the old town.")


class AdapterArgumentsContract:
    adapter: type = None

    def compress(self, obj, text: str) -> str:  # pragma: no cover - each subclass says how to run its adapter
        raise NotImplementedError

    def test_policy_and_tokenizer_reach_the_compressor(self):
        obj = self.adapter(policy="extractive", tokenizer="words", rate=0.5)
        assert obj.compressor.config.policy == "extractive" and obj.compressor.config.tokenizer == "words"

    def test_compressor_kwargs_reach_the_compressor(self):
        obj = self.adapter(tokenizer="words", compressor_kwargs={"selection": {"words_only": True}, "rate": 0.3})
        assert obj.compressor.config.selection.words_only and obj.compressor.config.rate == 0.3

    def test_checkpoint_and_from_pretrained_load_a_saved_compressor(self, tmp_path):
        Compressor(tokenizer="words", rate=0.4, selection={"units": False}).save_pretrained(tmp_path / "c")
        for obj in (self.adapter(checkpoint=str(tmp_path / "c")), self.adapter.from_pretrained(tmp_path / "c")):
            config = obj.compressor.config
            assert config.tokenizer == "words" and config.rate == 0.4 and not config.selection.units
        # settings given beside the checkpoint override what it saved
        assert self.adapter(checkpoint=str(tmp_path / "c"), policy="extractive").compressor.config.policy == "extractive"

    def test_a_ready_compressor_is_used_as_given(self):
        mine = Compressor(tokenizer="words")
        assert self.adapter(compressor=mine).compressor is mine
        with pytest.raises(ValueError, match="compressor= is given together with policy"):
            self.adapter(compressor=mine, policy="extractive")

    def test_unknown_arguments_fail_with_the_valid_names(self):
        with pytest.raises(ValueError, match=r"unknown argument\(s\) \['rat'\]: valid arguments are .*rate"):
            self.adapter(rat=0.1)
        with pytest.raises(ValueError, match="unknown setting"):
            self.adapter(compressor_kwargs={"rat": 0.1})
        with pytest.raises(ValueError, match="policy"):
            self.adapter(policy="no-such-policy")

    def test_regexes_and_strings_protect(self):
        obj = self.adapter(tokenizer="words", rate=0.3, protect=[re.compile(r"[A-Z]{2}-\d{4}-[A-Z]"), "old town"])
        out = self.compress(obj, TEXT)
        assert "ZX-4471-Q" in out and "old town" in out and len(out.split()) < len(TEXT.split())
        with pytest.raises((TypeError, ValueError), match="protect"):
            self.adapter(protect=[42])
