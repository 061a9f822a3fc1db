"""Progress on stderr that tells the truth: run k/n, episode, best validation, patience used.

On a terminal one status line is rewritten in place; anywhere else (a pipe, a log file, CI)
plain lines are printed, at most one every :data:`MIN_INTERVAL_S` seconds (validations and
the end of a run always get theirs when they change what is known), and never a carriage
return. Nothing here estimates a finishing time: early stopping makes the episode cap a
bound, not an expected length. The final JSON results stay on stdout.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from typing import Optional, TextIO

# Non-terminal output: the shortest gap between two ordinary progress lines, and the longest
# silence while a long stretch of episodes runs between validations.
MIN_INTERVAL_S = 2.0
HEARTBEAT_S = 30.0
_TTY_REFRESH_S = 0.1


def stream() -> TextIO:
    return sys.stderr


def is_terminal(out: Optional[TextIO] = None) -> bool:
    """True when progress can rewrite a line in place (``GNN_CML_PROGRESS=plain`` forces lines)."""
    if os.environ.get("GNN_CML_PROGRESS", "").lower() == "plain":
        return False
    out = out or stream()
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False


def _is_main() -> bool:
    from gnn_cml.engine import distributed as dist  # light: torch.distributed only once initialised

    return dist.is_main()


def status(message: str, enabled: bool = True) -> None:
    """One kept line on stderr (start-up, phases, summaries); silent when ``enabled`` is False."""
    if enabled and _is_main():
        Line.clear_current()
        print(message, file=stream(), flush=True)


def percent(value: Optional[float]) -> str:
    return "-" if value is None or value != value else f"{100 * value:.1f}%"


class Line:
    """A status line: rewritten in place on a terminal, printed as plain lines elsewhere."""

    _active: Optional["Line"] = None  # the terminal line currently drawn, cleared before kept lines

    def __init__(self, enabled: bool = True):
        self.enabled = enabled and _is_main()
        self.tty = is_terminal()
        self._last_draw = 0.0
        self._last_plain = float("-inf")
        self._last_text: Optional[str] = None
        self._drawn = False

    @classmethod
    def clear_current(cls) -> None:
        if cls._active is not None:
            cls._active._erase()

    def _erase(self) -> None:
        if self._drawn:
            out = stream()
            out.write("\r\033[K")
            out.flush()
            self._drawn = False
        if Line._active is self:
            Line._active = None

    def update(self, text: str, important: bool = False, force: bool = False) -> bool:
        """Show ``text`` (returns whether it was shown). Plain mode prints it when ``force``, or when
        ``important`` and :data:`MIN_INTERVAL_S` has passed, or after :data:`HEARTBEAT_S` of silence."""
        if not self.enabled:
            return False
        now = time.monotonic()
        if self.tty:
            if force or important or now - self._last_draw >= _TTY_REFRESH_S:
                width = shutil.get_terminal_size((120, 20)).columns - 1
                out = stream()
                out.write("\r\033[K" + text[:width])
                out.flush()
                self._drawn, self._last_draw = True, now
                Line._active = self
                return True
            return False
        gap = now - self._last_plain
        if text == self._last_text:  # nothing new to say (e.g. a forced final line already shown)
            return False
        if force or (important and gap >= MIN_INTERVAL_S) or gap >= HEARTBEAT_S:
            print(text, file=stream(), flush=True)
            self._last_plain, self._last_text = now, text
            return True
        return False

    def close(self) -> None:
        if self.enabled and self.tty:
            self._erase()


class TrainProgress:
    """What :meth:`Trainer.fit` shows: ``run 2/5 · episode 140 · best val 61.0% @ 90 · 2 of 10
    validations without gain``."""

    def __init__(self, label: str, metric: str, patience: int, max_episodes: int, enabled: bool = True):
        self.label, self.metric, self.patience, self.max_episodes = label, metric, patience, max_episodes
        self.line = Line(enabled)
        self.started = time.monotonic()
        self.first_episode: Optional[int] = None
        self.best: Optional[float] = None
        self.best_episode = 0
        self.bad = 0
        self.val: Optional[float] = None

    def _fmt(self, value: Optional[float]) -> str:
        if self.metric == "accuracy":
            return percent(value)
        return "-" if value is None else f"{value:.4g}"

    def text(self, episode: int) -> str:
        parts = [self.label, f"episode {episode} (at most {self.max_episodes})"]
        if self.best is not None:
            parts.append(f"val {self._fmt(self.val)}")
            parts.append(f"best val {self._fmt(self.best)} @ {self.best_episode}")
            parts.append(f"{self.bad} of {self.patience} validations without gain")
        if self.first_episode is not None and episode > self.first_episode:
            seconds = time.monotonic() - self.started
            parts.append(f"{(episode - self.first_episode) / seconds:.1f} episodes/s")
        return " · ".join(parts)

    def start(self, episode: int) -> None:
        self.first_episode = episode
        self.started = time.monotonic()
        self.line.update(self.text(episode) + (" · resumed" if episode else " · training"), force=True)

    def episode(self, episode: int) -> None:
        self.line.update(self.text(episode))

    def validated(self, episode: int, val: float, best: float, best_episode: int, bad: int,
                  final: bool = False) -> None:
        """A validation's outcome; ``final`` (the run ends here) leaves the line to :meth:`finish`."""
        self.val, self.best, self.best_episode, self.bad = val, best, best_episode, bad
        if not final or self.line.tty:
            self.line.update(self.text(episode), important=True)

    def finish(self, episode: int, stopped_early: bool) -> None:
        why = (f"stopped early: {self.patience} validations without gain" if stopped_early
               else f"reached the episode cap ({self.max_episodes})")
        text = self.text(episode) + f" · {why}"
        if self.line.tty:
            self.line.close()
        else:
            self.line.update(text, force=True)

    def close(self) -> None:
        self.line.close()


class TaskProgress:
    """``<label> · testing · task 40/100`` while fixed tasks are evaluated."""

    def __init__(self, label: str, total: int, enabled: bool = True, what: str = "testing"):
        self.label, self.total, self.what = label, total, what
        self.line = Line(enabled)
        self.line.update(f"{label} · {what} on {total} tasks", force=True)

    def task(self, done: int) -> None:
        self.line.update(f"{self.label} · {self.what} · task {done}/{self.total}")

    def close(self) -> None:
        self.line.close()
