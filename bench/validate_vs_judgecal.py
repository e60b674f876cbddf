"""prefcurate's audit against judgecal's on the same simulated position and verbosity verdicts.

    python -m venv .cache/judgecal-venv && .cache/judgecal-venv/bin/pip install judgecal   # once
    .venv/bin/python bench/validate_vs_judgecal.py [--items 1000] [--position 0.8] [--length 1.0]

judgecal (MIT, on PyPI) is the strongest judge-auditing tool we found; it is installed for this
benchmark only, in a virtual environment of its own (it needs scipy, which prefcurate does not), and
runs there in a subprocess. It generates synthetic items, judges them with its mock judge (planted
position bias ``--position`` and verbosity bias ``--length``, in log-odds), and analyses its position
and verbosity probes. The same verdicts then go through prefcurate: the position probe's into a store
(each item a comparison judged in both orders) and the real `full_audit`, the verbosity probe's
(original against padded copy) into `length_bias`, the function behind `audit-dataset`. Printed side
by side: each tool's estimate, 95% interval, p-value and MDE. Target: the point estimates agree
within 0.01.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
JUDGECAL_PYTHON = ROOT / ".cache" / "judgecal-venv" / "bin" / "python"

# Runs under judgecal's own environment: its synthetic items, mock judge and analyses; prints its
# estimates and every judgment (verdict in presented coordinates, and the request's metadata).
JUDGECAL_SIDE = r"""
import json, sys
from judgecal.executors.local import MockJudgeExecutor
from judgecal.fixtures.mock_judge import MockJudgeConfig
from judgecal.fixtures.synthetic import SyntheticConfig, generate_items
from judgecal.probes.base import ProbeConfig, analyze_suite, plan_suite

args = json.loads(sys.argv[1])
items = generate_items(SyntheticConfig(n_items=args["items"], seed=args["seed"]))
config = ProbeConfig(seed=args["seed"])
probes = ["position", "verbosity"]
judgments = MockJudgeExecutor(MockJudgeConfig(seed=args["seed"], beta_position=args["position"],
                                              beta_length=args["length"])).execute(plan_suite(items, probes, config))
estimates = {e.name: {"estimate": e.estimate, "ci": [e.ci_low, e.ci_high], "p": e.p_value, "mde": e.mde, "n": e.n,
                      "method": e.method}
             for result in analyze_suite(judgments, probes, config) for e in result.estimates}
