"""The consistency audit at scale: 1M candidates over 250k prompts and 250k pairs, in DuckDB.

    .venv/bin/python bench/audit_scale.py [--prompts 250000] [--sample 2000]

Synthesises a store (4 candidates per prompt with pointwise scores, a best-worst pair per prompt,
each pair judged pairwise in both orders), then times the full audit (features, metrics, flags,
gates, stored rows). The baseline is a row-wise pandas implementation of the same features,
metrics and flags (a Python loop over rows, lookups through pre-grouped frames), timed in the same
run on a subsample of ``--sample`` prompts and scaled up linearly. Targets: the audit in <= 20 s
on 2 cores, >= 10x the row-wise baseline. Peak memory (the process's maximum RSS, DuckDB included)
is reported.
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WORDS = ("the a model answer data point clear short long useful example result because therefore "
         "first second value method simple option careful step check return number string list table "
         "query index cache page light water energy plant system network packet stream error test").split()

# Deterministic synthetic rows, made by DuckDB itself (hash-based choices): texts of 10-70 words, one
# in seven opening with "Certainly!", one in ten cut off at the token limit, 1% failed judgments.
SYNTH = """
INSERT INTO prompts (prompt_id, messages, prompt_text, source, run_id)
SELECT 'p' || i, '[{{"content":"question ' || i || '","role":"user"}}]', 'question ' || i, 'bench', 'bench'
FROM range({n}) t(i);

INSERT INTO candidates (candidate_id, prompt_id, sample_index, text, finish_reason, completion_tokens, generator, run_id)
SELECT 'c' || i || '_' || k, 'p' || i, k,
       CASE WHEN hash(i, k, 'o') % 7 = 0 THEN 'Certainly! ' ELSE '' END ||
       array_to_string(list_transform(range((10 + hash(i, k) % 60)::BIGINT), lambda j: $words[(1 + hash(i, k, j) % {n_words})::BIGINT]), ' '),
       CASE WHEN hash(i, k, 'f') % 10 = 0 THEN 'length' ELSE 'stop' END, (10 + hash(i, k) % 60)::INTEGER, 'bench:gen', 'bench'
FROM range({n}) t(i), range(4) s(k);

INSERT INTO judgments (judgment_id, prompt_id, candidate_id, judge, rubric_hash, mode, repeat_index, overall, status, run_id)
SELECT 'j' || candidate_id, prompt_id, candidate_id, 'bench:judge', 'r', 'pointwise', 0,
       CASE WHEN hash(candidate_id, 's') % 100 = 0 THEN NULL
            ELSE 1 + (hash(candidate_id) % 900) / 100.0 + (length(text) / 400.0) END,
       CASE WHEN hash(candidate_id, 's') % 100 = 0 THEN 'parse_error' ELSE 'ok' END, 'bench'
FROM candidates;

INSERT INTO pairs (pair_id, prompt_id, chosen_id, rejected_id, strategy, chosen_score, rejected_score, margin, judge, rubric_hash, run_id)
SELECT 'pr' || prompt_id, prompt_id, arg_max(candidate_id, overall), arg_min(candidate_id, overall), 'best_worst',
       max(overall), min(overall), max(overall) - min(overall), 'bench:judge', 'r', 'bench'
FROM judgments WHERE status = 'ok' GROUP BY prompt_id HAVING count(*) >= 2;

INSERT INTO judgments (judgment_id, prompt_id, candidate_id, candidate_b_id, judge, rubric_hash, mode, pair_order,
                       repeat_index, winner, status, run_id)
SELECT 'v' || pair_id || o, prompt_id, chosen_id, rejected_id, 'bench:judge', 'r', 'pairwise', o, 0,
       CASE WHEN hash(pair_id, o) % 10 < 8 THEN 'a' WHEN hash(pair_id, o) % 10 = 8 THEN 'b' ELSE 'tie' END, 'ok', 'bench'
