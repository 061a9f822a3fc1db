"""A study as independent units, run one after another, in local worker processes, or as Ray tasks.

A *unit* is one piece of a study that nothing else in the study waits on (in Table 3: one graph x
setting x class split x arm, whose runs train as one batch). It is a plain function call that writes
its results under the study's ``--out``, exactly what a serial run writes there; the report is built
afterwards from the finished units on disk. An *executor* runs a list of units:

- :class:`SerialExecutor`: in this process, in order;
- :class:`LocalExecutor` (``--jobs N``): N worker processes on this machine;
- :class:`RayExecutor` (``--executor ray [--address ADDR]``, ``pip install gnn-cml[ray]``): Ray
  tasks on a Ray cluster (a local one without an address), each on one CPU.

A worker that dies mid-unit (killed, out of memory, a lost node) costs only its unit: the unit is
started again with ``retry_kwargs`` (``resume=True``: it continues from its run checkpoints), at most
:data:`RETRIES` times. Every unit runs with the thread count of the process that built the study (one,
unless ``OMP_NUM_THREADS`` says otherwise), with the same ``GNN_CML_*`` environment and working
directory, so its results equal those of a serial run.

This module imports neither torch nor ray at import time (``--help`` stays fast); ray is imported only
by :class:`RayExecutor`.

Example:
    >>> units = [Unit("a", print, {"args": 1})]     # doctest: +SKIP
    >>> make_executor(jobs=2).run(units, out="results/x")  # doctest: +SKIP
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from gnn_cml.errors import GnnCmlError, require

# How many times a unit whose worker died is started again (with its retry_kwargs) before the study stops.
RETRIES = 3
# Folder under --out where running units leave a marker (their worker's pid); removed when the study ends.
MARKERS = ".gnn-cml-units"
EXECUTORS = ("local", "ray")


@dataclass
class Unit:
    """One independent piece of a study: ``function(**kwargs)``, which writes its own results to disk.

    Args:
        name: what the unit is, e.g. ``citeseer 2w5s split_1234 <method>+cml``; prefixes its status lines.
        function: a module-level function (workers import it by name).
        kwargs: its keyword arguments (picklable).
        retry_kwargs: replacements for ``kwargs`` when the unit starts again after its worker died,
            e.g. ``{"resume": True, "overwrite": False}``.
    """

    name: str
    function: Callable[..., Any]
    kwargs: Dict[str, Any] = field(default_factory=dict)
    retry_kwargs: Dict[str, Any] = field(default_factory=dict)


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    """``--jobs``, ``--executor`` and ``--address``: where a study's units run."""
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="run the study's units (arms) in N worker processes on this machine, one thread each "
                        "(0: one per core; with --executor ray: the CPUs of the local Ray cluster; "
                        "default: 1, one after another in this process)")
    p.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="local: worker processes on this machine (--jobs); ray: Ray tasks on a Ray cluster, "
                        "needs `pip install gnn-cml[ray]` and an --out every node sees (default: local)")
    p.add_argument("--address", metavar="ADDR",
                   help="with --executor ray: the cluster to join, e.g. auto or 10.0.0.1:6379 "
                        "(default: start a local Ray cluster)")


def executor_from_args(args) -> Optional["Executor"]:
    """The executor named by ``--jobs/--executor/--address``, or None for the plain serial path."""
    return make_executor(getattr(args, "jobs", None), getattr(args, "executor", None), getattr(args, "address", None))


def make_executor(jobs: Optional[int] = None, executor: Optional[str] = None,
                  address: Optional[str] = None) -> Optional["Executor"]:
    """``None`` (run the study the serial way) unless ``jobs`` > 1, ``jobs`` = 0 or ``executor`` asks otherwise."""
    require(jobs is None or jobs >= 0, f"--jobs must be 0 (one per core) or a positive count, got {jobs}")
    require(address is None or executor == "ray", "--address needs --executor ray")
    if executor == "ray":
        require(not (address and jobs), "--jobs sets the CPUs of a local Ray cluster; with --address the "
                                        "cluster's CPUs decide: drop --jobs")
        return RayExecutor(address=address, num_cpus=(jobs or None))
    if jobs is None or jobs == 1:
        return None
    return LocalExecutor(jobs or (os.cpu_count() or 1))


