"""Omniglot benchmark on the real offline zips: loader, one-shot runs, sampler, Conv4 + CML, reports."""
import json

import numpy as np
import pytest
import torch

from gnn_cml.experiments.image import (OmniglotSampler, build_learner, conv4_encoder, load_omniglot,
                                      load_oneshot_runs, rotated_classes, widen_head)
from gnn_cml.cli import main
from gnn_cml.errors import GnnCmlError
from gnn_cml.meta import CML


@pytest.fixture(scope="module")
def cache(_session_cache):
    """The per-session tmp cache (module-scoped fixtures run before the autouse env fixture)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GNN_CML_CACHE", str(_session_cache))
        yield _session_cache


@pytest.fixture(scope="module")
def omniglot(shared_data, cache):
    return load_omniglot(shared_data)


def _tree(path):
    return sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*"))


def test_loader_dedups_the_two_background_zips(omniglot):
    assert omniglot.images.shape == (242, 20, 28, 28) and omniglot.images.dtype == np.uint8
    assert omniglot.images.shape[0] * omniglot.images.shape[1] == 4840
    assert len(set(omniglot.names)) == 242
    alphabets = {n.split("/")[0] for n in omniglot.names}
    assert len(alphabets) == 8 and {"Greek", "Latin"} <= alphabets
    assert sum(n.startswith("Greek/") for n in omniglot.names) == 24  # once, not twice


def test_images_are_28px_in_unit_range_with_strokes_one(omniglot):
    x = omniglot.images.astype(np.float32) / 255
    assert 0.0 <= x.min() and x.max() <= 1.0
    per_image = x.reshape(-1, 28 * 28)
    peak = per_image.max(1)
    assert np.median(peak) == 1.0 and (peak > 0.7).all()  # strokes are 1 (a few thin ones blur after resizing)
    assert np.median(per_image) == 0.0 and per_image.mean() < 0.2  # background is 0


def test_cache_goes_to_the_cache_dir_never_the_data_root(shared_data, cache, omniglot):
    before = _tree(shared_data)
    files = list((cache / "omniglot").glob("background_*.npz"))
    assert len(files) == 1
    again = load_omniglot(shared_data)
    assert np.array_equal(again.images, omniglot.images) and again.names == omniglot.names
    assert _tree(shared_data) == before


def test_a_damaged_cache_is_rebuilt(shared_data, cache, omniglot):
    (path,) = (cache / "omniglot").glob("background_*.npz")
    path.write_bytes(b"not an npz")
    assert np.array_equal(load_omniglot(shared_data).images, omniglot.images)
    assert np.array_equal(np.load(path)["images"], omniglot.images)


def test_missing_zips_are_a_one_line_error(tmp_path, cache):
    with pytest.raises(GnnCmlError, match="not found"):
        load_omniglot(tmp_path)


def test_oneshot_runs_parse(shared_data):
    runs = load_oneshot_runs(shared_data)
    assert len(runs) == 20
    for ep in runs:
        assert ep.support.shape == ep.query.shape == (20, 1, 28, 28)
        assert ep.support_y.tolist() == list(range(20)) and ep.ways == 20
        assert ep.query_y.min() >= 0 and ep.query_y.max() < 20 and len(ep.query_y) == 20
        assert 0 <= ep.query.min() and ep.query.max() <= 1 and ep.query.mean() < 0.2
    # run01/class_labels.txt: "run01/test/item01.png run01/training/class08.png"
    assert runs[0].query_y[0] == 7


def test_split_and_rotations(omniglot):
    split = omniglot.split()
    parts = [set(split[p].tolist()) for p in ("train", "val", "test")]
    assert [len(p) for p in parts] == [162, 20, 60]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert all(np.array_equal(a, b) for a, b in zip(omniglot.split().values(), split.values()))  # fixed seed
    rot = rotated_classes(omniglot.images, split["train"])
    n = len(split["train"])
    assert rot.shape == (4 * n, 20, 28, 28)
    assert np.array_equal(rot[0], omniglot.images[split["train"][0]])
    assert np.array_equal(rot[n + 3, 5], np.rot90(omniglot.images[split["train"][3], 5]))
    assert np.array_equal(rot[2 * n + 3, 5], omniglot.images[split["train"][3], 5, ::-1, ::-1])


def test_sampler_remaps_labels_and_keeps_support_and_query_apart(omniglot):
    classes = omniglot.split()["test"]
    sampler = OmniglotSampler(omniglot.images, classes, ways=5, shots=3, queries=15, seed=0)
    for _ in range(5):
        state = sampler.get_state()
        ways, drawings = sampler.draw()
        assert len(set(ways.tolist())) == 5 and set(ways.tolist()) <= set(classes.tolist())
        assert all(len(set(d.tolist())) == 18 for d in drawings)  # support and query drawings are distinct
        sampler.set_state(state)
        ep = sampler.sample()
        assert ep.support.shape == (15, 1, 28, 28) and ep.query.shape == (75, 1, 28, 28)
        assert ep.support.dtype == torch.float32 and 0 <= ep.support.min() and ep.support.max() <= 1
        assert ep.support_y.tolist() == np.repeat(np.arange(5), 3).tolist()
        assert ep.query_y.tolist() == np.repeat(np.arange(5), 15).tolist()
        assert ep.classes.tolist() == ways.tolist()
        expected = torch.from_numpy(omniglot.images[ways[2], drawings[2, 0]]).float() / 255
        assert torch.equal(ep.support[6, 0], expected)  # label 2's first shot
        first_query = torch.from_numpy(omniglot.images[ways[2], drawings[2, 3]]).float() / 255
        assert torch.equal(ep.query[2 * 15, 0], first_query)  # label 2's first query
    a = OmniglotSampler(omniglot.images, classes, 5, 1, 15, seed=9).fixed(3)
    b = OmniglotSampler(omniglot.images, classes, 5, 1, 15, seed=9).fixed(3)
    assert len(a) == 3 and all(torch.equal(x.query, y.query) for x, y in zip(a, b))
    with pytest.raises(GnnCmlError):
        OmniglotSampler(omniglot.images, classes, 5, 10, 15)  # 25 > 20 drawings


def test_conv4_and_cml_co_learner_read_unpooled_features(omniglot):
    assert conv4_encoder()(torch.zeros(2, 1, 28, 28)).shape == (2, 64, 3, 3)
    cml = build_learner(5, cml=True, seed=0)
    assert isinstance(cml, CML) and cml.gamma == 1.0
    assert cml.learner.inner_lr == 0.5 and cml.learner.inner_steps == 1
    bn = [m for m in cml.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bn) == 6 and not any(m.track_running_stats for m in bn)  # 4 in Conv4, 2 in the co-learner
    convs = [m for m in cml.co_learner.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 2 and all(c.kernel_size == (3, 3) for c in convs)
    base = build_learner(5, cml=False, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(base.parameters(), cml.learner.parameters()))
    ep = OmniglotSampler(omniglot.images, np.arange(20), 5, 1, 15, seed=0).sample()
    result = cml(ep)
    assert result.features.shape == (75, 64, 3, 3) and result.logits.shape == (75, 5)
    result.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in cml.co_learner.parameters())


def test_widened_head_starts_uniform_and_adapts(shared_data):
    learner = build_learner(5, cml=False, seed=0)
    wide = widen_head(learner, 20)
    assert wide.net.head[-1].out_features == 20 and learner.net.head[-1].out_features == 5
    run = load_oneshot_runs(shared_data)[0]
    _, logits = wide.net(run.query)
    assert torch.allclose(logits, logits[:, :1].expand_as(logits), atol=1e-5)  # equal logits before adapting
    result = wide(run, train=False)
    assert result.logits.shape == (20, 20) and result.logits.std(1).min() > 0


def test_quick_reproduction_writes_the_reports(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("GNN_CML_DATA", str(shared_data))
    out = tmp_path / "omni"
    rc = main(["reproduce", "omniglot", "--quick", "--shots", "1", "--iterations", "2", "--test-tasks", "10",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    for name in ("omniglot.md", "omniglot.csv", "omniglot.json", "omniglot_curves_5w1s.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "omniglot.json").read_text())
    assert result["data"]["characters"] == 242 and result["data"]["images"] == 4840
    cell = result["cells"][0]
    for method in ("maml", "maml+cml"):
        assert cell["methods"][method]["over_tasks"]["n"] == 10
        assert cell["oneshot_20way"][method]["over_tasks"]["n"] == 20
        assert 0 <= cell["methods"][method]["over_seeds"]["mean"] <= 100
    md = (out / "omniglot.md").read_text()
    assert "| 5-way 1-shot | maml+cml |" in md and "20-way 1-shot" in md and "93.99" in md
    assert len((out / "omniglot.csv").read_text().splitlines()) == 1 + 4