print(json.dumps({"estimates": estimates, "judgments": [{"verdict": j.verdict, "meta": j.meta} for j in judgments]}))
"""


def judgecal_run(items: int, seed: int, position: float, length: float) -> dict:
    if not JUDGECAL_PYTHON.exists():
        sys.exit(f"{JUDGECAL_PYTHON}: no judgecal environment; create it with: python -m venv .cache/judgecal-venv && "
                 ".cache/judgecal-venv/bin/pip install judgecal")
    out = subprocess.run([str(JUDGECAL_PYTHON), "-c", JUDGECAL_SIDE,
                          json.dumps({"items": items, "seed": seed, "position": position, "length": length})],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def position_audit(judgments: list[dict]) -> dict:
    """The position probe's verdicts as a store's comparisons (order ab: response a shown first), audited."""
    from prefcurate.audit.stage import full_audit
    from prefcurate.context import RunContext
    from prefcurate.store import Store

    rows, seen = [], set()
    for j in judgments:
        m = j["meta"]
        if m["probe"] != "position" or j["verdict"] not in ("first", "second", "tie"):
            continue
        a_first = m["first_is_a"]
        winner = "tie" if j["verdict"] == "tie" else "a" if (j["verdict"] == "first") == a_first else "b"
        seen.add(m["item_id"])
        rows.append({"judgment_id": f"{m['item_id']}:{m['condition']}:{m['repeat']}", "prompt_id": m["item_id"],
                     "candidate_id": f"{m['item_id']}:a", "candidate_b_id": f"{m['item_id']}:b", "judge": "mock",
                     "rubric_hash": "judgecal", "mode": "pairwise", "pair_order": "ab" if a_first else "ba",
                     "repeat_index": m["repeat"], "winner": winner, "status": "ok", "run_id": "bench"})
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "judgecal.duckdb") as store:
        store.insert("prompts", [{"prompt_id": i, "messages": [], "prompt_text": i, "source": "judgecal", "run_id": "bench"}
                                 for i in sorted(seen)])
        store.insert("judgments", rows)
        return full_audit(store, RunContext.without_rubric())


def verbosity_audit(judgments: list[dict]) -> dict:
    """The verbosity probe's decisive verdicts (original against its padded copy) as pairs, chosen the
    winner: their p_chosen_longer is the share won by the padded side."""
    from prefcurate.audit.bias import PairColumns, length_bias

    decisive = [j for j in judgments if j["meta"]["probe"] == "verbosity" and j["verdict"] in ("first", "second")]
    lens = [(j["meta"]["first_len"], j["meta"]["second_len"]) if j["verdict"] == "first"
            else (j["meta"]["second_len"], j["meta"]["first_len"]) for j in decisive]
    chosen, rejected = np.array(lens, dtype=float).reshape(-1, 2).T
    cols = PairColumns(chosen, rejected, np.zeros(len(lens), bool), np.zeros(len(lens), bool),
                       np.zeros(len(lens), bool), np.array([j["meta"]["item_id"] for j in decisive], dtype=object))
    return length_bias(cols)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=1000, help="Synthetic items (pairs).")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--position", type=float, default=0.8, help="Planted position bias, log-odds for the first shown.")
    ap.add_argument("--length", type=float, default=1.0, help="Planted verbosity bias, log-odds per unit log length ratio.")
    args = ap.parse_args()

    from prefcurate.audit.gates import DEFAULT_GATES, judge_gate

    theirs = judgecal_run(args.items, args.seed, args.position, args.length)
    audit = position_audit(theirs["judgments"])
    length = verbosity_audit(theirs["judgments"])
    gate = DEFAULT_GATES["p_chosen_longer"]  # its test and MDE, as the store's audit would give them
    longer = judge_gate(gate, gate.threshold, {"length_bias": length}, 0.05)
    gates, position = audit["gates"], audit["position_bias"]
    ours = {
        "first_pick_rate": ("first_position_win_rate", position["first_position_win_rate"],
                            position["first_position_win_rate_ci"], gates["first_position_win_rate"]["p"],
                            gates["first_position_win_rate"]["mde"], position["n"]),
        "positional_mcnemar": ("first_position_flip_share", position["first_position_flip_share"],
                               position["first_position_flip_share_ci"], gates["first_position_flip_share"]["p"],
                               gates["first_position_flip_share"]["mde"], position["n_flips"]),
        "pad_pick_rate": ("p_chosen_longer (padded won)", length["p_chosen_longer"], length["p_chosen_longer_ci"],
                          longer["p"], longer["mde"], length["p_chosen_longer_n"]),
    }
    print(f"{args.items} items, planted position {args.position} and length {args.length} (log-odds), seed {args.seed}")
    print(f"{'judgecal metric':<20} {'estimate':>9} {'95% interval':>17} {'p':>9} {'MDE':>6} {'n':>5} | "
          f"{'prefcurate metric':<28} {'estimate':>9} {'95% interval':>17} {'p':>9} {'MDE':>6} {'n':>5} | diff")
    worst = 0.0
    for name, (our_name, value, ci, p, mde, n) in ours.items():
        t = theirs["estimates"].get(name)
        if t is None or value is None:  # nothing to measure, e.g. no decisive verdict on a padded copy
            print(f"{name:<20} {_f(t and t['estimate']):>9} | {our_name:<28} {_f(value):>9}")
            continue
        diff = abs(value - t["estimate"])
        worst = max(worst, diff)
        print(f"{name:<20} {t['estimate']:>9.4f} {_ci(t['ci']):>17} {_p(t['p']):>9} {_f(t['mde']):>6} {t['n']:>5} | "
              f"{our_name:<28} {value:>9.4f} {_ci(ci):>17} {_p(p):>9} {_f(mde):>6} {n:>5} | {diff:.4f}")
    print(f"largest difference of the point estimates: {worst:.4f} (target <= 0.01)")


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "-"


def _p(p) -> str:
    return "-" if p is None else f"{p:.2g}"


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
