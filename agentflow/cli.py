"""The ``agentflow`` command line.

    agentflow run workflows/triage.yaml --input '{"ticket": "..."}'   # run a workflow, live view on stderr
    agentflow resume RUN_ID --value '{"ok": true}'                     # resume an interrupted run
    agentflow validate workflows/*.yaml                                 # every problem with line:column
    agentflow generate --model demo --prompt "Hello"          # stream a completion
    agentflow generate --model demo --chat --prompt "Hello"   # through the chat template
    agentflow serve --model demo --workflows workflows/      # the HTTP server (agentflow.cli_serve)

``run``, ``resume`` and ``validate`` live in :mod:`agentflow.cli_run`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence

from agentflow import __version__, cli_run, cli_serve, cli_validate
from agentflow.runtime.loop import choose_loop


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        choose_loop()  # a bad AGENTFLOW_LOOP is a usage error of every command, said before any work
    except (ValueError, RuntimeError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    try:
        return int(args.run(args))
    except KeyboardInterrupt:  # before a command installed its own handling (e.g. while importing tools)
        sys.stderr.write("\ninterrupted\n")
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentflow", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"agentflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command")

    gen = sub.add_parser("generate", help="stream a completion from a local model")
    gen.add_argument("--model", default="demo",
                     help="Hugging Face checkpoint directory, or 'demo' (random weights, for trying the machinery)")
    gen.add_argument("--prompt", required=True, help="prompt text ('-' reads stdin)")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt as a user message in the chat template")
    gen.add_argument("--system", help="system message (with --chat)")
    gen.add_argument("--max-new-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--seed", type=int, default=None)
    gen.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    gen.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    gen.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    gen.set_defaults(run=_generate)
    cli_run.add_commands(sub)
    cli_validate.add_command(sub)
    cli_serve.add_command(sub)
    return parser


def _generate(args: argparse.Namespace) -> int:
    from agentflow.runtime.loop import run as run_on_loop
    from engine import AsyncEngine, EngineError, Request, SamplingParams

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    try:
        params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_p=args.top_p, top_k=args.top_k, seed=args.seed, stop=args.stop)
        if args.chat:
            messages = ([{"role": "system", "content": args.system}] if args.system else [])
            request = Request(messages=[*messages, {"role": "user", "content": prompt}], params=params)
        else:
            request = Request(prompt=prompt, params=params)
        print(f"loading {args.model} on {args.device} ...", file=sys.stderr, flush=True)
        engine = AsyncEngine(args.model, device=args.device, dtype=args.dtype)
    except (EngineError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    async def run() -> int:
        started = time.perf_counter()
        last = None
        try:
            async for delta in engine.stream(request):
                sys.stdout.write(delta.text)
                sys.stdout.flush()
                last = delta
        except EngineError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            return 2
        finally:
            await engine.aclose()
        elapsed = time.perf_counter() - started
        if last is not None:
            print(f"\n[{last.completion_tokens} tokens in {elapsed:.2f}s, "
                  f"{last.completion_tokens / elapsed:.1f} tok/s, finish_reason={last.finish_reason}]",
                  file=sys.stderr)
        return 0

    return run_on_loop(run)


if __name__ == "__main__":
    raise SystemExit(main())
