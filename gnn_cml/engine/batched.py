"""Several runs trained in lockstep, each meta-training episode one batched computation.

:func:`fit_batched` is :meth:`Trainer.fit` for R trainers at once. A :class:`RunBatch` holds
the runs' parameters stacked (``(R, ...)`` leaves) with one ``torch.optim.Adam`` over them:
Adam is elementwise, so this is R independent Adams while the runs share their step count
(runs resumed at different episodes go in separate batches). Every episode draws one task per
run from the run's own sampler and seed, computes all runs' meta-gradients with
:func:`gnn_cml.meta.fast.batched_forward` and steps. Validations are evaluated together
(:func:`evaluate_batched`); before each, the runs' modules and optimisers receive their slices, so
each :class:`Trainer` keeps its own best state, early stopping, metrics and checkpoint exactly as
when trained alone, and a batched run resumes (batched or not) like any other. A run that stops
leaves the batch.

A task whose own Gram or support-query product would pass ``closed_form.MAX_GRAM_ENTRIES`` entries
(:func:`gnn_cml.meta.fast.past_gram_cap`) is solved alone, by its run's learner with the run's slice
of the stacked parameters (:func:`gnn_cml.meta.fast.forward_alone`: the autograd inner loop, as when
the run is trained alone); the other runs' tasks stay batched, and a status line says so once.
"""
from __future__ import annotations

import contextlib
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from gnn_cml.engine.progress import Line, percent, status
from gnn_cml.engine.trainer import Trainer, accuracy, seed_task, task_seed
from gnn_cml.errors import GnnCmlError
from gnn_cml.meta import closed_form, fast as br


def alone_message(label: str, what: str, count: int, rows: int) -> str:
    """The status line for ``count`` tasks (the largest with ``rows`` support rows) solved alone."""
    return (f"{label} · {what}: {count} task{'s' if count > 1 else ''} (up to {rows:,} support rows) with a Gram or "
            f"query-support product past the batched path's cap of {closed_form.MAX_GRAM_ENTRIES:,} entries; such "
            f"tasks run alone, through the autograd inner loop (as in runs trained alone; slower)")


def evaluate_batched(models: Sequence, task_lists: Sequence[Sequence], seeds: Sequence[int],
                     cache: Optional[Dict] = None, keys: Optional[Sequence] = None,
                     params: Optional[Dict[str, torch.Tensor]] = None, progress=None,
                     notice=None) -> List[List[float]]:
    """Per-task accuracy of ``models[r]`` on ``task_lists[r]``, as :func:`evaluate_tasks` with
    ``seed=seeds[r]`` computes it; every task of every run in one batched computation (chunks of
    ``EVAL_CHUNK`` tasks of similar size).

    ``params``: the models' parameters stacked (default: read from ``models``). With ``cache`` (a
    dict the caller keeps for fixed task lists) and ``keys`` (one per run), prepared tasks are
    reused across calls. Episodes that are the same object (shared test tasks) are prepared once.
    ``progress(done, total)`` is called after each chunk. Tasks past the Gram cap
    (:func:`gnn_cml.meta.fast.past_gram_cap`) are evaluated alone, as :func:`evaluate_tasks` does;
    ``notice(count, rows)`` is then called with their number and largest support rows.
    """
    problems = [(r, i) for r, tasks in enumerate(task_lists) for i in range(len(tasks))]
    inputs: Dict[int, tuple] = {}
    prepared = []  # a PreparedTask, or the support rows of a task solved alone
    states = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for r, i in problems:
                key = None if cache is None else (keys[r], i)
                if key is not None and key in cache:
                    prepared.append(cache[key])
                    continue
                episode = task_lists[r][i]
                if id(episode) not in inputs:
                    inputs[id(episode)] = (br.graph_inputs(models[r], episode), {})
                rows, shared = inputs[id(episode)]
                if br.past_gram_cap(models[r], rows[0].shape[0], rows[2].shape[0], train=False):
                    task = rows[0].shape[0]
                else:
                    seed_task(task_seed(seeds[r], -1, i))
                    task = br.prepare_task(models[r], episode, train=False, inputs=rows, shared=shared)
                prepared.append(task)
                if key is not None:
                    cache[key] = task
        if params is None:
            params = br.stacked_parameters(models)
        scores = np.zeros(len(problems), np.float32)
        runs = torch.tensor([r for r, _ in problems])
        alone = [j for j, t in enumerate(prepared) if not isinstance(t, br.PreparedTask)]
        # similar sizes together: each chunk is padded to its largest task
        order = sorted((j for j, t in enumerate(prepared) if isinstance(t, br.PreparedTask)),
                       key=lambda j: (prepared[j].x_support.shape[0], prepared[j].x_query.shape[0]))
        done = 0
        for chunk in _chunks(order, prepared):
            index = torch.tensor(chunk)
            with torch.no_grad():
                out = br.batched_forward(models[0], [prepared[j] for j in chunk], params, train=False,
                                         owners=runs[index].tolist())
            scores[chunk] = (out["logits"].argmax(-1) == out["targets"]).float().mean(1).numpy()
            done += len(chunk)
            if progress is not None:
                progress(done, len(problems))
        if alone and notice is not None:
            notice(len(alone), max(prepared[j] for j in alone))
        with torch.random.fork_rng(devices=[]):
            for j in alone:  # as evaluate_tasks solves a task
                r, i = problems[j]
                seed_task(task_seed(seeds[r], -1, i))
                scores[j] = accuracy(br.forward_alone(models[r], task_lists[r][i], params, r, train=False))
                done += 1
                if progress is not None:
                    progress(done, len(problems))
    finally:
        for m, was in zip(models, states):
            m.train(was)
    by_run: List[List[float]] = [[] for _ in task_lists]
    for (r, _), s in zip(problems, scores):
        by_run[r].append(float(s))
    return by_run