FROM pairs, (VALUES ('ab'), ('ba')) v(o);
"""


def synthesise(store, n: int) -> None:
    for statement in SYNTH.format(n=n, n_words=len(WORDS)).split(";\n"):
        if statement.strip():
            store.execute(statement, {"words": list(WORDS)} if "$words" in statement else None)


def rowwise_baseline(store, prompts: list[str]) -> dict:
    """The same features, metrics and flags, computed row by row in pandas over a subsample."""
    import numpy as np
    import pandas as pd

    from prefcurate.audit.features import DEFAULT_PHRASES, INJECTION, opener_of

    closer, injection, word = (re.compile(DEFAULT_PHRASES.closer_pattern, re.ASCII), re.compile(INJECTION, re.ASCII),
                               re.compile(r"\w+", re.ASCII))

    def features(text: str) -> SimpleNamespace:
        words = word.findall(text.lower())
        grams = list(zip(words, words[1:], words[2:]))
        return SimpleNamespace(chars=len(text), words=len(words), opener=opener_of(text), closer=closer.search(text.rstrip()),
                               repetition_ratio=1 - len(set(grams)) / len(grams) if grams else 0.0,
                               injection_attempt=bool(injection.search(text)))

    store.con.register("ids", pd.DataFrame({"prompt_id": prompts}))
    cands = store.con.execute("SELECT c.* FROM candidates c JOIN ids USING (prompt_id)").df()
    judg = store.con.execute("SELECT j.* FROM judgments j JOIN ids USING (prompt_id)").df()
    pairs = store.con.execute("SELECT p.* FROM pairs p JOIN ids USING (prompt_id)").df()

    feats = {row.candidate_id: features(row.text) for row in cands.itertuples()}
    text = dict(zip(cands.candidate_id, cands.text))
    finish = dict(zip(cands.candidate_id, cands.finish_reason))
    pointwise = {cid: g for cid, g in judg[judg["mode"] == "pointwise"].groupby("candidate_id")}
    pairwise = {key: g for key, g in judg[judg["mode"] == "pairwise"].groupby(["candidate_id", "candidate_b_id"])}

    flags, longer, opener_wins, swap_agree, first_won = [], [], [], [], []
    for pr in pairs.itertuples():
        c, r = pr.chosen_id, pr.rejected_id
        fc, fr = feats[c], feats[r]
        if fc.chars != fr.chars:
            longer.append(fc.chars > fr.chars)
        if (fc.opener is None) != (fr.opener is None):
            opener_wins.append(fc.opener is not None)
        verdicts = pairwise.get((c, r))
        if verdicts is not None:
            ok = verdicts[verdicts.status == "ok"]
            by_order = dict(zip(ok.pair_order, ok.winner))
            if len(by_order) == 2:
                swap_agree.append(by_order["ab"] == by_order["ba"])
                if by_order["ab"] != by_order["ba"]:
                    flags.append((pr.pair_id, "swap_inconsistent"))
            if (ok.winner == "tie").any():
                flags.append((pr.pair_id, "tie"))
            if len(ok) and (ok.winner == "b").all():
                flags.append((pr.pair_id, "reversed"))
            first_won += [(o == "ab") == (w == "a") for o, w in by_order.items() if w != "tie"]
        failed = any((g.status != "ok").any() for g in (pointwise.get(c), pointwise.get(r)) if g is not None)
        if failed:
            flags.append((pr.pair_id, "judge_failure"))
        if pr.margin < 1.0:
            flags.append((pr.pair_id, "low_margin"))
        a, b = (" ".join(text[x].lower().split()) for x in (c, r))
        sa, sb = (set(zip(w, w[1:], w[2:])) for w in (a.split(), b.split()))
        if a == b or (sa | sb and len(sa & sb) / len(sa | sb) >= 0.9):
            flags.append((pr.pair_id, "duplicate"))
        for f, x in ((fc, c), (fr, r)):
            if not text[x].strip() or finish[x] == "length" or (f.words >= 12 and f.repetition_ratio >= 0.5):
                flags.append((pr.pair_id, "degenerate"))
                break
        if fc.injection_attempt or fr.injection_attempt:
            flags.append((pr.pair_id, "injection_attempt"))
    return {"p_chosen_longer": float(np.mean(longer)), "opener_win_rate": float(np.mean(opener_wins)),
            "swap_consistency": float(np.mean(swap_agree)), "first_position_win_rate": float(np.mean(first_won)),
            "flags": len(flags)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=250_000, help="Prompts (4 candidates and one pair each).")
    ap.add_argument("--sample", type=int, default=2_000, help="Prompts in the row-wise baseline's subsample.")
    args = ap.parse_args()

    from prefcurate.audit.features import DEFAULT_PHRASES, compute_features
    from prefcurate.audit.stage import full_audit
    from prefcurate.context import RunContext
    from prefcurate.store import Store

    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        t = time.perf_counter()
        synthesise(store, args.prompts)
        counts = store.counts()
        print(f"synthesised in {time.perf_counter() - t:.1f} s: {json.dumps(counts)}")

        t = time.perf_counter()
        n_features = compute_features(store, DEFAULT_PHRASES)
        t_features = time.perf_counter() - t
        t = time.perf_counter()
        metrics = full_audit(store, RunContext.without_rubric())
        t_rest = time.perf_counter() - t
        audit_s = t_features + t_rest
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

        sample = [r["prompt_id"] for r in store.query(
            "SELECT prompt_id FROM pairs ORDER BY hash(prompt_id) LIMIT ?", [args.sample])]
        t = time.perf_counter()
        baseline = rowwise_baseline(store, sample)
        baseline_s = (time.perf_counter() - t) * counts["pairs"] / len(sample)

    print(f"audit: features {t_features:.1f} s ({n_features} candidates), metrics + flags + gates {t_rest:.1f} s, "
          f"total {audit_s:.1f} s (target <= 20 s)")
    print(f"row-wise pandas baseline, {len(sample)} of {counts['pairs']} pairs scaled up: {baseline_s:.1f} s")
    print(f"speed-up over row-wise: {baseline_s / audit_s:.1f}x (target >= 10x)")
    print(f"peak memory (max RSS): {peak_gib:.2f} GiB")
    print("agreement on the subsample (baseline) and the whole store (audit):")
    for key, ours in (("p_chosen_longer", metrics["length_bias"]["p_chosen_longer"]),
                      ("opener_win_rate", metrics["opener_bias"]["opener_win_rate"]),
                      ("swap_consistency", metrics["consistency"]["swap_consistency"]),
                      ("first_position_win_rate", metrics["position_bias"]["first_position_win_rate"])):
        print(f"  {key}: {baseline[key]:.3f} vs {ours:.3f}")
    print(f"  flags per pair: {baseline['flags'] / len(sample):.3f} vs {sum(metrics['flags'].values()) / metrics['n_pairs']:.3f}")


if __name__ == "__main__":
    main()
