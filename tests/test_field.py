"""``gnn-cml reproduce field``: the field's table on real CiteSeer, in both settings, checked against the
finished arms' own per-run accuracies; and the TLP encoder cache that makes it affordable."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gnn_cml.cli import main

GRID = ["--quick", "--graphs", "citeseer", "--shots", "1", "--split-seeds", "2", "--methods", "maml,protonet",
        "--baselines", "tlp-dgi,tlp-supervised", "--no-progress"]


@pytest.fixture(scope="module")
def field(tmp_path_factory, shared_data):
    """A small field study of both settings (2 class splits x 3 runs, quick budgets), run once."""
    out = tmp_path_factory.mktemp("field") / "out"
    cache = tmp_path_factory.mktemp("encoders")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GNN_CML_CACHE", str(cache))
        assert main(["reproduce", "field", *GRID, "--setting", "both", "--root", str(shared_data),
                     "--out", str(out)]) == 0
    return out


def _runs(out: Path, setting: str, split: int, arm: str):
    res = json.loads((out / setting / "citeseer" / "2w1s" / f"split_{split}" / arm / "results.json").read_text())
    return res


def _accs(out, setting, split, arm):
    return np.array(_runs(out, setting, split, arm)["test_accuracy"]["runs"], dtype=float)


def test_field_rows_follow_from_the_arms_own_accuracies(field):
    payload = json.loads((field / "field.json").read_text())
    rows = payload["rows"]
    assert {r["setting"] for r in rows} == {"transductive", "inductive"}
    splits = [1234, 1235]
    for setting in ("transductive", "inductive"):
        cell = [r for r in rows if r["setting"] == setting]
        assert {r["arm"] for r in cell} == {"maml", "maml+cml", "protonet", "tlp-dgi", "tlp-supervised"}
        for r in cell:  # mean of the per-split means; rank by it
            means = [_accs(field, setting, s, r["arm"]).mean() for s in splits]
            assert r["mean"] == pytest.approx(np.mean(means), abs=1e-9)
            assert r["rank"] == 1 + sum(o["mean"] > r["mean"] for o in cell)
        probes = [r for r in cell if r["kind"] == "probe"]
        best = max(probes, key=lambda r: r["mean"])
        assert best["vs_probe"] is None
        for r in cell:
            if r is best:
                continue
            assert r["vs_probe"]["probe"] == best["arm"] and r["vs_probe"]["unit"] == "splits"
            d = [(_accs(field, setting, s, r["arm"]) - _accs(field, setting, s, best["arm"])).mean() for s in splits]
            assert r["vs_probe"]["delta"] == pytest.approx(np.mean(d), abs=1e-9)
            assert r["vs_probe"]["split_deltas"] == pytest.approx(d, abs=1e-9)
            half = 12.706204736174707 * np.std(d, ddof=1) / np.sqrt(2)  # t(0.975, df=1): the interval is over splits
            assert r["vs_probe"]["delta_ci95"] == pytest.approx(half, rel=1e-6)
        cml = next(r for r in cell if r["arm"] == "maml+cml")
        d = [(_accs(field, setting, s, "maml+cml") - _accs(field, setting, s, "maml")).mean() for s in splits]
        assert cml["vs_base"]["delta"] == pytest.approx(np.mean(d), abs=1e-9)
        assert all(r["vs_base"] is None for r in cell if r["kind"] != "cml")


def test_inductive_minus_transductive_is_paired_on_the_same_tasks(field):
    payload = json.loads((field / "field.json").read_text())
    for r in payload["settings"]:
        for s in (1234, 1235):
            t, i = _runs(field, "transductive", s, r["arm"]), _runs(field, "inductive", s, r["arm"])
            assert t["test_tasks_sha256"] == i["test_tasks_sha256"]
            assert [x["seed"] for x in t["runs"]] == [x["seed"] for x in i["runs"]]
        d = [(_accs(field, "inductive", s, r["arm"]) - _accs(field, "transductive", s, r["arm"])).mean()
             for s in (1234, 1235)]
        assert r["delta"]["delta"] == pytest.approx(np.mean(d), abs=1e-9)
    # DGI's pretraining reads the graph, so the setting changes its encoder and its accuracy
    dgi = next(r for r in payload["settings"] if r["arm"] == "tlp-dgi")
    assert dgi["delta"]["split_deltas"] != [0.0, 0.0]
    change = payload["rank_change"]["citeseer 2w1s"]
    assert change["arms"] == 5 and -1.0 <= change["kendall_tau"] <= 1.0
    for name in ("field.md", "field.csv", "field_transductive.png", "field_inductive.png", "inductive.md",
                 "inductive.csv", "inductive.png"):
        assert (field / name).stat().st_size > 0, name
    text = (field / "field.md").read_text()
    assert "## transductive: citeseer 2-way 1-shot (2 class splits x 3 runs)" in text
    assert "(best probe)" in text and "What each arm cost" in text


def test_report_only_rebuilds_the_same_table_without_training(field, shared_data, tmp_path, capsys):
    before = json.loads((field / "field.json").read_text())
    stamps = {p: p.stat().st_mtime_ns for p in field.rglob("run_*/*.pt")}  # (a +cml arm's results.json is
    assert len(stamps) >= 30                                                 # re-linked to its base arm)
    assert main(["reproduce", "field", "--report-only", "--root", str(shared_data), "--out", str(field),
                 "--no-progress"]) == 0
    after = json.loads((field / "field.json").read_text())
    assert after["rows"] == before["rows"] and after["settings"] == before["settings"]
    assert {p: p.stat().st_mtime_ns for p in field.rglob("run_*/*.pt")} == stamps  # nothing retrained
    capsys.readouterr()
    assert main(["reproduce", "field", "--report-only", "--out", str(tmp_path / "empty"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no field study" in err[0] and "gnn-cml reproduce field" in err[0]


def test_transductive_encoders_are_pretrained_once_per_seed_and_shared_across_splits(field):
    """DGI reads no label: the second split's transductive runs reuse the first split's encoders from the
    cache, bit for bit; the inductive ones see another graph per split, so they pretrain their own."""
    def record(setting, split, run):
        return json.loads((field / setting / "citeseer" / "2w1s" / f"split_{split}" / "tlp-dgi" / f"run_{run}"
                           / "result.json").read_text())

    for run in range(3):
        first, second = record("transductive", 1234, run), record("transductive", 1235, run)
        assert first["pretrain_reused"] is False and second["pretrain_reused"] == "cache"
        a = torch.load(field / "transductive/citeseer/2w1s/split_1234/tlp-dgi" / f"run_{run}" / "encoder.pt",
                       weights_only=True)
        b = torch.load(field / "transductive/citeseer/2w1s/split_1235/tlp-dgi" / f"run_{run}" / "encoder.pt",
                       weights_only=True)
        assert all(torch.equal(a["encoder"][k], b["encoder"][k]) for k in a["encoder"])
        assert record("inductive", 1235, run)["pretrain_reused"] is False
        # supervised pretraining reads the training classes' labels: the split is in its key
        sup = json.loads((field / "transductive/citeseer/2w1s/split_1235/tlp-supervised" / f"run_{run}"
                          / "result.json").read_text())
        assert sup["pretrain_reused"] is False


def test_a_cached_encoder_equals_a_fresh_pretraining(shared_data, tmp_path, monkeypatch):
    """The cache changes no number: with it off, the same runs give the same encoders and accuracies."""
    monkeypatch.setenv("GNN_CML_CACHE", str(tmp_path / "cache"))
    base = ["train", "--graph", "citeseer", "--method", "tlp", "--pretrain-epochs", "3", "--runs", "2",
            "--test-tasks", "10", "--root", str(shared_data), "--no-progress"]
    assert main([*base, "--split-seed", "1234", "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--split-seed", "1235", "--out", str(tmp_path / "cached")]) == 0
    monkeypatch.setenv("GNN_CML_ENCODER_CACHE", "off")
    assert main([*base, "--split-seed", "1235", "--out", str(tmp_path / "fresh")]) == 0
    cached = json.loads((tmp_path / "cached" / "results.json").read_text())
    fresh = json.loads((tmp_path / "fresh" / "results.json").read_text())
    assert [r["pretrain_reused"] for r in cached["runs"]] == ["cache", "cache"]
    assert [r["pretrain_reused"] for r in fresh["runs"]] == [False, False]
    assert cached["test_accuracy"]["runs"] == fresh["test_accuracy"]["runs"]
    for run in range(2):
        a = torch.load(tmp_path / "cached" / f"run_{run}" / "encoder.pt", weights_only=True)["encoder"]
        b = torch.load(tmp_path / "fresh" / f"run_{run}" / "encoder.pt", weights_only=True)["encoder"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert len(list((tmp_path / "cache" / "encoders").glob("*.pt"))) == 2  # the fresh runs wrote none
