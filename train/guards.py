"""Guards on a training run (DPO or GRPO), read from its evaluations (train/evaluate.py):

- forgetting: the run stops, status ``stopped``, at the first evaluation whose held-out SFT NLL rose
  more than ``eval.max_nll_rise`` over the base's; the adapter of the last evaluation within the
  bound is the one kept;
- the judge's bias learned: the run is ``drifted`` (`prefcurate train dpo|grpo` exits with code 3) when
  the kept policy's mean sampled length rose more than ``eval.max_length_drift`` of the base's, or
  its opener rate more than ``eval.max_opener_drift``, with the 95% interval excluding zero.

bench/bias_propagation.py shows why: a length- or opener-biased judge's pairs move both.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainerCallback

from prefcurate.train.config import EvalSettings
from prefcurate.train.evaluate import Answers, Evaluations
from prefcurate.train.policy import Plan, save

log = logging.getLogger("prefcurate")


def nll_breach(e: EvalSettings, base: dict, now: dict) -> str | None:
    """Why ``now`` breaks the forgetting guard, or None."""
    if e.max_nll_rise is None or now.get("heldout_sft_nll") is None or base.get("heldout_sft_nll") is None:
        return None
    rise = now["heldout_sft_nll"] - base["heldout_sft_nll"]
    if rise <= e.max_nll_rise:
        return None
    return (f"held-out NLL rose {rise:+.3f} nats/token over the base's {base['heldout_sft_nll']:.3f}, "
            f"beyond eval.max_nll_rise {e.max_nll_rise}")


def drift_breaches(e: EvalSettings, base: dict, now: dict) -> list[str]:
    """One line per sampled metric that rose beyond its bound with its interval excluding zero."""
    out = []
    if e.max_length_drift is not None and now.get("length_drift") and base.get("sample_length"):
        d, bound = now["length_drift"], e.max_length_drift * base["sample_length"]
        if d["estimate"] > bound and d["ci"][0] > 0:
            out.append(f"sample_length rose {d['estimate']:+.1f} tokens (95% interval {d['ci'][0]:+.1f} to "
                       f"{d['ci'][1]:+.1f}), beyond eval.max_length_drift {e.max_length_drift:.0%} of the base's "
                       f"{base['sample_length']:.1f}")
    if e.max_opener_drift is not None and now.get("opener_drift"):
        d = now["opener_drift"]
        if d["estimate"] > e.max_opener_drift and d["ci"][0] > 0:
            out.append(f"opener_rate rose {d['estimate']:+.2f} (95% interval {d['ci'][0]:+.2f} to {d['ci'][1]:+.2f}), "
                       f"beyond eval.max_opener_drift {e.max_opener_drift}")
    return out


class Guard(TrainerCallback):
    """Runs the evaluations every ``eval.every_steps`` steps and at the end; saves the policy of each one
    within the forgetting guard to ``best_dir`` and stops training at the first one outside it."""

    def __init__(self, evaluations, best_dir: Path):
        self.evaluations, self.best_dir = evaluations, best_dir
        self.e: EvalSettings = evaluations.cfg.eval
        self.kept: str | None = None  # the evaluation whose policy is in best_dir
        self.stopped: str | None = None  # why training stopped, when a guard stopped it

    def check(self, when: str, final: bool = False) -> bool:
        """Evaluate now; False (and the reason in ``stopped``) when the forgetting guard is broken. Within it,
        this policy is the one kept (saved to ``best_dir`` unless ``final``: the run saves that one itself)."""
        result = self.evaluations.run(when)
        if breach := nll_breach(self.e, self.evaluations.base, result):
            self.stopped = f"{when}: {breach}"
            return False
        if not final:
            self.evaluations.trainer.save_model(str(self.best_dir))
        self.kept = when
        return True

    def on_step_end(self, args, state, control, **kwargs):
        every = self.e.every_steps
        if self.e.enabled and every and state.global_step % every == 0 and state.global_step < state.max_steps:
            if not self.check(f"step {state.global_step}"):
                control.should_training_stop = True
        return control

    def verdict(self) -> dict:
        """The run's status and what the guards saw: stopped, drifted or ok."""
        kept = self.evaluations.at(self.kept) if self.kept else {}
        drifted = drift_breaches(self.e, self.evaluations.base, kept)
        status = "stopped" if self.stopped else "drifted" if drifted else "ok"
        return {"status": status, "stopped": self.stopped, "kept": self.kept, "drifted": drifted}

    def restore_kept(self, model) -> None:
        """Put the kept policy's weights back into ``model`` when it is not the final one (after a stop, the
        trained one is past the guard)."""
        if self.kept is None or not self.best_dir.is_dir() or self.stopped is None:
            return
        from peft import PeftModel, load_peft_weights, set_peft_model_state_dict

        if isinstance(model, PeftModel):
            set_peft_model_state_dict(model, load_peft_weights(str(self.best_dir)))
        else:
            from transformers import AutoModelForCausalLM

            model.load_state_dict(AutoModelForCausalLM.from_pretrained(str(self.best_dir)).state_dict())

    def clean_up(self) -> None:
        shutil.rmtree(self.best_dir, ignore_errors=True)


@dataclass
class GuardedRun:
    """What training under the guards gave."""

    result: object  # the trainer's TrainOutput
    verdict: dict  # status, stopped, kept, drifted
    evaluations: dict  # metric -> {evaluation: value}
    engine: str | None  # what sampled the evaluations' answers (None: no evaluations)
    adapter_dir: Path
    resumed_from: str | None  # the checkpoint a rerun resumed from


def guarded_training(p: Plan, trainer, tokenizer, test_ds, task: Callable[[Answers], dict]) -> GuardedRun:
    """Train with ``trainer``, evaluating before, every ``eval.every_steps`` steps and after (``task``: the
    method's own metrics of the test split's answers) under the guards; save the kept policy. A rerun of
    the same snapshot and config has the same id and output folder: it resumes from the last checkpoint."""
    from transformers.trainer_utils import get_last_checkpoint

    with Evaluations(p, trainer, tokenizer, test_ds, task) as evaluations:  # its vLLM engine stops with the block
        evaluations.run("before")
        guard = Guard(evaluations, p.out / "kept")
        trainer.add_callback(guard)
        resume = get_last_checkpoint(str(p.out)) if p.out.is_dir() else None
        if resume:
            log.info("train: resuming %s from %s", p.train_run_id, resume)
        result = trainer.train(resume_from_checkpoint=resume)
        if p.cfg.eval.enabled and not guard.stopped:
            guard.check("after", final=True)
        guard.restore_kept(trainer.model)
        adapter_dir = save(p, trainer, tokenizer)
        guard.clean_up()
    return GuardedRun(result, guard.verdict(), evaluations.results, evaluations.engine if p.cfg.eval.enabled else None,
                      adapter_dir, Path(resume).name if resume else None)
