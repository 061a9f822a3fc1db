"""Few-shot Omniglot (paper Table 2's Omniglot column): MAML vs MAML+CML on the shared engine.

Data: the two offline background subsets (8 alphabets, 242 distinct characters,
4,840 drawings; the Greek and Latin alphabets appear in both zips and are counted
once) and the 20 canonical 20-way one-shot runs (``all_runs.zip``). PNGs are read
straight from the zips, resized to 28x28 (Lanczos) and inverted so strokes are 1,
as MAML does; the decoded array is cached as ``.npz`` in the writable cache dir.

Protocol (paper): Conv4 (64 channels, BatchNorm without running statistics, as in
MAML), one inner step at 0.5, Adam 1e-3, meta-batch 4, 15 queries per class,
gamma 1. Characters are split into train/val/test with a fixed seed; training
characters rotated by 0/90/180/270 degrees are four classes each (MAML's
augmentation). The co-learner is two 3x3 conv blocks + a linear layer reading the
un-pooled conv4 feature map, which is therefore the encoder's output; the meta
head is ``maxpool -> flatten -> Linear``. The paper's 30,000 iterations do not fit a
2-core CPU: see :data:`DEFAULT_ITERATIONS`.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import io
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from gnn_cml.experiments.options import (OMNIGLOT_ITERATIONS, OMNIGLOT_SEEDS, OMNIGLOT_TEST_TASKS,
                                       add_omniglot_arguments)
from gnn_cml.experiments.common import (METHODS, check_common, command_line, derive_seed, fmt,
                                plot_curves, summarise, train)
from gnn_cml.data.paths import cache_root, data_root
from gnn_cml.engine import rundir
from gnn_cml.engine.checkpoint import write_json
from gnn_cml.engine.trainer import METRICS, TrainerConfig, evaluate_tasks
from gnn_cml.errors import GnnCmlError, require
from gnn_cml.experiments.executor import Unit, clear_markers, executor_from_args, run_units
from gnn_cml.meta.base import MetaLearner
from gnn_cml.meta.cml import CML
from gnn_cml.meta.maml import MAML
from gnn_cml.sampling.episodes import Episode

BACKGROUND_ZIPS = ("images_background_small1.zip", "images_background_small2.zip")
RUNS_ZIP = "all_runs.zip"
SIZE = 28
DRAWINGS = 20
SPLIT = (162, 20, 60)  # train / val / test characters out of 242
SPLIT_SEED = 1234
CHANNELS, INNER_LR, INNER_STEPS, META_BATCH, LR, GAMMA, QUERIES = 64, 0.5, 1, 4, 1e-3, 1.0, 15
DEFAULT_ITERATIONS = OMNIGLOT_ITERATIONS  # see gnn_cml/experiments/options.py
DEFAULT_SEEDS = OMNIGLOT_SEEDS
VAL_TASKS, VALIDATIONS, TEST_TASKS = 30, 16, OMNIGLOT_TEST_TASKS
QUICK = {"iterations": 20, "val_tasks": 5, "validations": 4, "test_tasks": 40}
_STREAM = {"train": 1, "val": 2, "test": 3, "init": 4}


# --- data ---------------------------------------------------------------------------------------------------------
@dataclass
class Omniglot:
    """Characters as ``images [C, 20, 28, 28]`` uint8 (strokes 255, background 0) and their ``names``."""

    images: np.ndarray
    names: List[str]

    def split(self, counts: Sequence[int] = SPLIT, seed: int = SPLIT_SEED) -> Dict[str, np.ndarray]:
        """Disjoint train/val/test character indices (seeded shuffle of all characters)."""
        require(sum(counts) <= len(self.names),
                f"the split needs {sum(counts)} characters but only {len(self.names)} are loaded")
        order = np.random.default_rng(seed).permutation(len(self.names))
        a, b = counts[0], counts[0] + counts[1]
        return {"train": np.sort(order[:a]), "val": np.sort(order[a:b]), "test": np.sort(order[b:b + counts[2]])}


def _decode(png: bytes) -> np.ndarray:
    """105x105 PNG -> 28x28 uint8 with strokes high (MAML: Lanczos resize, then ``1 - x``)."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        small = im.convert("L").resize((SIZE, SIZE), resample=Image.LANCZOS)
    return 255 - np.asarray(small, dtype=np.uint8)


