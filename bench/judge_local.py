"""Local judge throughput: candidates scored per second by the vLLM local judge, on a real model.

    .venv/bin/python bench/judge_local.py [--model .cache/smollm2-135m-instruct] [--prompts 6] [--n 4]

Candidates are sampled once per arm from the demo's prompts (same seeds, so the same text), then
scored on every criterion of rubrics/helpfulness.yaml by `LocalJudge` (pointwise: one prompt per
criterion, and a second position for two-digit scores, each a one-token read). Arms, each in a
process of its own (vLLM reads its CPU settings at start):

- before: the engine as it was, with one of the cores kept for vLLM's frontend and 128-token KV
  blocks (prefix caching reuses whole blocks, so a candidate's criteria shared little);
- now: every core for the engine and 32-token blocks (the defaults).

Baselines, measured in each arm on the same engine and the same tokens, prefix cache emptied first:
one forward pass per candidate over its first criterion's prompt with prompt log-probabilities
(vLLM's raw prompt-logprob pass), and the same without log-probabilities (bare prefill). Reported:
candidates/s, the judge's rate as a ratio of the raw pass's (above 1: its criteria cost less than
one plain pass, because the rubric and the question are cached across candidates), and now/before.
Target: now/before >= 3.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = "judge_local result: "  # vLLM's shutdown lines follow it on stdout
ARMS = {"before": {"VLLM_CPU_NUM_OF_RESERVED_CPU": "1", "block_size": 128}, "now": {}}


def measure(args: argparse.Namespace) -> dict:
    """One arm, in this process: rates of the judge and of the two baselines."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from prefcurate.config import LocalJudgeConfig
    from prefcurate.inputs import load_prompts
    from prefcurate.judge.local import LocalJudge
    from prefcurate.judge.verdict import JudgeTask
    from prefcurate.rubric import load_rubric

    block = ARMS[args.arm].get("block_size")
    cfg = LocalJudgeConfig(model=args.model, dtype="float32", max_model_len=2048, enforce_eager=True,
                           rubric=str(ROOT / "rubrics" / "helpfulness.yaml"), block_size=block)
    judge = LocalJudge(cfg, load_rubric(cfg.rubric))
    llm = judge.scorer.llm
    prompts = load_prompts(str(ROOT / "data" / "prompts" / "demo.jsonl"), limit=args.prompts).prompts
    messages = [p.messages for p in prompts]
    outs = llm.chat(messages, [SamplingParams(n=args.n, temperature=0.7, max_tokens=args.max_tokens, seed=i)
                               for i in range(len(messages))], use_tqdm=False)
    tasks = [JudgeTask(m, (c.text,)) for m, o in zip(messages, outs) for c in o.outputs]
    first = [judge.queries(t)[judge.rubric.criteria[0].name] for t in tasks]

    def timed(call) -> float:
        llm.reset_prefix_cache()
        start = time.perf_counter()
        call()
        return time.perf_counter() - start

    def one_pass(**params):
        return lambda: llm.generate([TokensPrompt(prompt_token_ids=q) for q in first],
                                    SamplingParams(max_tokens=1, **params), use_tqdm=False)

    return {"candidates": len(tasks), "tokens_per_candidate": sum(map(len, first)) / len(first),
            "judge_s": timed(lambda: judge.judge(tasks)),
            "raw_logprob_pass_s": timed(one_pass(prompt_logprobs=1)), "prefill_s": timed(one_pass())}


def run_arm(arm: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, **{k: v for k, v in ARMS[arm].items() if k.isupper()}}
    cmd = [sys.executable, __file__, "--arm", arm, "--model", args.model, "--prompts", str(args.prompts),
           "--n", str(args.n), "--max-tokens", str(args.max_tokens)]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"arm {arm} failed:\n{out.stderr[-3000:]}")
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith(RESULT))[len(RESULT):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=".cache/smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=6)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)  # internal: run one arm, print JSON
    args = ap.parse_args()
    if args.arm:
        print(RESULT + json.dumps(measure(args)), flush=True)
        return
    results = {arm: run_arm(arm, args) for arm in ARMS}
    first = results["now"]
    print(f"{first['candidates']} candidates of {args.model}, {first['tokens_per_candidate']:.0f} prompt tokens per "
          "criterion; 3 criteria")
    print(f"{'arm':8} {'judge cand/s':>13} {'raw pass cand/s':>16} {'prefill cand/s':>15} {'judge / raw':>12}")
    for arm, r in results.items():
        rate = r["candidates"] / r["judge_s"]
        raw = r["candidates"] / r["raw_logprob_pass_s"]
        print(f"{arm:8} {rate:13.2f} {raw:16.2f} {r['candidates'] / r['prefill_s']:15.2f} {rate / raw:12.2f}")
    speedup = results["before"]["judge_s"] / results["now"]["judge_s"]
    print(f"now / before: {speedup:.2f}x candidates/s (target >= 3: {'held' if speedup >= 3 else 'missed'})")


if __name__ == "__main__":
    main()
