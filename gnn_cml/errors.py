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


def few(values, limit: int = 5) -> str:
    """``values`` for a one-line message: the first ``limit`` and how many there are in all.

    Example:
        >>> few(range(1000))
        '[0, 1, 2, 3, 4, ... (1000 in all)]'
    """
    values = list(values)
    if len(values) <= limit:
        return "[" + ", ".join(str(v) for v in values) + "]"
    return "[" + ", ".join(str(v) for v in values[:limit]) + f", ... ({len(values)} in all)]"
