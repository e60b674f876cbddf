"""Per-stage counts: what each stage did, printed by the CLI, logged by the flow and stored with the run."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass
class StageStats:
    def as_dict(self) -> dict:
        """The counts, without bulky fields marked ``metadata={"summary": False}``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("summary", True)}

    def markdown(self) -> str | None:
        """A report worth publishing (the flow makes it a Prefect artifact); most stages have none."""
        return None
