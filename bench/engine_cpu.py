"""Engine vs Hugging Face transformers ``generate`` on the same small model, on CPU, in one run.

    python bench/engine_cpu.py                 # the demo model (Qwen2 shapes, random weights)
    python bench/engine_cpu.py --model PATH    # any local HF checkpoint of a supported family

Both sides get identical work: B prompts of the same length (no padding for HF), greedy, exactly
``--new-tokens`` generated per prompt (EOS ignored), float32. Each configuration is run once to
warm up, then ``--repeats`` times; the table reports the median. Decode dominates the workload,
so the "weights GB/s" column (parameter bytes read per decode step / step time) shows how close
each side gets to streaming the weights at memory speed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from tqdm import tqdm


def _time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    from engine import Engine, SamplingParams
    from engine.demo import resolve_model_path

    path = resolve_model_path(args.model)
    ours = Engine(str(path), max_kv_tokens=64 * 1024)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    vocab = min(ours.model.config.vocab_size, ours.tokenizer.vocab_size if ours.tokenizer else 10**9)
    param_bytes = sum(p.numel() * p.element_size() for p in ours.model.parameters())
    params = SamplingParams(temperature=0, max_new_tokens=args.new_tokens, ignore_eos=True)

    rows = []
    batches = [int(b) for b in args.batches.split(",")]
    g = torch.Generator().manual_seed(0)
    for batch in tqdm(batches, desc="benchmark", unit="config"):
        prompts = torch.randint(0, vocab, (batch, args.prompt_tokens), generator=g)
        lists = prompts.tolist()

        def run_ours(lists: list[list[int]] = lists) -> None:
            ours.generate(lists, params)
            if ours.cache is not None:  # each repeat starts cold, like HF
                ours.cache.evict(ours.cache.total_size)

        def run_hf(prompts: torch.Tensor = prompts) -> None:
            with torch.inference_mode():
                hf.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                            max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)

        t_ours = _time(run_ours, args.repeats)
        t_hf = _time(run_hf, args.repeats)
        tokens = batch * args.new_tokens
        rows.append((batch, tokens / t_ours, tokens / t_hf, t_hf / t_ours,
                     param_bytes * args.new_tokens / t_ours / 1e9, param_bytes * args.new_tokens / t_hf / 1e9))

    cfg = ours.model.config
    print(f"\nmodel: {path.name} ({cfg.architecture}, {param_bytes / 1e6:.0f} MB float32 weights), "
          f"prompt {args.prompt_tokens} + {args.new_tokens} new tokens, greedy, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    print("| batch | agentflow tok/s | transformers tok/s | ratio "
          "| agentflow weights GB/s | transformers weights GB/s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for batch, ours_tps, hf_tps, ratio, ours_bw, hf_bw in rows:
        print(f"| {batch} | {ours_tps:,.1f} | {hf_tps:,.1f} | {ratio:.2f}x | {ours_bw:.1f} | {hf_bw:.1f} |")


if __name__ == "__main__":
    main()
