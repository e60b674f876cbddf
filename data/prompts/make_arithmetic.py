"""Write arithmetic.jsonl: small arithmetic questions with their answers, a task whose answers can be
checked without a judge (rubrics/arithmetic.yaml's numeric_answer check), for best-of-N and GRPO.

    python data/prompts/make_arithmetic.py [--n 240] [--seed 0] [--out data/prompts/arithmetic.jsonl]

Seeded: the same arguments write the same file (a test checks the committed one). Each prompt's
metadata holds its `reference` answer, its operation and its split: every fifth prompt is `heldout`,
kept out of training and used to measure pass rates.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
ASKS = ("What is {a} {op} {b}? Reply with the number only.",
        "Compute {a} {op} {b}. End your reply with the answer as a number.",
        "{a} {op} {b} = ? Give just the result.")


def arithmetic(n: int = 240, seed: int = 0) -> list[dict]:
    """``n`` distinct prompts: sums and differences of numbers up to 50, products of numbers up to 12. A
    prompt is never repeated, so none is in both splits."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        op = rng.choice(list(OPERATIONS))
        top = 12 if op == "*" else 50
        a, b = rng.randint(1, top), rng.randint(1, top)
        if op == "-" and b > a:
            a, b = b, a
        prompt = rng.choice(ASKS).format(a=a, op=op, b=b)
        if prompt in seen:
            continue
        seen.add(prompt)
        i = len(rows)
        rows.append({"id": f"arithmetic-{i}", "prompt": prompt,
                     "metadata": {"reference": str(OPERATIONS[op](a, b)), "operation": op,
                                  "split": "heldout" if i % 5 == 4 else "train", "source": f"make_arithmetic.py seed {seed}"}})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=240)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).with_name("arithmetic.jsonl")))
    args = ap.parse_args()
    rows = arithmetic(args.n, args.seed)
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} prompts written to {args.out}")


if __name__ == "__main__":
    main()
