"""Domain errors. Each says what went wrong, where, and what to do next.

The CLI turns any `PrefcurateError` into one line on stderr and exit code 2; the store is left
as it was, because every stage validates its whole input before it writes anything.
"""

from __future__ import annotations


class PrefcurateError(Exception):
    """A terminal error with a message fit for one line of output."""

    exit_code = 2


class InputError(PrefcurateError):
    """Bad input in a file: names the file and line, the problem and the fix."""

    def __init__(self, path: str, line: int | None, problem: str, hint: str = ""):
        self.path, self.line, self.problem, self.hint = str(path), line, problem, hint
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}" + (f" ({hint})" if hint else ""))


class ConfigError(PrefcurateError):
    """A config file that cannot be read or does not validate."""


class NotFoundError(PrefcurateError):
    """Something named by id (a snapshot, a model directory) does not exist."""


class GatesFailed(PrefcurateError):
    """The audit's gates failed: the judge is not fit to label training data as it stands."""


class BudgetExhausted(PrefcurateError):
    """A judge's spend would pass judge.max_usd: the run stops, keeping what was judged."""


class StoreError(PrefcurateError):
    """The store cannot be opened, is locked by another process, or refuses a statement."""


class CredentialsRefused(PrefcurateError):
    """A judge's API refused its key (401/403): every later call would fail too, so the run stops."""

    def __init__(self, url: str, variable: str, error):
        # ``error``: an anthropic or openai SDK status error; its body holds the server's own words.
        body = error.body if isinstance(error.body, dict) else {}
        inner = body.get("error", body)
        detail = inner.get("message") if isinstance(inner, dict) and inner.get("message") else error.message
        super().__init__(f"{url} refused the key in ${variable} ({error.status_code}: {detail}); check the key "
                         "(and the server's URL), then rerun: the judgments stored so far are kept")


class MissingDependencyError(PrefcurateError):
    """An optional dependency is not installed; the message holds the pip line that fixes it."""

    def __init__(self, what: str, pip: str):
        super().__init__(f"{what} is not installed: run `{pip}` (or `make setup`)")


class TransientError(Exception):
    """A fault worth retrying (network, rate limit). Never shown to users as-is."""