def _omniglot_dir(root) -> Path:
    folder = data_root(root) / "omniglot"
    missing = [z for z in BACKGROUND_ZIPS if not (folder / z).exists()]
    require(not missing, f"Omniglot zips {', '.join(missing)} not found in {folder}: put the Omniglot files there "
                         f"or set $GNN_CML_DATA to a data root that has them")
    return folder


def load_omniglot(root=None) -> Omniglot:
    """The 242 distinct background characters from both zips, decoded once and cached as ``.npz``."""
    folder = _omniglot_dir(root)
    stamp = hashlib.sha1(repr([(z, (folder / z).stat().st_size) for z in BACKGROUND_ZIPS]).encode()).hexdigest()[:10]
    cache = cache_root(data_root(root)) / "omniglot" / f"background_{SIZE}px_{stamp}.npz"
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as f:
                return Omniglot(f["images"], [str(n) for n in f["names"]])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):  # a damaged cache is rebuilt below
            pass
    drawings: Dict[str, Dict[str, bytes]] = {}
    for name in BACKGROUND_ZIPS:
        try:
            with zipfile.ZipFile(folder / name) as zf:
                for entry in zf.namelist():
                    parts = entry.split("/")
                    if len(parts) == 4 and parts[3].endswith(".png"):
                        character = drawings.setdefault(f"{parts[1]}/{parts[2]}", {})
                        if parts[3] not in character:  # Greek and Latin are in both zips: keep one copy
                            character[parts[3]] = zf.read(entry)
        except zipfile.BadZipFile:
            raise GnnCmlError(f"{folder / name} is not a valid zip: the file is corrupt; replace it") from None
    names = sorted(drawings)
    for n in names:
        require(len(drawings[n]) == DRAWINGS, f"character {n} has {len(drawings[n])} drawings, expected {DRAWINGS}")
    images = np.stack([np.stack([_decode(drawings[n][f]) for f in sorted(drawings[n])]) for n in names])
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, images=images, names=np.array(names))
    tmp.replace(cache)
    return Omniglot(images, names)


def load_oneshot_runs(root=None) -> List[Episode]:
    """The 20 canonical 20-way one-shot runs: support = the 20 training drawings, query = the 20 test items.

    ``query_y`` comes from each run's ``class_labels.txt`` (test item -> training class).
    """
    folder = data_root(root) / "omniglot"
    path = folder / RUNS_ZIP
    require(path.exists(), f"{path} not found: put all_runs.zip there or set $GNN_CML_DATA")
    episodes = []
    with zipfile.ZipFile(path) as zf:
        runs = sorted({e.split("/")[0] for e in zf.namelist() if e.startswith("run") and "/" in e})
        for run in runs:
            pairs = [line.split() for line in zf.read(f"{run}/class_labels.txt").decode().splitlines() if line.strip()]
            classes = sorted({train for _, train in pairs})
            index = {c: i for i, c in enumerate(classes)}
            image = lambda e: torch.from_numpy(_decode(zf.read(e))).float().div_(255)[None]  # noqa: E731
            support = torch.stack([image(c) for c in classes])
            query = torch.stack([image(item) for item, _ in pairs])
            episodes.append(Episode(support, torch.arange(len(classes)), query,
                                    torch.tensor([index[c] for _, c in pairs]), torch.arange(len(classes))))
    return episodes


def rotated_classes(images: np.ndarray, characters: np.ndarray) -> np.ndarray:
    """Each character at 0/90/180/270 degrees as its own class: ``[4 * len(characters), 20, 28, 28]``."""
    chosen = images[characters]
    return np.concatenate([np.rot90(chosen, k, axes=(2, 3)) for k in range(4)])


