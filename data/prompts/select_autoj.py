"""Writes data/prompts/demo.jsonl: a selection of the Auto-J pairwise test set's prompts.

    python data/prompts/select_autoj.py PATH/autoj_pairwise.jsonl > data/prompts/demo.jsonl

Short prompts (under 240 characters) of scenarios a 135M-parameter model can attempt in a hundred
tokens, the first PER_SCENARIO distinct ones of each in file order, interleaved across scenarios so
that `prompts.limit: k` takes a mix. The demo reads the written file, never the source.
"""

from __future__ import annotations

import json
import sys

SCENARIOS = ["open_question", "asking_how_to_question", "explaining_general", "seeking_advice", "chitchat",
             "verifying_fact", "recommendation", "brainstorming", "math_reasoning", "writing_song_lyrics",
             "title_generation", "writing_cooking_recipe"]
PER_SCENARIO = 4
MAX_CHARS = 240
SOURCE = "Auto-J pairwise test set (GAIR-NLP, Apache-2.0), via prometheus-eval/prometheus-eval@dcfb442"


def main(path: str) -> None:
    chosen: dict[str, list[str]] = {s: [] for s in SCENARIOS}
    for line in open(path, encoding="utf-8"):
        row = json.loads(line)
        picks = chosen.get(row["scenario"])
        if picks is not None and len(picks) < PER_SCENARIO and len(row["prompt"]) < MAX_CHARS \
                and row["prompt"] not in picks:
            picks.append(row["prompt"])
    for k in range(PER_SCENARIO):
        for scenario, picks in chosen.items():
            if k < len(picks):
                print(json.dumps({"id": f"autoj-{scenario}-{k + 1}", "prompt": picks[k],
                                  "metadata": {"scenario": scenario, "source": SOURCE}}, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
