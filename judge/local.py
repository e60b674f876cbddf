"""The local judge: a model in this process scores by token probabilities, so it never fails to parse.

For each criterion the judge is asked for a score and we read the model's next-token
probabilities instead of sampling. Scores can span several tokens ("10" is "1" then "0" for
many tokenizers), so the score strings form a trie: each of its inner nodes costs one forward
pass, and P("1") is P(first token "1") times the probability of *not* continuing to "10".
The score is the probability-weighted mean over the scale, given that the answer is a score;
``score_mass`` records how much probability the model put on valid scores at all.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from prefcurate.config import LocalJudgeConfig
from prefcurate.judge.render import pairwise_messages, pointwise_messages
from prefcurate.judge.verdict import JudgeTask, Verdict
from prefcurate.rubric import Rubric


@dataclass
class ScoreTrie:
    """The score strings of a scale as token sequences, and the queries needed to score them."""

    sequences: dict[int, tuple[int, ...]]
    nodes: dict[tuple[int, ...], list[int]]  # inner node (a token prefix) -> the tokens that can follow it

    @classmethod
    def build(cls, tokenizer, lo: int, hi: int) -> ScoreTrie:
        sequences = {s: tuple(tokenizer.encode(str(s), add_special_tokens=False)) for s in range(lo, hi + 1)}
        nodes: dict[tuple[int, ...], set[int]] = {}
        for seq in sequences.values():
            for k in range(len(seq)):
                nodes.setdefault(seq[:k], set()).add(seq[k])
        return cls(sequences, {node: sorted(children) for node, children in nodes.items()})

    def distribution(self, logprobs: dict[tuple[int, ...], dict[int, float]]) -> tuple[dict[int, float], float]:
        """P(score | the answer is a score) and the total probability of valid scores, from the
        next-token log-probabilities at each inner node."""
        log_p = {}
        for s, seq in self.sequences.items():
            lp = sum(logprobs[seq[:k]][seq[k]] for k in range(len(seq)))
            if seq in self.nodes:  # the sequence may go on to a longer score: it must stop here
                go_on = sum(math.exp(logprobs[seq][t]) for t in self.nodes[seq])
                lp += math.log(max(1.0 - go_on, 1e-300))
            log_p[s] = lp
        top = max(log_p.values())
        weights = {s: math.exp(v - top) for s, v in log_p.items()}
        total = sum(weights.values())
        return {s: w / total for s, w in weights.items()}, math.exp(top) * total


class VLLMScorer:
    """Next-token log-probabilities of chosen tokens, from the shared vLLM engine."""

    def __init__(self, cfg: LocalJudgeConfig):
        from prefcurate.generate.vllm_backend import get_llm

        self.llm = get_llm(cfg)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_len = self.llm.llm_engine.model_config.max_model_len

    def next_token_logprobs(self, prompts: list[list[int]], token_ids: list[list[int]]) -> list[dict[int, float]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts],
            [SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=ids) for ids in token_ids],
            use_tqdm=False,
        )
        return [{t: out.outputs[0].logprobs[0][t].logprob for t in ids} for out, ids in zip(outs, token_ids)]


class HFScorer:
    """The same with transformers: one forward pass per batch, left-padded."""

    def __init__(self, cfg: LocalJudgeConfig):
        from prefcurate.generate.base import context_length
        from prefcurate.generate.hf_backend import get_model

        self.tokenizer, self.model = get_model(cfg)
        self.max_len = context_length(cfg)
        self.batch_size = cfg.forward_batch

    def next_token_logprobs(self, prompts: list[list[int]], token_ids: list[list[int]]) -> list[dict[int, float]]:
        import torch

        results = []
        pad = self.tokenizer.pad_token_id
        for start in range(0, len(prompts), self.batch_size):
            batch = prompts[start:start + self.batch_size]
            width = max(len(p) for p in batch)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            with torch.no_grad():
                logits = self.model(input_ids=ids, attention_mask=mask).logits[:, -1, :].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            for row, wanted in zip(logprobs, token_ids[start:start + self.batch_size]):
                results.append({t: row[t].item() for t in wanted})
        return results


class LocalJudge:
    def __init__(self, cfg: LocalJudgeConfig, rubric: Rubric):
        self.cfg, self.rubric = cfg, rubric
        self.scorer = VLLMScorer(cfg) if cfg.engine == "vllm" else HFScorer(cfg)
        self.tokenizer = self.scorer.tokenizer
        self.trie = ScoreTrie.build(self.tokenizer, rubric.scale.min, rubric.scale.max)
        self.letters = [self.tokenizer.encode(x, add_special_tokens=False)[0] for x in ("A", "B")]

    def _ids(self, messages: list[dict[str, str]]) -> list[int]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def queries(self, task: JudgeTask) -> dict[str, list[int]]:
        """The prompt of each forward-pass family: one per criterion, or one for a pair."""
        if task.pairwise:
            return {"pair": self._ids(pairwise_messages(self.rubric, task))}
        return {c.name: self._ids(pointwise_messages(self.rubric, c, task))
                for c in self.rubric.criteria}

    def run(self, tasks: list[JudgeTask], sink) -> None:
        """Judge ``judge.engine_batch`` tasks per engine call, calling ``sink(i, verdict)`` for each."""
        size = self.cfg.engine_batch
        for start in range(0, len(tasks), size):
            for j, verdict in enumerate(self.judge(tasks[start:start + size])):
                sink(start + j, verdict)

    def judge(self, tasks: list[JudgeTask]) -> list[Verdict]:
        """A verdict for each task: pointwise scores, or which of two responses is better."""
        began = time.perf_counter()
        queries, token_sets, owners = [], [], []
        prepared: list[dict[str, list[int]] | str] = []
        longest_suffix = max(len(s) for s in self.trie.sequences.values())
        for i, task in enumerate(tasks):
            ids = self.queries(task)
            longest = max(len(v) for v in ids.values()) + longest_suffix
            if longest > self.scorer.max_len:
                prepared.append(f"judge input has {longest} tokens, over the judge model's context of "
                                f"{self.scorer.max_len}; raise judge.max_model_len or use a longer-context judge")
                continue
            prepared.append(ids)
            for name, base in ids.items():
                nodes = {(): self.letters} if task.pairwise else self.trie.nodes
                for node, children in nodes.items():
                    queries.append(base + list(node))
                    token_sets.append(children)
                    owners.append((i, name, node))
        logprobs = self.scorer.next_token_logprobs(queries, token_sets) if queries else []
        per_task: dict[int, dict[str, dict[tuple[int, ...], dict[int, float]]]] = {}
        for (i, name, node), lp in zip(owners, logprobs):
            per_task.setdefault(i, {}).setdefault(name, {})[node] = lp
        latency = (time.perf_counter() - began) / max(len(tasks), 1)  # one batch: its time, shared
        verdicts = []
        for i, (task, ids) in enumerate(zip(tasks, prepared)):
            if isinstance(ids, str):  # could not be judged: recorded, never given a made-up score
                verdicts.append(Verdict("skipped", error=ids, latency_s=latency))
                continue
            common = {"input_tokens": sum(len(v) for v in ids.values()), "output_tokens": 0, "cost_usd": 0.0,
                      "latency_s": latency}
            if task.pairwise:
                lp = per_task[i]["pair"][()]
                p_a, p_b = (math.exp(lp[t]) for t in self.letters)
                winner = "tie" if p_a == p_b else ("first" if p_a > p_b else "second")
                raw = {"p_A": p_a / (p_a + p_b), "letter_mass": p_a + p_b}
                verdicts.append(Verdict("ok", winner=winner, raw_response=json.dumps(raw), **common))
                continue
            scores, raw = {}, {}
            for name, node_lp in per_task[i].items():
                dist, mass = self.trie.distribution(node_lp)
                scores[name] = sum(s * p for s, p in dist.items())
                raw[name] = {"distribution": dist, "score_mass": mass}
            verdicts.append(Verdict("ok", scores=scores, raw_response=json.dumps(raw), **common))
        return verdicts
