"""The one exception type for mistakes a user can make.

The CLI catches :class:`GnnCmlError` and prints its message as a single line
(exit code 2); library callers can catch it like any ``ValueError``.
"""


class GnnCmlError(ValueError):
    """A user-facing error whose message names the problem and the fix."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`GnnCmlError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise GnnCmlError(message)
