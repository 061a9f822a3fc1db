"""Why the supervised-pretraining probe sits at chance on the paper's split (issue 23), on real CiteSeer.

What is pinned: the probe itself works (fixed, separable embeddings of the real test tasks' nodes
are classified at >= 95%, with both ways predicted); the supervised encoder's 16-d output collapses
onto one direction (effective rank near 1: the training classes' discriminant) on every split,
which the untrained encoder does not; whether the probe beats chance then depends on the test
classes: on the paper's split (test classes [2, 1]) their means nearly coincide along that
direction and the probe is at chance, on the split of seed 1236 (test classes [2, 4]) they do not
and the same code scores well above chance.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gnn_cml.config import resolve
from gnn_cml.experiments.graph import GraphTask, derive_seed
from gnn_cml.meta.tlp import (FullGraph, embedding_stats, minmax, pretrain, pretrain_settings, probe_logits,
                              training_labels)


def build(shared_data, shots: int, split_seed: int = 1234) -> GraphTask:
    return GraphTask.build(resolve(dict(graph="citeseer", method="tlp", pretrain="supervised", ways=2, shots=shots,
                                        split_seed=split_seed, test_tasks=100, data_root=str(shared_data))))


def probe_accuracy(z, tasks):
    logits = probe_logits(minmax(z), tasks, 2)
    predicted = torch.cat([lg.argmax(-1) for lg in logits])
    acc = 100 * float(np.mean([(lg.argmax(-1) == e.query_y).double().mean() for lg, e in zip(logits, tasks)]))
    return acc, float((predicted == 1).double().mean())


def supervised_embeddings(task: GraphTask, epochs=None):
    settings = pretrain_settings(task.cfg, "citeseer")
    if epochs == 0:  # the encoder as initialised (Adam at lr 0 leaves it untouched)
        settings = dict(settings, epochs=1, lr=0.0)
    full = FullGraph(task.graph)
    nodes, labels = training_labels(task.data.y, task.split.train)
    encoder, _ = pretrain(settings, full, derive_seed(task.cfg.seed, 100), nodes, labels)  # run 0's seed
    with torch.no_grad():
        return encoder(full.x, full.adj, xt=full.xt).double()


@pytest.mark.parametrize("shots", [1, 5])
def test_probe_classifies_separable_embeddings(shots, shared_data):
    task = build(shared_data, shots)
    tasks = list(task.test_tasks())
    y = task.data.y
    gen = torch.Generator().manual_seed(0)
    centres = 3.0 * torch.randn(int(y.max()) + 1, 16, generator=gen, dtype=torch.float64)
    z = centres[y] + torch.randn(len(y), 16, generator=gen, dtype=torch.float64)
    acc, share = probe_accuracy(z, tasks)
    assert acc >= 95.0
    assert 0.4 < share < 0.6  # both ways predicted, as often as they occur


@pytest.fixture(scope="module")
def paper_split(shared_data):
    task = build(shared_data, 5)
    return task, supervised_embeddings(task)


def test_supervised_output_collapses_onto_the_training_discriminant(paper_split, shared_data):
    task, z = paper_split
    y = task.data.y
    test, train = embedding_stats(z, y, task.split.test), embedding_stats(z, y, task.split.train)
    assert task.split.test == (2, 1)
    assert test["effective_rank"] < 1.5 and test["top_ratio"] > 10  # one direction left
    assert train["separation"] > 3.0  # it separates the training classes
    assert test["separation"] < 0.25  # but the test classes' means nearly coincide along it
    acc, share = probe_accuracy(z, list(task.test_tasks()))
    assert 45.0 < acc < 56.0 and 0.4 < share < 0.6  # chance, predicting both ways (the probe moves)
    untrained = embedding_stats(supervised_embeddings(task, epochs=0), y, task.split.test)
    assert untrained["effective_rank"] > 5.0  # the collapse comes from training


def test_supervised_probe_beats_chance_where_the_discriminant_separates_test_classes(shared_data):
    task = build(shared_data, 5, split_seed=1236)
    z = supervised_embeddings(task)
    stats = embedding_stats(z, task.data.y, task.split.test)
    assert stats["effective_rank"] < 1.5  # the same collapse
    assert stats["separation"] > 0.5
    acc, _ = probe_accuracy(z, list(task.test_tasks()))
    assert acc > 60.0