def _threads() -> int:
    import torch

    return torch.get_num_threads()


@contextmanager
def _prefixed_stderr(prefix: str) -> Iterator[None]:
    """Every line written to stderr (progress, status) starts with ``[prefix]`` and is written whole."""
    real = sys.stderr

    class Prefixed:
        def __init__(self):
            self.pending = ""

        def write(self, text: str) -> int:
            self.pending += text.replace("\r\033[K", "").replace("\r", "\n")
            *lines, self.pending = self.pending.split("\n")
            if lines:
                real.write("".join(f"[{prefix}] {line}\n" for line in lines if line.strip()))
                real.flush()
            return len(text)

        def flush(self) -> None:
            real.flush()

        def isatty(self) -> bool:
            return False

        def fileno(self) -> int:
            return real.fileno()

    sys.stderr = Prefixed()
    try:
        yield
    finally:
        if sys.stderr.pending.strip():
            real.write(f"[{prefix}] {sys.stderr.pending}\n")
        sys.stderr = real


@contextmanager
def _context(env: Dict[str, str], cwd: Optional[str]) -> Iterator[None]:
    """The study's ``GNN_CML_*`` environment and working directory, for the length of a unit."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("GNN_CML_")}
    here = os.getcwd()
    for k in saved:
        os.environ.pop(k)
    os.environ.update(env)
    os.environ["GNN_CML_PROGRESS"] = "plain"  # no in-place lines from many processes on one terminal
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(here)
        for k in [k for k in os.environ if k.startswith("GNN_CML_")]:
            os.environ.pop(k)
        os.environ.update(saved)


def execute_unit(unit: Unit, marker: Optional[str], threads: int, env: Dict[str, str], cwd: Optional[str],
                 retry: bool = False, progress: bool = True) -> Any:
    """Run one unit in a worker. An existing ``marker`` (left by an earlier attempt of this study)
    means the unit is started again: ``retry_kwargs`` apply. The marker holds this worker's pid."""
    import torch

    torch.set_num_threads(threads)
    if marker is not None:
        retry = retry or os.path.exists(marker)
        Path(marker).write_text(str(os.getpid()))
    kwargs = dict(unit.kwargs, **(unit.retry_kwargs if retry else {}))
    with _context(env, cwd), (_prefixed_stderr(unit.name) if progress else _nothing()):
        return unit.function(**kwargs)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _study_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("GNN_CML_")}


class Executor:
    """Runs a study's units; :meth:`run` returns when every unit is done or raises on the first failure."""

    name = "serial"

    def run(self, units: Sequence[Unit], out: Path, progress: bool = True) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name

    # --- shared bookkeeping: markers under --out, progress lines ---
    def _start(self, units: Sequence[Unit], out: Path, progress: bool) -> Path:
        names = [u.name for u in units]
        require(len(set(names)) == len(names), "two units of a study have the same name")
        self._progress, self._started, self._units = progress, time.monotonic(), list(units)
        self._done: set = set()
        out = Path(out).resolve()
        clear_markers(out)
        try:
            markers = out / MARKERS / uuid.uuid4().hex[:12]
            markers.mkdir(parents=True)
        except OSError as exc:
            raise GnnCmlError(f"cannot write to --out {out} ({exc.strerror or exc}): pick a writable --out") from None
        self._markers = markers
        self._say(f"{len(units)} units on {self.describe()} -> {out}")
        return markers

    def _marker(self, index: int) -> str:
        return str(self._markers / f"unit_{index}.pid")

    def _running(self) -> int:
        try:
            return sum(1 for p in self._markers.iterdir() if int(p.stem.split("_")[1]) not in self._done)
        except OSError:
            return 0

    def _say(self, text: str) -> None:
        if self._progress:
            from gnn_cml.engine.progress import status

            status(f"[study] {text}")

    def _finished(self, index: int, retries: int = 0) -> None:
        self._done.add(index)
        running = self._running()
        left = len(self._units) - len(self._done) - running
        took = time.monotonic() - self._started
        self._say(f"{self._units[index].name} done · units: {len(self._done)} done, {running} running, "
                  f"{left} left · {took:.0f} s" + (f" (after {retries} restart{'s' * (retries > 1)})" if retries else ""))

    def _end(self) -> None:
        shutil.rmtree(self._markers, ignore_errors=True)
        try:
            self._markers.parent.rmdir()  # only when no other study shares the folder
        except OSError:
            pass


