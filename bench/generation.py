"""Generation throughput: the pipeline's vLLM stage against raw vLLM, and n=N against N requests.

    .venv/bin/python bench/generation.py [--model DIR] [--prompts 64] [--n 4] [--max-tokens 64] [--rounds 3]

Both sides of each ratio run in this process on one shared engine, alternating, on the same
prompts and sampling parameters; the median of the rounds is reported. Ratios, not wall
times, are the result: the machines are shared and noisy.

1. pipeline / raw: the generate stage, `prefcurate.generate.run` (chunking, per-prompt seeds, DuckDB writes) vs a
   bare `vllm.LLM.chat` over the same requests. Target >= 0.95.
2. n=N / N x n=1: one request with n parallel samples (the prompt is prefilled once) vs N separate
   single-sample requests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOPICS = ["the moon", "sourdough bread", "binary search", "the French revolution", "photosynthesis",
          "compound interest", "a haiku about rain", "TCP handshakes", "volcanoes", "the Python GIL",
          "jazz harmony", "how vaccines work", "a limerick about cats", "SQL joins", "black holes", "chess openings"]


def make_prompts(k: int) -> list[str]:
    return [f"Question {i}: in a few sentences, explain {TOPICS[i % len(TOPICS)]} to a curious student." for i in range(k)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="Model directory (default: build the tiny model in a temp dir).")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    from vllm import SamplingParams

    from prefcurate import generate
    from prefcurate.config import Config
    from prefcurate.context import RunContext
    from prefcurate.generate import prompt_seed
    from prefcurate.generate.vllm_backend import get_llm, sampling_params, shutdown_engines
    from prefcurate.inputs import Prompt, prompt_id_for
    from prefcurate.store import Store
    from prefcurate.tinymodel import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="bench-gen-"))
    model = args.model or str(build_tiny_model(tmp / "tiny-model"))
    config = Config.model_validate({
        "generator": {"backend": "vllm", "model": model, "n": args.n, "max_tokens": args.max_tokens, "dtype": "float32",
                      "max_model_len": 2048, "enforce_eager": True},
        "judge": {"rubric": str(ROOT / "rubrics" / "helpfulness.yaml")}})
    cfg = config.generator
    texts = make_prompts(args.prompts)
    prompts = [Prompt(prompt_id_for([{"role": "user", "content": t}]), [{"role": "user", "content": t}]) for t in texts]
    ctx = RunContext.of(config).scoped([p.prompt_id for p in prompts])
    llm = get_llm(cfg)
    llm.chat([p.messages for p in prompts[:4]], sampling_params(cfg, 0), use_tqdm=False)  # warm-up

    def pipeline(round_no: int) -> tuple[float, int]:
        with Store(tmp / f"round{round_no}.duckdb") as store:
            store.insert("prompts", [{"prompt_id": p.prompt_id, "messages": p.messages, "prompt_text": p.text}
                                     for p in prompts])
            start = time.perf_counter()
            generate.run(store, ctx)
            elapsed = time.perf_counter() - start
            return elapsed, int(store.scalar("SELECT sum(completion_tokens) FROM candidates"))

    def raw_chat(n: int, requests_per_prompt: int) -> tuple[float, int]:
        messages, params = [], []
        for p in prompts:
            for j in range(requests_per_prompt):
                messages.append(p.messages)
                params.append(SamplingParams(n=n, temperature=cfg.temperature, top_p=cfg.top_p,
                                             max_tokens=cfg.max_tokens, seed=prompt_seed(cfg.seed, p.prompt_id) + j))
        start = time.perf_counter()
        outs = llm.chat(messages, params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        return elapsed, sum(len(c.token_ids) for o in outs for c in o.outputs)

    rows = {"pipeline": [], "raw n=N": [], "raw N x n=1": []}
    for r in range(args.rounds):
        for name, (elapsed, tokens) in (("pipeline", pipeline(r)), ("raw n=N", raw_chat(args.n, 1)),
                                        ("raw N x n=1", raw_chat(1, args.n))):
            rows[name].append(tokens / elapsed)
    shutdown_engines()

    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\n{args.prompts} prompts x n={args.n}, max_tokens={args.max_tokens}, {args.rounds} rounds, model {model}")
    for name, rates in rows.items():
        print(f"  {name:<14} tokens/s median {med[name]:9.1f}   rounds: " + ", ".join(f"{x:.1f}" for x in rates))
    print(f"pipeline / raw vllm.LLM.chat (target >= 0.95): {med['pipeline'] / med['raw n=N']:.3f}")
    print(f"n={args.n} in one request / {args.n} single-sample requests: {med['raw n=N'] / med['raw N x n=1']:.3f}")


if __name__ == "__main__":
    main()
