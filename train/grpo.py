"""GRPO on a prompts snapshot with TRL, rewarded by the rubric's verifiable checks.

    make train-grpo SNAPSHOT=<id> [CONFIG=train/configs/grpo.yaml]
    prefcurate train grpo --snapshot <id> --config train/configs/grpo.yaml

Where an answer can be checked, a scoring function beats a judge: each check the snapshot's rubric
lists is a reward (train/rewards.py), beside TRL's length and repetition penalties and, optionally, the
local judge's score. The snapshot (`prefcurate snapshot prompts`) froze the prompts, their reference
answers and the rubric, so the rewards are the ones it was made with, whatever the files say now.
Evaluations, guards, checkpoints and the ``train_runs`` row are DPO's (train/guards.py): the held-out
NLL, sampled length and opener rate before and after, plus the test prompts' check pass rates and the
pass-rate gain with its 95% interval. Each reward's mean over training is in the run's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefcurate.config import Config, LocalJudgeConfig
from prefcurate.errors import ConfigError
from prefcurate.rubric import Rubric
from prefcurate.snapshot import PROMPTS_FORMAT
from prefcurate.store import Store
from prefcurate.train.config import GRPOTrainConfig
from prefcurate.train.policy import (
    Plan,
    TrainResult,
    load_policy,
    lora_config,
    plan_run,
    recorded_training,
    splits,
    trainer_args,
)
from prefcurate.train.rewards import PassRates, reward_functions


@dataclass
class GRPOPlan:
    """A GRPO run's plan: what every method settles, the snapshot's rubric and the judge of the reward."""

    run: Plan
    rubric: Rubric
    judge: LocalJudgeConfig | None  # None unless rewards.judge weighs more than 0


def plan(store: Store, snapshot_id: str, cfg: GRPOTrainConfig) -> GRPOPlan:
    """Check the snapshot (checksums, prompts, a train split) and the rewards against its rubric, so that
    a bad config stops the run with the store as it was."""
    p = plan_run(store, "grpo", snapshot_id, cfg, PROMPTS_FORMAT, "prompts with reference answers",
                 "prefcurate snapshot prompts")
    rubric = Rubric.model_validate(p.manifest["rubric"])
    names = [c.name for c in rubric.checks]
    if unknown := sorted(set(cfg.rewards.checks) - set(names)):
        raise ConfigError(f"rewards.checks names {unknown}, which rubric {rubric.name} of snapshot {snapshot_id} does "
                          f"not list; its checks are {names or 'none'}")
    weighted = [n for n in names if cfg.rewards.weight_of(n) > 0]
    if not weighted and not cfg.rewards.judge:
        raise ConfigError(f"rubric {rubric.name} of snapshot {snapshot_id} has no check to reward (weighted above 0) "
                          "and rewards.judge is 0: add checks to the rubric, or set rewards.judge")
    return GRPOPlan(p, rubric, judge_of(p.manifest) if cfg.rewards.judge else None)


def judge_of(manifest: dict) -> LocalJudgeConfig:
    """The judge of the run that made the snapshot; the judge reward needs it to be local."""
    config = manifest["run_configs"].get(manifest["run_id"])
    judge = Config.model_validate(config).judge if config else None
    if not isinstance(judge, LocalJudgeConfig):
        raise ConfigError(f"rewards.judge: snapshot {manifest['snapshot_id']} was made with judge "
                          f"{manifest['judges']}; the judge reward runs a local judge (judge.backend local): make the "
                          "snapshot with such a config, or set rewards.judge to 0")
    return judge


def train_grpo(store: Store, snapshot_id: str, cfg: GRPOTrainConfig) -> TrainResult:
    g = plan(store, snapshot_id, cfg)
    return recorded_training(store, g.run, lambda metrics: train(g, metrics))


def train(g: GRPOPlan, metrics: dict) -> Path:
    """Train under the guards, evaluating the test prompts' pass rates before and after; fill ``metrics``."""
    from trl import GRPOTrainer

    from prefcurate.train.guards import guarded_training  # transformers: only once training starts

    p, cfg = g.run, g.run.cfg
    train_ds, test_ds = splits(p)
    tokenizer, model, base_weights = load_policy(p)
    funcs, weights = reward_functions(cfg, g.rubric, g.judge)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=grpo_args(g, weights), train_dataset=train_ds,
                          processing_class=tokenizer, peft_config=lora_config(cfg))
    references = test_ds["reference"][:cfg.eval.max_prompts] if test_ds is not None else []
    guarded = guarded_training(p, trainer, tokenizer, test_ds, PassRates(g.rubric, references, cfg.seed))
    metrics.update({
        **guarded.verdict, "steps": trainer.state.global_step, "train_prompts": p.snapshot.n_train,
        "test_prompts": p.snapshot.n_test, "base_weights": base_weights,
        "runtime_s": guarded.result.metrics.get("train_runtime"), "resumed_from": guarded.resumed_from,
        "rewards": rewards_over_training(trainer.state.log_history, funcs, weights),
        "eval": guarded.evaluations, "eval_engine": guarded.engine,
    })
    return guarded.adapter_dir


def rewards_over_training(history: list[dict], funcs: list, weights: list[float]) -> dict:
    """Each reward's weight and its mean at the first and the last logged step and over all of them, and
    the same of the weighted total: whether a check was learned, or a penalty was what moved."""
    out = {}
    for name, weight in [(f.__name__, w) for f, w in zip(funcs, weights)] + [("total", None)]:
        key = "reward" if name == "total" else f"rewards/{name}/mean"
        values = [h[key] for h in history if key in h]
        out[name] = {"weight": weight, "first": values[0] if values else None, "last": values[-1] if values else None,
                     "mean": sum(values) / len(values) if values else None}
    return out


def grpo_args(g: GRPOPlan, weights: list[float]):
    from trl import GRPOConfig

    cfg = g.run.cfg
    return GRPOConfig(**trainer_args(g.run), num_generations=cfg.num_generations,
                      max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, beta=cfg.beta,
                      reward_weights=weights)
