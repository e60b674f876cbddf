"""Training overhead: `make train-dpo` against a bare TRL DPOTrainer script, same snapshot and settings.

    .venv/bin/python bench/train_overhead.py [--pairs 64] [--steps 20] [--rounds 2]

Builds the tiny model and a snapshot of synthetic pairs in a temporary folder, then alternates the
two sides, each in a process of its own. The result is the ratio of training steps per second (the
trainer's own train_runtime, so model loading counts on neither side; target >= 0.95) and each
side's peak memory (maximum RSS of its process). prefcurate runs with its evaluations off, since the
bare script has none; the end-to-end wall times, evaluations left out, are printed for context.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
ROOT = Path(__file__).resolve().parent.parent

# The same DPOConfig and LoRA settings as train/dpo.py builds from the config below.
BARE = """
import json, sys, torch
from datasets import load_dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

snapshot, model_path, out, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
train = load_dataset("parquet", data_files={"train": f"{snapshot}/train.parquet"}, split="train")
tokenizer = AutoTokenizer.from_pretrained(model_path)
model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
args = DPOConfig(output_dir=out, loss_type=["sigmoid"], beta=0.1, learning_rate=5e-6, max_steps=steps,
                 per_device_train_batch_size=4, max_length=256, seed=0, logging_steps=1, save_strategy="no",
                 report_to=[], use_cpu=True, bf16=False, gradient_checkpointing=False)  # TRL's defaults are for GPUs
lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
result = DPOTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer, peft_config=lora).train()
print(json.dumps({"runtime_s": result.metrics["train_runtime"], "steps": result.global_step}))
"""


def run(cmd: list[str], env: dict | None = None) -> tuple[str, float, float]:
    """(stdout, wall seconds, peak RSS in GiB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out[-2000:]}")
    return out, time.perf_counter() - start, usage.ru_maxrss / 2**20


def make_snapshot(folder: Path, n_pairs: int) -> str:
    from prefcurate.config import Config
    from prefcurate.context import RunContext
    from prefcurate.judgments import import_judgments
    from prefcurate.snapshot import create_snapshot
    from prefcurate.store import Store

    rng = random.Random(0)
    words = "the a model answer data point clear short long useful example result value".split()
    lines = []
    for i in range(n_pairs):
        a, b = (" ".join(rng.choice(words) for _ in range(rng.randint(10, 60))) for _ in range(2))
        lines.append({"prompt": f"Question {i}: explain point {i}.", "a": a, "b": b, "judge": "bench",
                      "verdicts": [{"order": "ab", "winner": "a"}, {"order": "ba", "winner": "a"}]})
    f = folder / "judgments.jsonl"
    f.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with Store(folder / "bench.duckdb") as store:
        import_judgments(store, str(f))
        ctx = RunContext.without_rubric(Config.model_validate({"audit": {"blocking_flags": []}}), "the bench")
        return create_snapshot(store, ctx, test_fraction=0.0, force=True).snapshot_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=64, help="Synthetic pairs in the snapshot.")
    ap.add_argument("--steps", type=int, default=20, help="Optimiser steps per training run.")
    ap.add_argument("--rounds", type=int, default=2, help="Runs of each side; the median is reported.")
    args = ap.parse_args()

    from prefcurate.tinymodel import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = build_tiny_model(folder / "model")
        snapshot_id = make_snapshot(folder, args.pairs)
        snapshot = folder / "snapshots" / snapshot_id
        ours, bare = [], []
        for r in range(args.rounds):
            cfg = folder / f"dpo{r}.yaml"  # a new output root per round, so no run resumes another
            cfg.write_text(json.dumps({"model": str(model), "max_steps": args.steps, "per_device_train_batch_size": 4,
                                       "max_length": 256, "save_steps": 10_000, "output_root": str(folder / f"runs{r}"),
                                       "eval": {"enabled": False}}))
            env = os.environ | {"PREFCURATE_DB": str(folder / "bench.duckdb")}
            _, wall, peak = run(["make", "train-dpo", f"SNAPSHOT={snapshot_id}", f"CONFIG={cfg}", f"PY={sys.executable}"], env)
            from prefcurate.store import Store

            with Store(folder / "bench.duckdb") as store:
                m = json.loads(store.query("SELECT metrics FROM train_runs ORDER BY finished_at DESC LIMIT 1")[0]["metrics"])
            ours.append((m["steps"] / m["runtime_s"], wall, peak))
            out, wall, peak = run([sys.executable, "-c", BARE, str(snapshot), str(model), str(folder / f"bare{r}"),
                                   str(args.steps)])
            b = json.loads(out.strip().splitlines()[-1])
            bare.append((b["steps"] / b["runtime_s"], wall, peak))

    med = [statistics.median(x) for x in zip(*ours)], [statistics.median(x) for x in zip(*bare)]
    (o_sps, o_wall, o_peak), (b_sps, b_wall, b_peak) = med
    print(f"{args.pairs} pairs, {args.steps} steps, batch 4, LoRA r=16, {args.rounds} rounds (median)")
    print(f"make train-dpo : {o_sps:.2f} steps/s, wall {o_wall:.1f} s, peak RSS {o_peak:.2f} GiB")
    print(f"bare DPOTrainer: {b_sps:.2f} steps/s, wall {b_wall:.1f} s, peak RSS {b_peak:.2f} GiB")
    print(f"steps/s ratio  : {o_sps / b_sps:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
