"""The one error type the front end turns into a message and an exit status."""

from __future__ import annotations

# Exit statuses shared by every command.
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class SpotwatchError(Exception):
    """A user-facing error: one line on stderr, no traceback, ``exit_code``."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(SpotwatchError):
    """Bad command-line input or configuration (exit status 2)."""

    exit_code = EXIT_USAGE


def aws_error_text(exc: BaseException) -> str:
    """A botocore ClientError as ``Code: Message``; any other exception as ``Type: text``."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', type(exc).__name__)}: {error.get('Message', '')}".strip()
    return f"{type(exc).__name__}: {exc}"