# --- episodes -----------------------------------------------------------------------------------------------------
class OmniglotSampler:
    """N-way K-shot Q-query episodes over ``classes`` (indices into ``images [C, drawings, H, W]``).

    Support and query of a class are distinct drawings; labels are remapped to ``0..N-1``
    in the order of ``Episode.classes`` (the original class ids).
    """

    def __init__(self, images: np.ndarray, classes: Sequence[int], ways: int, shots: int, queries: int,
                 seed: int = 0):
        self.images, self.classes = images, np.asarray(classes, dtype=np.int64)
        self.ways, self.shots, self.queries = int(ways), int(shots), int(queries)
        require(min(self.ways, self.shots, self.queries) > 0, "ways, shots and queries must be positive")
        require(self.ways <= len(self.classes),
                f"{ways}-way tasks need {ways} classes, this split has {len(self.classes)}: lower --ways")
        require(self.shots + self.queries <= images.shape[1],
                f"shots + queries = {self.shots + self.queries} exceeds the {images.shape[1]} drawings per class")
        self.rng = np.random.default_rng(seed)

    def draw(self) -> Tuple[np.ndarray, np.ndarray]:
        """Class ids ``[N]`` and drawing indices ``[N, K+Q]`` of one task."""
        ways = self.classes[self.rng.choice(len(self.classes), self.ways, replace=False)]
        drawings = np.argsort(self.rng.random((self.ways, self.images.shape[1])), axis=1)
        return ways, drawings[:, :self.shots + self.queries]

    def episode(self, ways: np.ndarray, drawings: np.ndarray) -> Episode:
        """The Episode of a drawn ``(ways, drawings)`` pair (images as floats in [0, 1])."""
        x = torch.from_numpy(np.ascontiguousarray(self.images[ways[:, None], drawings])).float().div_(255)
        x = x.unsqueeze(2)  # [N, K+Q, 1, H, W]
        k, n = self.shots, self.ways
        y = torch.arange(n)
        return Episode(x[:, :k].reshape(n * k, *x.shape[2:]), y.repeat_interleave(k),
                       x[:, k:].reshape(n * self.queries, *x.shape[2:]), y.repeat_interleave(self.queries),
                       torch.from_numpy(ways))

    def sample(self) -> Episode:
        return self.episode(*self.draw())

    def fixed(self, num_tasks: int) -> "FixedTasks":
        """``num_tasks`` tasks drawn now and rebuilt on access (memory-light fixed test sets)."""
        return FixedTasks(self, [self.draw() for _ in range(num_tasks)])

    def get_state(self) -> Dict:
        """The RNG state (plain Python types), for checkpoints."""
        return self.rng.bit_generator.state

    def set_state(self, state: Dict) -> None:
        self.rng.bit_generator.state = state


class FixedTasks:
    """A fixed sequence of Omniglot tasks, stored as indices and built into Episodes on access."""

    def __init__(self, sampler: OmniglotSampler, draws: List[Tuple[np.ndarray, np.ndarray]]):
        self.sampler, self.draws = sampler, draws

    def __len__(self):
        return len(self.draws)

    def __getitem__(self, i) -> Episode:
        return self.sampler.episode(*self.draws[i])

    def __iter__(self):
        return (self[i] for i in range(len(self)))


# --- models -------------------------------------------------------------------------------------------------------
def conv_block(channels_in: int, channels_out: int) -> nn.Sequential:
    """conv 3x3 -> BatchNorm (batch statistics only, as in MAML) -> ReLU."""
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, padding=1),
                         nn.BatchNorm2d(channels_out, track_running_stats=False), nn.ReLU())


def conv4_encoder(channels: int = CHANNELS) -> nn.Sequential:
    """Conv4 up to the un-pooled conv4 feature map: ``[B, 1, 28, 28] -> [B, 64, 3, 3]``."""
    layers = []
    for i in range(4):
        layers.append(conv_block(1 if i == 0 else channels, channels))
        if i < 3:
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def feature_shape(encoder: nn.Module, size: int = SIZE) -> Tuple[int, int, int]:
    with torch.no_grad():
        return tuple(encoder(torch.zeros(2, 1, size, size)).shape[1:])


def build_learner(ways: int, cml: bool, seed: int, gamma: float = GAMMA) -> MetaLearner:
    """Conv4 MAML (head: maxpool -> flatten -> linear), optionally with the conv co-learner of CML.

    The base learner's initial weights depend only on ``seed``, with or without CML.
    """
    torch.manual_seed(seed)
    encoder = conv4_encoder()
    c, h, w = feature_shape(encoder)
    head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c * (h // 2) * (w // 2), ways))
    learner = MAML(encoder, head, inner_steps=INNER_STEPS, inner_lr=INNER_LR)
    if not cml:
        return learner
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 104729)
        co_learner = nn.Sequential(conv_block(c, c), conv_block(c, c), nn.Flatten(), nn.Linear(c * h * w, ways))
    return CML(learner, co_learner, gamma=gamma)