def _leaf(stacked: torch.Tensor) -> torch.Tensor:
    """A stacked parameter as a fresh leaf; 3-D weights (R, out, in) are stored input-major, so the
    block products' ``W^T`` views (``(R in, out)``) need no transposed copy of the wide first layer."""
    if stacked.dim() != 3:
        return stacked.detach().clone().requires_grad_()
    r, o, i = stacked.shape
    leaf = torch.empty_strided((r, o, i), (o * i, 1, o), dtype=stacked.dtype, device=stacked.device)
    return leaf.copy_(stacked.detach()).requires_grad_()


def _like(leaf: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """``values`` in ``leaf``'s memory layout: the fused Adam walks a parameter and its state as
    flat buffers, so they must share strides."""
    return torch.empty_like(leaf, memory_format=torch.preserve_format).copy_(values)


def _adam_state(step: torch.Tensor, moment) -> Dict[str, torch.Tensor]:
    """An Adam state entry: its step count and its two moments, ``moment(name)`` each (stacked
    from runs, or one run's slice of a stacked state)."""
    return {"step": step.clone(), **{m: moment(m) for m in ("exp_avg", "exp_avg_sq")}}


def _adam(params, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam over the stacked leaves; the fused kernel where this torch has it for the device (one
    pass instead of ~10 per tensor; equal to the per-tensor Adam of a run alone up to rounding)."""
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def _chunks(order: Sequence[int], prepared) -> List[List[int]]:
    """Consecutive tasks of ``order`` in chunks of at most ``EVAL_CHUNK`` whose padded product
    arrays (tasks x support rows x (support + query) rows) stay under :func:`gnn_cml.meta.fast.block_entries`."""
    chunks: List[List[int]] = []
    rows_s = rows_q = 0
    for j in order:
        ns, nq = prepared[j].x_support.shape[0], prepared[j].x_query.shape[0]
        if chunks and len(chunks[-1]) < br.EVAL_CHUNK and \
                (len(chunks[-1]) + 1) * max(rows_s, ns) * (max(rows_s, ns) + max(rows_q, nq)) <= br.block_entries():
            chunks[-1].append(j)
            rows_s, rows_q = max(rows_s, ns), max(rows_q, nq)
        else:
            chunks.append([j])
            rows_s, rows_q = ns, nq
    return chunks


class RunBatch:
    """The stacked parameters and the one Adam of trainers at the same episode (see module doc)."""

    def __init__(self, trainers: Sequence[Trainer]):
        first = trainers[0].cfg
        for t in trainers:
            if (t.cfg.lr, t.cfg.weight_decay, t.cfg.meta_batch) != (first.lr, first.weight_decay, 1) \
                    or t.episode != trainers[0].episode:
                raise GnnCmlError("batched runs need meta-batch 1 and the same --lr, weight decay and episode")
        self.trainers = list(trainers)
        self.alone = (0, 0)  # the last step's tasks solved alone (past the Gram cap) and their largest support rows
        self.names = [k for k, _ in trainers[0].model.named_parameters()]
        self.params = {k: _leaf(v) for k, v in br.stacked_parameters([t.model for t in trainers]).items()}
        self.optimizer = _adam(list(self.params.values()), first.lr, first.weight_decay)
        states = [t.optimizer.state_dict()["state"] for t in trainers]
        if states[0]:  # resumed runs: stack their Adam states
            for j, leaf in enumerate(self.params.values()):
                per_run = [s[j] for s in states]
                self.optimizer.state[leaf] = _adam_state(
                    per_run[0]["step"], lambda m: _like(leaf, torch.stack([s[m] for s in per_run])))

    def sync(self, optimizer: bool = True) -> None:
        """Copy each run's slice into its module (and, with ``optimizer``, its Adam state)."""
        with torch.no_grad():
            for r, t in enumerate(self.trainers):
                own = dict(t.model.named_parameters())
                for k in self.names:
                    own[k].copy_(self.params[k][r])
                if optimizer:
                    for k in self.names:
                        state = self.optimizer.state.get(self.params[k])
                        if state:
                            t.optimizer.state[own[k]] = _adam_state(state["step"], lambda m: state[m][r].clone())

    def keep(self, trainers: Sequence[Trainer]) -> None:
        """Drop every run not in ``trainers`` from the batch (their slices were synced already)."""
        index = torch.tensor([self.trainers.index(t) for t in trainers])
        old = self.params
        self.params = {k: _leaf(v.detach()[index]) for k, v in old.items()}
        optimizer = _adam(list(self.params.values()), self.optimizer.defaults["lr"],
                          self.optimizer.defaults["weight_decay"])
        for k in self.names:
            state, leaf = self.optimizer.state.get(old[k]), self.params[k]
            if state:
                optimizer.state[leaf] = _adam_state(state["step"], lambda m: _like(leaf, state[m][index]))
        self.optimizer, self.trainers = optimizer, list(trainers)

    def step(self) -> List[Dict[str, float]]:
        """One meta-training episode of every run; returns each run's loss and accuracy."""
        tasks, batched, alone = [], [], []
        learner = self.trainers[0].model
        learner.train()
        for r, t in enumerate(self.trainers):
            episode = t.sampler.sample()
            seed = task_seed(t.cfg.seed, t.episode, 0)
            seed_task(seed)
            rows = br.graph_inputs(learner, episode)
            if br.past_gram_cap(learner, rows[0].shape[0], rows[2].shape[0], train=True):
                alone.append((r, episode, seed, rows[0].shape[0]))
            else:
                tasks.append(br.prepare_task(learner, episode, train=True, inputs=rows))
                batched.append(r)
        self.alone = (len(alone), max((a[3] for a in alone), default=0))
        self.optimizer.zero_grad(set_to_none=False)
        if not alone:
            out = br.batched_forward(learner, tasks, self.params, train=True)
            loss, accs = out["loss"], (out["logits"].detach().argmax(-1) == out["targets"]).float().mean(1).tolist()
        else:  # tasks past the Gram cap: solved by their run's learner, as when it is trained alone
            per_run: List = [None] * len(self.trainers)
            accs = [0.0] * len(self.trainers)
            if tasks:
                out = br.batched_forward(learner, tasks, self.params, train=True, owners=batched)
                hits = (out["logits"].detach().argmax(-1) == out["targets"]).float().mean(1).tolist()
                for j, r in enumerate(batched):
                    per_run[r], accs[r] = out["loss"][j], hits[j]
            for r, episode, seed, _ in alone:
                seed_task(seed)
                result = br.forward_alone(learner, episode, self.params, r, train=True)
                per_run[r], accs[r] = result.loss, accuracy(result)
            loss = torch.stack(per_run)
        loss.sum().backward()  # runs share no parameter: each slice's gradient is its run's own
        losses = loss.detach()
        finite = torch.isfinite(losses)
        for leaf in self.params.values():
            if leaf.grad is None:
                leaf.grad = torch.zeros_like(leaf)
            # a NaN/inf entry makes its run's sum NaN/inf (one pass, no boolean copy of the gradient)
            finite &= torch.isfinite(leaf.grad.sum(dim=tuple(range(1, leaf.dim()))) if leaf.dim() > 1 else leaf.grad)
        if not bool(finite.all()):
            bad = int((~finite).nonzero()[0])
            t = self.trainers[bad]
            t.check_update(float(losses[bad]), False)  # raises the Trainer's own message
        self.optimizer.step()
        records = []
        for t, loss, acc in zip(self.trainers, losses.tolist(), accs):
            t.episode += 1
            records.append({"loss": loss, t.cfg.metric: acc})
        return records


def fit_batched(trainers: Sequence[Trainer], progress: bool = True, label: str = "runs") -> None:
    """:meth:`Trainer.fit` for every trainer, in lockstep (see the module docstring)."""
    line = Line(progress)
    total = len(trainers)
    started, first = time.monotonic(), sum(t.episode for t in trainers)

    def running(group):
        return [t for t in group if t.episode < t.cfg.episodes and not t.stopped_early]

    shown = [None]  # the (episode, running, stopped) state of the last line printed

    def show(important: bool = False, force: bool = False) -> None:
        left = running(trainers)
        stopped = sum(t.stopped_early for t in trainers)
        best = [t.best_score for t in trainers if t.best_score is not None]
        episode = max((t.episode for t in left), default=max(t.episode for t in trainers))
        state = (episode, len(left), stopped)
        if force and state == shown[0]:
            return
        rate = (sum(t.episode for t in trainers) - first) / max(time.monotonic() - started, 1e-9)
        parts = [f"{label} · {total} runs batched", f"episode {episode} (at most {trainers[0].cfg.episodes})",
                 f"{len(left)} training, {total - len(left)} done ({stopped} stopped early)"]
        if best:
            parts.append(f"mean best val {percent(float(np.mean(best)))}")
        if rate > 0:
            parts.append(f"{rate:.1f} run-episodes/s")
        if line.update(" · ".join(parts), important=important or force, force=force):
            shown[0] = state

    told = set()

    def notice(what: str, count: int, rows: int, when: str = "") -> None:  # tasks solved alone: said once per kind
        if what not in told:
            told.add(what)
            status(alone_message(label, what + when, count, rows), progress)

    show(force=True)
    try:
        by_episode: Dict[int, List[Trainer]] = {}
        for t in running(trainers):
            by_episode.setdefault(t.episode, []).append(t)
        for group in by_episode.values():
            _fit_group(group, show, notice)
        show(force=True)  # the final state, whatever the rate limit held back
    finally:
        line.close()
        for t in trainers:
            t.flush_log()
    for t in trainers:
        t.model.load_state_dict(t.best_state)


def _fit_group(trainers: List[Trainer], show, notice) -> None:
    batch = RunBatch(trainers)
    windows: Dict[int, List[Dict[str, float]]] = {id(t): [] for t in trainers}
    cache: Dict = {}  # the fixed validation tasks, prepared once per run (keyed by the trainer)
    fixed = all(not hasattr(t.val_tasks, "get_state") for t in trainers)
    cfg = trainers[0].cfg
    while batch.trainers:
        start = time.perf_counter()
        records = batch.step()
        elapsed = time.perf_counter() - start
        if batch.alone[0]:
            notice("training", *batch.alone, when=f" (episode {batch.trainers[0].episode})")
        for t, record in zip(batch.trainers, records):
            windows[id(t)].append(record)
            t.train_seconds += elapsed / len(batch.trainers)  # each run's share of the batched step
        episode = batch.trainers[0].episode
        if episode % cfg.val_every == 0 or episode == cfg.episodes:
            batch.sync(optimizer=any(t.run_dir is not None for t in batch.trainers))
            due = batch.trainers
            with contextlib.ExitStack() as stack:
                for t in due:
                    stack.enter_context(t.validation_context())
                scores = evaluate_batched([t.model.test_model() for t in due], [list(t.val_tasks) for t in due],
                                          [t.cfg.seed for t in due], cache=cache if fixed else None,
                                          keys=[id(t) for t in due],
                                          notice=lambda count, rows: notice("validation", count, rows))
            for t, s in zip(due, scores):
                t.validate(windows[id(t)], s)
                windows[id(t)] = []
            left = [t for t in batch.trainers if t.episode < t.cfg.episodes and not t.stopped_early]
            if len(left) < len(batch.trainers) and left:
                batch.keep(left)
            elif not left:
                batch.trainers = []
            show(important=True)  # validations: at most one line every MIN_INTERVAL_S through a pipe
        else:
            show()


__all__ = ["RunBatch", "evaluate_batched", "fit_batched"]