class SerialExecutor(Executor):
    """The units one after another in this process (what ``--jobs 1`` does without units)."""

    name = "serial"

    def run(self, units: Sequence[Unit], out: Path, progress: bool = True) -> None:
        self._start(units, out, progress)
        try:
            for i, unit in enumerate(units):
                execute_unit(unit, self._marker(i), _threads(), _study_env(), os.getcwd(), progress=progress)
                self._finished(i)
        finally:
            self._end()


def _worker_main(conn, threads: int, env: Dict[str, str], cwd: str, progress: bool) -> None:
    """A local worker process: runs the units it is sent until it gets None."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        index, unit, marker, retry = job
        try:
            execute_unit(unit, marker, threads, env, cwd, retry=retry, progress=progress)
            conn.send((index, None))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the parent
            conn.send((index, _portable_error(exc)))


def _portable_error(exc: BaseException):
    if isinstance(exc, GnnCmlError):
        return ("user", str(exc))
    return ("bug", "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))


def _raise(unit: Unit, error) -> None:
    kind, text = error
    if kind == "user":
        raise GnnCmlError(f"{unit.name}: {text}")
    raise RuntimeError(f"unit {unit.name} failed:\n{text}")


class LocalExecutor(Executor):
    """``jobs`` worker processes (spawned, one thread each by default) on this machine.

    A worker that dies mid-unit is replaced and its unit started again with ``retry_kwargs``;
    the other workers go on.
    """

    name = "local"

    def __init__(self, jobs: int):
        require(jobs >= 1, f"--jobs must be positive, got {jobs}")
        self.jobs = jobs

    def describe(self) -> str:
        return f"{self.jobs} local worker processes"

    def run(self, units: Sequence[Unit], out: Path, progress: bool = True) -> None:
        import multiprocessing as mp
        from multiprocessing.connection import wait

        self._start(units, out, progress)
        ctx = mp.get_context("spawn")  # no fork of a process that holds torch's thread pools
        threads, env, cwd = _threads(), _study_env(), os.getcwd()
        pending = list(range(len(units)))
        restarts: Dict[int, int] = {}
        workers: List[list] = []  # [process, parent end of the pipe, unit index or None]

        def spawn():
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, threads, env, cwd, progress), daemon=True)
            p.start()
            child.close()
            workers.append([p, parent, None])

        try:
            for _ in range(min(self.jobs, len(units))):
                spawn()
            while pending or any(w[2] is not None for w in workers):
                for w in workers:
                    if w[2] is None and pending:
                        i = pending.pop(0)
                        w[2] = i
                        w[1].send((i, units[i], self._marker(i), restarts.get(i, 0) > 0))
                ready = wait([w[1] for w in workers] + [w[0].sentinel for w in workers])
                for w in list(workers):
                    p, conn, i = w
                    if conn in ready or p.sentinel in ready:
                        message = None
                        try:
                            if conn.poll():
                                message = conn.recv()
                        except (EOFError, OSError):
                            message = None
                        if message is not None:
                            index, error = message
                            if error is not None:
                                _raise(units[index], error)
                            w[2] = None
                            self._finished(index, restarts.get(index, 0))
                        elif not p.is_alive():
                            p.join()
                            workers.remove(w)
                            conn.close()
                            if i is not None:
                                restarts[i] = restarts.get(i, 0) + 1
                                if restarts[i] > RETRIES:
                                    raise GnnCmlError(f"{units[i].name}: its worker died {restarts[i]} times "
                                                      f"(last exit code {p.exitcode}); rerun with --resume")
                                self._say(f"{units[i].name}: worker died (exit code {p.exitcode}); starting the "
                                          f"unit again from its checkpoints ({restarts[i]} of {RETRIES})")
                                pending.insert(0, i)
                            if pending or any(x[2] is not None for x in workers):
                                spawn()
        finally:
            for p, conn, _ in workers:
                try:
                    conn.send(None)
                except (OSError, ValueError):
                    pass
            deadline = time.monotonic() + 5
            for p, conn, i in workers:
                if i is not None:  # stopped by a failure elsewhere or Ctrl-C: it resumes on the next --resume
                    p.terminate()
                p.join(max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()
                    p.join()
            self._end()


class RayExecutor(Executor):
    """Units as Ray tasks (one CPU each) on the cluster at ``address``, or on a local one.

    ``--out`` and the data root must be storage every node sees under the same path (checked before any
    unit starts). A task whose worker dies is retried by Ray (``max_retries``), continuing from its
    checkpoints.
    """

    name = "ray"

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None):
        self.address, self.num_cpus = address, num_cpus

    def describe(self) -> str:
        return f"Ray ({self.address or 'local cluster'})"

    def _connect(self):
        try:
            import ray
        except ModuleNotFoundError:
            raise GnnCmlError("--executor ray needs Ray: pip install 'gnn-cml[ray]'") from None
        if not ray.is_initialized():
            import logging

            kwargs = dict(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs["num_cpus"] = self.num_cpus
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise GnnCmlError(f"cannot reach the Ray cluster at --address {self.address} ({exc}): start it "
                                  f"with `ray start --head` or fix the address") from None
        return ray

    def _check_storage(self, ray) -> None:
        """Every alive node must see this study's marker folder and write to it."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = self._markers / "driver"
        token.write_text("ok")
        probe = ray.remote(num_cpus=0)(_probe_storage)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        got = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                       .remote(str(self._markers)) for n in nodes])
        bad = [f"{n.get('NodeManagerAddress')} ({why})" for n, why in zip(nodes, got) if why]
        require(not bad, f"--out {self._markers.parent.parent} is not shared with every Ray node: "
                         f"{'; '.join(bad)}. Put --out (and the data root) on storage every node mounts at the "
                         f"same path, e.g. NFS")
        token.unlink()

    def run(self, units: Sequence[Unit], out: Path, progress: bool = True) -> None:
        ray = self._connect()
        self._start(units, out, progress)
        try:
            self._check_storage(ray)
            task = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(execute_unit)
            threads, env, cwd = _threads(), _study_env(), os.getcwd()
            refs = {task.remote(u, self._marker(i), threads, env, cwd, progress=progress): i
                    for i, u in enumerate(units)}
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                i = refs.pop(ready[0])
                try:
                    ray.get(ready[0])
                except ray.exceptions.RayTaskError as exc:
                    for r in refs:
                        ray.cancel(r, force=True)
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, GnnCmlError):
                        raise GnnCmlError(f"{units[i].name}: {cause}") from None
                    raise RuntimeError(f"unit {units[i].name} failed on Ray:\n{exc}") from None
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError) as exc:
                    for r in refs:
                        ray.cancel(r, force=True)
                    raise GnnCmlError(f"{units[i].name}: its worker died {RETRIES + 1} times ({type(exc).__name__}); "
                                      f"rerun with --resume") from None
                self._finished(i)
        finally:
            self._end()


def _probe_storage(markers: str) -> str:
    """On a Ray node: '' when the driver's marker folder is visible and writable here, else why not."""
    import socket

    folder = Path(markers)
    if not (folder / "driver").exists():
        return f"{folder} does not exist on {socket.gethostname()}"
    try:
        probe = folder / f"probe_{socket.gethostname()}_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return f"cannot write to {folder} on {socket.gethostname()} ({exc.strerror or exc})"
    return ""


def clear_markers(out: Path) -> None:
    """Remove the markers a study killed as a whole left under ``out`` (its units are resumed or redone now)."""
    shutil.rmtree(Path(out) / MARKERS, ignore_errors=True)


def run_units(units: Sequence[Unit], executor: Optional[Executor], out: Path, progress: bool = True) -> None:
    """Run ``units`` on ``executor`` (in this process, one after another, when it is None)."""
    if units:
        (executor or SerialExecutor()).run(units, out, progress)
