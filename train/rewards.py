"""GRPO's rewards and its evaluations' pass rates, from the rubric a prompts snapshot froze:

- one reward per rubric check (prefcurate/checks.py's ``evaluate``): 1 when the completion passes, 0
  when it fails, None where the check does not apply (TRL leaves a None out of the sum);
- TRL's soft overlong punishment and repetition penalty, against hacking a check by length or by
  repeating what passes;
- optionally the local judge's score of the completion, scaled to 0..1.

Each is a callable with a ``__name__`` of its own, so TRL logs it as ``rewards/<name>/mean``.
"""

from __future__ import annotations

from prefcurate.checks import evaluate
from prefcurate.config import LocalJudgeConfig
from prefcurate.rubric import Check, Rubric
from prefcurate.train.config import GRPOTrainConfig
from prefcurate.train.evaluate import Answers, clustered_mean, drift


def text_of(completion) -> str:
    """A completion's text: TRL gives conversational completions as [{"role": "assistant", "content": ...}]."""
    return completion[0]["content"] if isinstance(completion, list) else completion


class CheckReward:
    """1.0 when a completion passes the check, 0.0 when it fails, None where it does not apply."""

    def __init__(self, check: Check):
        self.check = check
        self.__name__ = f"check_{check.name}"

    def __call__(self, completions, completion_ids, reference=None, **kwargs) -> list[float | None]:
        references = reference or [None] * len(completions)
        return [_as_reward(evaluate(self.check, text_of(c), r, len(ids))[0])
                for c, ids, r in zip(completions, completion_ids, references)]


def _as_reward(passed: bool | None) -> float | None:
    return None if passed is None else float(passed)


class JudgeReward:
    """The local judge's overall score of each completion, scaled from the rubric's scale to 0..1; None
    where the judge gave no verdict (recorded by TRL as a missing reward, never a made-up score)."""

    __name__ = "judge_score"

    def __init__(self, cfg: LocalJudgeConfig, rubric: Rubric):
        self.cfg, self.rubric, self.judge = cfg, rubric, None

    def __call__(self, prompts, completions, reference=None, **kwargs) -> list[float | None]:
        from prefcurate.judge.local import LocalJudge
        from prefcurate.judge.verdict import JudgeTask

        self.judge = self.judge or LocalJudge(self.cfg, self.rubric)  # started on first use, kept for the run
        references = reference or [None] * len(completions)
        verdicts = self.judge.judge([JudgeTask(p, (text_of(c),), r) for p, c, r in zip(prompts, completions, references)])
        lo, hi = self.rubric.scale.min, self.rubric.scale.max
        return [(self.rubric.overall(v.scores) - lo) / (hi - lo) if v.status == "ok" else None for v in verdicts]


def reward_functions(cfg: GRPOTrainConfig, rubric: Rubric, judge: LocalJudgeConfig | None) -> tuple[list, list[float]]:
    """(the reward functions, their weights): the weighted checks, the penalties that weigh more than 0,
    and the judge when ``rewards.judge`` weighs more than 0."""
    from trl.rewards import get_repetition_penalty_reward, get_soft_overlong_punishment

    r = cfg.rewards
    funcs: list = []
    weights: list[float] = []
    for check in rubric.checks:
        if r.weight_of(check.name) > 0:
            funcs.append(CheckReward(check))
            weights.append(r.weight_of(check.name))
    if r.length_penalty.weight > 0:
        funcs.append(get_soft_overlong_punishment(cfg.max_completion_length,
                                                  min(r.length_penalty.soft_cache, cfg.max_completion_length)))
        weights.append(r.length_penalty.weight)
    if r.repetition_penalty.weight > 0:
        funcs.append(get_repetition_penalty_reward(r.repetition_penalty.ngram_size, r.repetition_penalty.max_penalty))
        weights.append(r.repetition_penalty.weight)
    if r.judge > 0 and judge is not None:
        funcs.append(JudgeReward(judge, rubric))
        weights.append(r.judge)
    return funcs, weights


class PassRates:
    """The evaluations' own metrics for GRPO: on the test prompts' sampled answers, the share that passes
    each check and the share that passes every hard check (``pass_rate``: what best-of-n's curve
    measures at N = 1), each with a 95% interval over prompts; from the second evaluation on, also
    ``pass_rate_gain``, the change in ``pass_rate`` from the first (before training)."""

    def __init__(self, rubric: Rubric, references: list[str | None], seed: int = 0):
        self.rubric, self.references, self.seed = rubric, references, seed
        self.before: list[list[float]] | None = None

    def __call__(self, answers: Answers) -> dict:
        out: dict = {}
        results = [[[evaluate(c, text, ref, len(tokens))[0] for c in self.rubric.checks]
                    for tokens, text in zip(ts, ss)]
                   for ts, ss, ref in zip(answers.tokens, answers.texts, self.references)]
        for i, check in enumerate(self.rubric.checks):
            out[f"check_{check.name}"] = _rate(_known([[a[i] for a in prompt] for prompt in results]), self.seed)
        hard = [i for i, c in enumerate(self.rubric.checks) if c.hard]
        passes = _known([[all_passed([a[i] for i in hard]) for a in prompt] for prompt in results])
        out["pass_rate"] = _rate(passes, self.seed)
        if self.before is None:
            self.before = passes
        elif any(passes) and any(self.before):
            out["pass_rate_gain"] = drift(self.before, passes, self.seed)
        return out


def all_passed(results: list[bool | None]) -> bool | None:
    """Whether every check that applies passed; None when none applies."""
    known = [r for r in results if r is not None]
    return all(known) if known else None


def _known(per_prompt: list[list[bool | None]]) -> list[list[float]]:
    """Per prompt, the results that apply, as 1.0 and 0.0 (a prompt may keep none)."""
    return [[float(v) for v in prompt if v is not None] for prompt in per_prompt]


def _rate(per_prompt: list[list[float]], seed: int) -> dict | None:
    """The mean over the prompts that have a result, with its interval; None when none has."""
    values = [v for v in per_prompt if v]
    return clustered_mean(values, seed) if values else None
