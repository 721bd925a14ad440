"""User-facing errors.

Anything a user can cause (a bad environment id, a corrupt model file, an unreachable LLM server)
is raised as :class:`UltraRLError`; the command line prints its message as one line and exits
with code 2. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable

EXIT_USAGE = 2


class UltraRLError(Exception):
    """An error caused by the user's input or environment, with a one-line explanation."""

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints it as is.
        super().__init__(" ".join(str(message).split()))


def checked_value(check: Callable[[str], object], value: str) -> str:
    """``value`` if ``check`` accepts it; its UltraRLError as the ValueError pydantic reports."""
    try:
        check(value)
    except UltraRLError as exc:
        raise ValueError(str(exc)) from exc
    return value


class LLMUnavailableError(UltraRLError):
    """The LLM backend cannot be used at all (server unreachable, bad credentials, missing model)."""