def widen_head(learner: MAML, ways: int) -> MAML:
    """A copy of ``learner`` with a ``ways``-output head, every row the mean of the trained rows.

    Used to test 5-way meta-trained models on the 20-way one-shot runs: all classes
    start with equal logits and the inner loop tells them apart (as in UnicornMAML).
    """
    wide = copy.deepcopy(learner)
    old = wide.net.head[-1]
    new = nn.Linear(old.in_features, ways)
    with torch.no_grad():
        new.weight.copy_(old.weight.mean(0, keepdim=True).expand(ways, -1))
        new.bias.fill_(float(old.bias.mean()))
    wide.net.head[-1] = new
    return wide


# --- the benchmark ------------------------------------------------------------------------------------------------
def train_run(train_images, ways: int, shots: int, seed: int, method: str, cml: bool, iterations: int, val,
              val_every: int, out: Path, resume: bool, progress: bool):
    """Meta-train one (K, seed, method) run into ``out/runs/{N}w{K}s/seed{s}/{method}``; returns (learner, trainer)."""
    key = lambda stream: derive_seed(seed, ways, shots, _STREAM[stream])  # noqa: E731
    learner = build_learner(ways, cml, key("init"))
    config = TrainerConfig(episodes=iterations, meta_batch=META_BATCH, lr=LR, val_every=val_every,
                           patience=iterations // val_every + 1, metric="accuracy", seed=key("init"), progress=progress)
    sampler = OmniglotSampler(train_images, np.arange(len(train_images)), ways, shots, QUERIES, key("train"))
    trainer = train(learner, sampler, val, config, out / "runs" / f"{ways}w{shots}s" / f"seed{seed}" / method,
                    resume, f"{ways}w{shots}s {method} s{seed}")
    return learner, trainer


def omniglot_unit(root, ways: int, shots: int, seed: int, method: str, cml: bool, iterations: int, val_tasks: int,
                  val_every: int, out: Path, resume: bool, progress: bool) -> None:
    """A unit of ``reproduce omniglot``: one run's meta-training (its checkpoint is what it leaves)."""
    data = load_omniglot(root)
    split = data.split()
    val = OmniglotSampler(data.images, split["val"], ways, shots, QUERIES,
                          derive_seed(seed, ways, shots, _STREAM["val"])).fixed(val_tasks)
    train_run(rotated_classes(data.images, split["train"]), ways, shots, seed, method, cml, iterations, val,
              val_every, Path(out), resume, progress)


def run_omniglot(shots_list: Sequence[int] = (1, 5), ways: int = 5, iterations: int = DEFAULT_ITERATIONS,
                 seeds: Sequence[int] = DEFAULT_SEEDS, out: Path = Path("results/omniglot"), quick: bool = False,
                 test_tasks: int = TEST_TASKS, root=None, resume: bool = False, progress: bool = True,
                 command: Optional[str] = None, executor=None) -> Dict:
    """Train MAML and MAML+CML per K and seed, test on the same fixed tasks and the 20 one-shot runs.

    ``executor`` (``gnn_cml.experiments.executor``): train the runs as units there first; testing and
    the reports then read their checkpoints (same numbers as a serial run).

    Writes ``omniglot.md``, ``omniglot.csv``, ``omniglot.json`` and
    ``omniglot_curves_{ways}w{K}s.png`` (validation accuracy vs episode) to ``out``;
    runs keep their ``metrics.jsonl`` and checkpoint in ``out/runs/{N}w{K}s/seed{s}/{method}``.
    """
    require(len(shots_list) > 0 and len(seeds) > 0, "give at least one K and one seed")
    out = Path(out)
    rundir.hold(out, what="reproduce output folder")  # one process per output tree (creates it)
    rundir.announce(out)
    data = load_omniglot(root)
    split = data.split()
    train_images = rotated_classes(data.images, split["train"])
    oneshot = load_oneshot_runs(root)
    if quick:
        iterations, test_tasks = min(iterations, QUICK["iterations"]), min(test_tasks, QUICK["test_tasks"])
    val_tasks = QUICK["val_tasks"] if quick else VAL_TASKS
    val_every = max(1, iterations // (QUICK["validations"] if quick else VALIDATIONS))
    accuracy = METRICS["accuracy"]
    started = time.perf_counter()
    if executor is not None:  # every (K, seed, method) trained as a unit; the loop below reads them back
        units = [Unit(f"{ways}w{shots}s seed {seed} {method}", omniglot_unit,
                      dict(root=root, ways=ways, shots=shots, seed=seed, method=method, cml=cml, iterations=iterations,
                           val_tasks=val_tasks, val_every=val_every, out=out, resume=resume, progress=progress),
                      retry_kwargs=dict(resume=True))
                 for shots in shots_list for seed in seeds for method, cml in METHODS]
        run_units(units, executor, out, progress)
        resume = True
    else:
        clear_markers(out)  # left by a study with --jobs/--executor that was killed
    cells, curves = [], []
    for shots in shots_list:
        scores: Dict[str, Dict[int, List[float]]] = {m: {} for m, _ in METHODS}
        runs_scores: Dict[str, Dict[int, List[float]]] = {m: {} for m, _ in METHODS}
        histories: Dict[str, List] = {m: [] for m, _ in METHODS}
        runs = []
        for seed in seeds:
            key = lambda stream: derive_seed(seed, ways, shots, _STREAM[stream])  # noqa: E731
            sampler = lambda images, classes, stream: OmniglotSampler(  # noqa: E731
                images, classes, ways, shots, QUERIES, key(stream))
            val = sampler(data.images, split["val"], "val").fixed(val_tasks)
            tests = sampler(data.images, split["test"], "test").fixed(test_tasks)
            for method, cml in METHODS:
                learner, trainer = train_run(train_images, ways, shots, seed, method, cml, iterations, val, val_every,
                                             out, resume, progress)
                start = time.perf_counter()
                scores[method][seed] = trainer.evaluate(tests)
                if shots == 1:
                    runs_scores[method][seed] = evaluate_tasks(widen_head(learner.test_model(), 20), oneshot,
                                                               accuracy, seed=key("init"))
                histories[method].append(trainer.history)
                runs.append({"seed": seed, "method": method,
                             "test_accuracy": 100 * float(np.mean(scores[method][seed])),
                             "best_val_accuracy": 100 * trainer.best_score, "best_episode": trainer.best_episode,
                             "episodes": trainer.episode, "train_seconds": trainer.train_seconds,
                             "test_seconds": time.perf_counter() - start})
        cell = {"ways": ways, "shots": shots, "methods": {m: summarise(scores[m], 100) for m, _ in METHODS},
                "runs": runs}
        if shots == 1:
            cell["oneshot_20way"] = {m: dict(summarise(runs_scores[m], 100),
                                             per_run=[100 * float(np.mean([v[r] for v in runs_scores[m].values()]))
                                                      for r in range(len(oneshot))]) for m, _ in METHODS}
        cells.append(cell)
        curves.append(plot_curves({f"Omniglot {ways}-way {shots}-shot: validation accuracy ({val_tasks} tasks)":
                                   histories}, "val_accuracy", out / f"omniglot_curves_{ways}w{shots}s.png",
                                  "validation accuracy (%)", scale=100, quick=quick))
    result = {"benchmark": "omniglot", "metric": "test accuracy (%) after one inner step",
              "command": command or command_line("omniglot"), "quick": quick,
              "wall_time_s": time.perf_counter() - started,
              "data": {"characters": len(data.names), "images": int(data.images.shape[0] * data.images.shape[1]),
                       "split": {k: len(v) for k, v in split.items()}, "split_seed": SPLIT_SEED,
                       "train_classes_with_rotations": len(train_images), "oneshot_runs": len(oneshot)},
              "config": {"ways": ways, "shots": list(shots_list), "seeds": list(seeds), "iterations": iterations,
                         "meta_batch": META_BATCH, "lr": LR, "inner_lr": INNER_LR, "inner_steps": INNER_STEPS,
                         "gamma": GAMMA, "queries": QUERIES, "val_tasks": val_tasks, "val_every": val_every,
                         "test_tasks": test_tasks},
              "cells": cells, "curves": [p.name for p in curves]}
    write_json(out / "omniglot.json", result)
    _write_tables(result, out)
    rundir.release(out)
    return result


PAPER = {(5, 1): {"maml": 91.78, "maml+cml": 93.99}, (5, 5): {"maml": 96.59, "maml+cml": 97.15}}


def _write_tables(result: Dict, out: Path) -> None:
    cfg, data = result["config"], result["data"]
    rows = []
    for cell in result["cells"]:
        for method, s in cell["methods"].items():
            rows.append((f"{cell['ways']}-way {cell['shots']}-shot", method, s,
                         PAPER.get((cell["ways"], cell["shots"]), {}).get(method)))
        for method, s in cell.get("oneshot_20way", {}).items():
            rows.append(("20-way 1-shot (20 canonical runs)", method, s, None))
    with open(out / "omniglot.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["setting", "method", "acc_mean_over_seeds", "acc_ci95_over_seeds", "acc_mean_over_tasks",
                    "acc_ci95_over_tasks", "seeds", "paper"])
        for setting, method, s, paper in rows:
            w.writerow([setting, method, f"{s['over_seeds']['mean']:.2f}", f"{s['over_seeds']['ci95']:.2f}",
                        f"{s['over_tasks']['mean']:.2f}", f"{s['over_tasks']['ci95']:.2f}", s["over_seeds"]["n"],
                        "" if paper is None else paper])
    lines = ["# Few-shot Omniglot: test accuracy (%) after one inner step", "",
             f"Command: `{result['command']}`", "",
             f"Data: the offline background subsets, {data['characters']} distinct characters "
             f"({data['images']} drawings), split {data['split']['train']}/{data['split']['val']}/"
             f"{data['split']['test']} characters (seed {data['split_seed']}); training characters rotated by "
             f"0/90/180/270 degrees ({data['train_classes_with_rotations']} classes). The paper trains on the full "
             f"background set (964 characters) for 30,000 iterations and tests on the evaluation alphabets: its "
             f"numbers are a reference, not a like-for-like target.", "",
             f"{cfg['iterations']} meta-training episodes per run (meta-batch {cfg['meta_batch']}, Adam {cfg['lr']}, "
             f"inner lr {cfg['inner_lr']}, {cfg['inner_steps']} inner step, {cfg['queries']} queries per class, "
             f"gamma {cfg['gamma']}), seeds {cfg['seeds']}; the model kept is the one with the best validation "
             f"accuracy ({cfg['val_tasks']} fixed tasks). Both methods are tested on the same {cfg['test_tasks']} "
             f"fixed tasks per seed. Over seeds: mean of per-seed means ± Student-t 95% CI over seeds; over tasks: "
             f"all test tasks pooled ± 95% CI.", "",
             "20-way one-shot: the 20 canonical runs of Lake et al. (evaluation alphabets, 20 test items each), "
             "scored with the 1-shot models; their 5-way head is widened to 20 outputs, every row starting at the "
             "mean of the trained rows, then one inner step on the 20 training drawings. Over tasks = over the 20 "
             "runs.", "",
             "| setting | method | ours (over seeds) | ours (over tasks) | paper |", "|---|---|---|---|---|"]
    for setting, method, s, paper in rows:
        lines.append(f"| {setting} | {method} | {fmt(s['over_seeds'], 2)} | {fmt(s['over_tasks'], 2)} | "
                     f"{'-' if paper is None else f'{paper:.2f}'} |")
    lines += ["", f"Wall time: {result['wall_time_s']:.0f} s. Learning curves: "
              + ", ".join(f"`{c}`" for c in result["curves"]) + "."]
    (out / "omniglot.md").write_text("\n".join(lines) + "\n")


add_arguments = add_omniglot_arguments


def run(args) -> int:
    """Entry point of ``gnn-cml reproduce omniglot``."""
    check_common(args)
    require(args.ways >= 2, f"--ways must be at least 2, got {args.ways}")
    require(args.test_tasks >= 1, f"--test-tasks must be positive, got {args.test_tasks}")
    result = run_omniglot(args.shots, args.ways, args.iterations, args.seeds, args.out, args.quick, args.test_tasks,
                          args.data_root, args.resume, progress=not args.no_progress,
                          executor=executor_from_args(args))
    for cell in result["cells"]:
        print(f"{cell['ways']}w{cell['shots']}s: " + ", ".join(f"{m} {fmt(s['over_seeds'], 2)}"
                                                           for m, s in cell["methods"].items()))
        for m, s in cell.get("oneshot_20way", {}).items():
            print(f"20-way one-shot runs: {m} {fmt(s['over_seeds'], 2)}")
    print(Path(args.out) / "omniglot.md")
    return 0
