"""Paired statistics (against scipy on fixed numbers), nested split analysis, pairing checks, split
seeds, and tiny end-to-end ``reproduce table3`` / ``reproduce gamma`` runs on real CiteSeer."""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from scipy import stats

from gnn_cml.errors import GnnCmlError
from gnn_cml.experiments.paired import link_pair, nested_stats, pair_runs, paired_stats

BASE = [60.1, 62.3, 58.7, 61.0, 63.4, 59.9, 57.2]
CML = [61.0, 62.9, 60.2, 60.8, 64.9, 61.3, 58.0]


def strict_json(obj) -> str:
    return json.dumps(obj, allow_nan=False)


def test_paired_t_interval_and_wilcoxon_match_scipy():
    got = paired_stats(BASE, CML)
    d = np.array(CML) - np.array(BASE)
    n = len(d)
    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
    assert got["n"] == n
    assert got["differences"] == pytest.approx(d.tolist())
    assert got["delta"] == pytest.approx(d.mean())
    assert got["delta_ci95"] == pytest.approx(half)
    ci = stats.ttest_rel(CML, BASE).confidence_interval(0.95)
    assert (got["delta_low"], got["delta_high"]) == pytest.approx((ci.low, ci.high))
    assert got["t_p"] == pytest.approx(stats.ttest_rel(CML, BASE).pvalue)
    assert got["wilcoxon_p"] == pytest.approx(stats.wilcoxon(CML, BASE).pvalue)
    assert got["base"]["mean"] == pytest.approx(np.mean(BASE))
    assert got["treated"]["ci95"] == pytest.approx(stats.t.ppf(0.975, n - 1) * np.std(CML, ddof=1) / math.sqrt(n))
    assert got["flags"] == []
    strict_json(got)


def test_wilcoxon_exact_value_and_sign():
    # 5 positive, untied differences: exact two-sided p = 2 / 2^5
    got = paired_stats([0, 0, 0, 0, 0], [1, 2, 3, 4, 5])
    assert got["wilcoxon_p"] == pytest.approx(0.0625)
    assert got["delta"] == pytest.approx(3.0)
    assert paired_stats([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])["delta"] == pytest.approx(-3.0)


def test_degenerate_inputs_give_none_and_flags_never_nan():
    same = paired_stats([50.0, 51.0, 52.0], [50.0, 51.0, 52.0])
    assert same["wilcoxon_p"] is None and "all_zero_differences" in same["flags"]
    assert same["delta"] == 0 and same["delta_ci95"] == 0
    one = paired_stats([50.0], [51.0])
    assert one["delta"] == pytest.approx(1.0)
    assert one["delta_ci95"] is None and one["wilcoxon_p"] is None
    assert {"few_runs", "no_interval", "no_wilcoxon"} <= set(one["flags"])
    two = paired_stats([50.0, 52.0], [51.0, 54.0])
    assert "few_runs" in two["flags"] and "no_interval" not in two["flags"]
    assert two["delta_ci95"] == pytest.approx(stats.t.ppf(0.975, 1) * np.std([1, 2], ddof=1) / math.sqrt(2))
    for got in (same, one, two):
        strict_json(got)
    with pytest.raises(GnnCmlError):
        paired_stats([1.0, 2.0], [1.0])


def test_nested_analysis_over_splits():
    splits = {1234: ([60, 61, 62, 63], [61, 63, 62, 65]),   # split mean delta 1.25
              1235: ([70, 71, 69], [70, 70, 69]),           # -1/3
              1240: ([55, 57, 56], [58, 60, 59.5])}         # 3.1667
    got = nested_stats(splits)
    split_means = [np.mean(np.subtract(c, b)) for b, c in splits.values()]
    assert got["splits"] == ["1234", "1235", "1240"]
    assert got["between_splits"]["split_deltas"] == pytest.approx(split_means)
    between = got["between_splits"]
    assert between["n"] == 3
    assert between["delta"] == pytest.approx(np.mean(split_means))
    half = stats.t.ppf(0.975, 2) * np.std(split_means, ddof=1) / math.sqrt(3)
    assert between["delta_ci95"] == pytest.approx(half)
    assert between["wilcoxon_p"] == pytest.approx(stats.wilcoxon(split_means).pvalue)
    assert between["base"]["mean"] == pytest.approx(np.mean([np.mean(b) for b, _ in splits.values()]))
    # pooled runs: every run's difference, one t interval (unequal runs per split -> another mean)
    all_b = [x for b, _ in splits.values() for x in b]
    all_c = [x for _, c in splits.values() for x in c]
    pooled = got["pooled_runs"]
    assert pooled["n"] == 10
    assert pooled["delta"] == pytest.approx(np.mean(np.subtract(all_c, all_b)))
    assert pooled["delta"] != pytest.approx(between["delta"])
    ci = stats.ttest_rel(all_c, all_b).confidence_interval(0.95)
    assert (pooled["delta_low"], pooled["delta_high"]) == pytest.approx((ci.low, ci.high))
    assert "splits" in between["interval"] and "exchangeable" in pooled["interval"]
    assert got["per_split"]["1235"]["delta"] == pytest.approx(-1 / 3)
    strict_json(got)
    single = nested_stats({1234: ([1, 2, 3], [2, 3, 4.5])})
    assert single["between_splits"]["delta_ci95"] is None and "no_interval" in single["between_splits"]["flags"]
    strict_json(single)


def _results(accs, **change):
    r = {"graph": "citeseer", "method": "maml", "cml": False, "ways": 2, "shots": 1,
         "test_accuracy": {"runs": list(accs)}, "split": {"train": [3, 5], "val": [0, 4], "test": [2, 1]},
         "runs": [{"seed": 100 + i} for i in range(len(accs))], "test_tasks_sha256": "abc",
         "config": {"seed": 0, "split_seed": 1234}}
    for k, v in change.items():
        if k in ("seed", "split_seed"):
            r["config"] = dict(r["config"], **{k: v})
        else:
            r[k] = v
    return r


@pytest.mark.parametrize("change, word", [
    ({"graph": "cora"}, "graph"), ({"shots": 5}, "shots"), ({"ways": 3}, "ways"), ({"seed": 1}, "seed"),
    ({"split_seed": 1235}, "split_seed"), ({"method": "gmeta"}, "method"),
    ({"split": {"train": [3, 5], "val": [0, 2], "test": [4, 1]}}, "split"),
    ({"test_tasks_sha256": "def"}, "test tasks"),
    ({"runs": [{"seed": 7}, {"seed": 101}, {"seed": 102}]}, "run_seeds"),
])
def test_pair_runs_refuses_unpaired_results(change, word):
    base = _results([50, 51, 52])
    cml = _results([51, 51, 53], cml=True, **change)
    with pytest.raises(GnnCmlError) as err:
        pair_runs(base, cml)
    assert word in str(err.value) and "\n" not in str(err.value)


def test_pair_runs_refuses_different_run_counts_and_accepts_pairs(tmp_path):
    with pytest.raises(GnnCmlError, match="runs"):
        pair_runs(_results([50, 51, 52]), _results([50, 51]))
    with pytest.raises(GnnCmlError, match="results.json"):
        pair_runs({"graph": "citeseer"}, _results([50]))
    base, cml = _results([50, 51, 52]), _results([51, 51, 53.5], cml=True)
    got = pair_runs(base, cml)
    assert got["delta"] == pytest.approx(paired_stats([50, 51, 52], [51, 51, 53.5])["delta"])
    assert "test_tasks_sha256" in got["checked"]
    # link_pair names the base run in the CML run's results.json, with the paired numbers
    (tmp_path / "maml").mkdir()
    (tmp_path / "maml+cml").mkdir()
    (tmp_path / "maml" / "results.json").write_text(json.dumps(base))
    (tmp_path / "maml+cml" / "results.json").write_text(json.dumps(cml))
    link_pair(tmp_path / "maml", tmp_path / "maml+cml")
    saved = json.loads((tmp_path / "maml+cml" / "results.json").read_text())
    assert saved["paired_with"] == "../maml"
    assert saved["paired"]["delta"] == pytest.approx(0.8333333)
    (tmp_path / "maml" / "results.json").write_text(json.dumps(_results([50, 51, 52], seed=3)))
    with pytest.raises(GnnCmlError, match="not paired"):
        link_pair(tmp_path / "maml", tmp_path / "maml+cml")


def test_split_seed_parsing():
    from gnn_cml.report.table3 import parse_split_seeds
    from gnn_cml.sampling import ClassSplit

    seeds = parse_split_seeds("5", 6, (2, 2, 2))
    assert len(seeds) == 5 and seeds[0] == 1234 and seeds == sorted(seeds)
    tests = [frozenset(ClassSplit.from_counts(6, (2, 2, 2), s).test) for s in seeds]
    assert len(set(tests)) == 5
    assert tests[0] == {1, 2}  # the paper's CiteSeer test classes
    assert parse_split_seeds("1", 6, (2, 2, 2)) == [1234]
    assert parse_split_seeds("1300,1234", 6, (2, 2, 2)) == [1300, 1234]
    dup = next(s for s in range(1235, 2000) if frozenset(ClassSplit.from_counts(6, (2, 2, 2), s).test) == tests[0])
    with pytest.raises(GnnCmlError, match="same test classes"):
        parse_split_seeds(f"1234,{dup}", 6, (2, 2, 2))
    for bad in ("", "five", "0", "1,x"):
        with pytest.raises(GnnCmlError):
            parse_split_seeds(bad, 6, (2, 2, 2))


def test_shared_task_file_refuses_tasks_of_other_settings(shared_data, tmp_path):
    from gnn_cml.config import resolve
    from gnn_cml.report.table3 import shared_task_file
    from gnn_cml.sampling import TaskSet

    path = tmp_path / "test_tasks.npz"
    cfg = resolve({"graph": "citeseer", "data_root": str(shared_data), "test_tasks": 4})
    shared_task_file(cfg, path)
    first = path.read_bytes()
    assert shared_task_file(cfg, path) == path and path.read_bytes() == first  # same settings: reused
    more = resolve({"graph": "citeseer", "data_root": str(shared_data), "test_tasks": 6})
    with pytest.raises(GnnCmlError, match="number of tasks"):
        shared_task_file(more, path)
    other_split = resolve({"graph": "citeseer", "data_root": str(shared_data), "test_tasks": 4, "split_seed": 1235})
    with pytest.raises(GnnCmlError, match="split"):
        shared_task_file(other_split, path)
    shared_task_file(more, path, overwrite=True)
    assert len(TaskSet.load(path)) == 6


def test_study_preset_resolves_as_documented(monkeypatch, tmp_path):
    from gnn_cml.cli import main
    from gnn_cml.report import table3

    seen = {}

    def fake(graphs, out, runs, quick, resume, overwrite, data_root, seed, **kw):
        seen.update(graphs=graphs, runs=runs, **kw)
        return table3.Report([], [], [], {})

    monkeypatch.setattr(table3, "run_table3", fake)
    assert main(["reproduce", "table3", "--study", "--out", str(tmp_path)]) == 0
    assert seen["graphs"] == ["citeseer", "cora"] and seen["runs"] == 20 and seen["dagger"] is True
    assert seen["methods"] == ["gmeta", "ammgnn", "maml"]
    assert seen["split_seeds"] == {1: "1", 5: "5"}
    assert main(["reproduce", "table3", "--out", str(tmp_path)]) == 0
    assert seen["runs"] == 20 and seen["split_seeds"] == 1 and seen["dagger"] is False


def test_reproduce_table3_quick_paired_over_two_splits(shared_data, tmp_path, capsys):
    from gnn_cml.cli import main

    out = tmp_path / "t3"
    assert main(["reproduce", "table3", "--quick", "--graphs", "citeseer", "--methods", "ammgnn", "--shots", "1",
                 "--split-seeds", "2", "--dagger", "--root", str(shared_data), "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "Δ ± paired CI" in printed and "| citeseer | 2-way 1-shot | pooled | ammgnn+cml |" in printed
    cell = out / "citeseer" / "2w1s"
    splits = sorted(p.name for p in cell.iterdir())
    assert splits == ["split_1234", "split_1235"]
    # each split its own test classes and tasks; all arms of a split share them
    tests, digests = [], []
    for s in splits:
        base = json.loads((cell / s / "ammgnn" / "results.json").read_text())
        cml = json.loads((cell / s / "ammgnn+cml" / "results.json").read_text())
        assert base["test_tasks_sha256"] == cml["test_tasks_sha256"]
        assert cml["paired_with"] == "../ammgnn" and base["config"]["split_seed"] == int(s.split("_")[1])
        assert cml["paired"]["delta"] == pytest.approx(
            np.mean(np.subtract(cml["test_accuracy"]["runs"], base["test_accuracy"]["runs"])))
        dagger = json.loads((cell / s / "ammgnn+cml" / "dagger.json").read_text())
        assert len(dagger["test_accuracy"]["runs"]) == 3
        tests.append(frozenset(base["split"]["test"]))
        digests.append(base["test_tasks_sha256"])
    assert tests[0] == {1, 2} and tests[0] != tests[1] and digests[0] != digests[1]
    with open(out / "table3.csv") as fh:
        rows = list(csv.DictReader(fh))
    for col in ("base_mean", "base_ci95", "arm_mean", "arm_ci95", "delta", "delta_ci95", "wilcoxon_p",
                "paper_delta", "paper_delta_in_our_ci", "pooled_runs_delta"):
        assert col in rows[0]
    got = {(r["split"], r["arm"]): r for r in rows}
    assert set(got) == {(s, a) for s in ("1234", "1235", "pooled") for a in ("cml", "dagger")}
    b = json.loads((cell / "split_1234" / "ammgnn" / "results.json").read_text())["test_accuracy"]["runs"]
    c = json.loads((cell / "split_1234" / "ammgnn+cml" / "results.json").read_text())["test_accuracy"]["runs"]
    assert float(got[("1234", "cml")]["delta"]) == pytest.approx(np.mean(np.subtract(c, b)), abs=0.006)
    assert (got[("1234", "cml")]["n"], got[("1234", "cml")]["n_unit"]) == ("3", "runs")
    assert (got[("pooled", "cml")]["n"], got[("pooled", "cml")]["n_unit"]) == ("2", "splits")
    assert "few_splits" in got[("pooled", "cml")]["flags"]
    # the paper's Δ (AMM-GNN CiteSeer 1-shot: 61.13 - 54.53) on its split and the pooled row only
    assert [got[(s, "cml")]["paper_delta"] for s in ("1234", "1235", "pooled")] == ["6.60", "-", "6.60"]
    assert got[("1234", "cml")]["paper_delta_in_our_ci"] in ("yes", "no")
    assert got[("1234", "dagger")]["paper_delta"] == "-"
    payload = json.loads((out / "table3.json").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert payload["split_seeds"] == {"citeseer 2w1s": [1234, 1235]}
    forest = out / "table3_forest.png"
    assert forest.is_file() and forest.stat().st_size > 5000 and forest.read_bytes()[:4] == b"\x89PNG"
    # --resume reuses every finished arm and dagger evaluation: the same table, nothing retrained
    before = {p: p.stat().st_mtime_ns for p in cell.glob("split_*/*/run_*/model.pt")}
    assert len(before) == 12  # 2 splits x 2 arms x 3 runs
    assert main(["reproduce", "table3", "--quick", "--graphs", "citeseer", "--methods", "ammgnn", "--shots", "1",
                 "--split-seeds", "2", "--dagger", "--root", str(shared_data), "--out", str(out),
                 "--no-progress", "--resume"]) == 0
    assert {p: p.stat().st_mtime_ns for p in cell.glob("split_*/*/run_*/model.pt")} == before
    with open(out / "table3.csv") as fh:
        assert list(csv.DictReader(fh)) == rows


def test_paper_delta_and_inside_check():
    from gnn_cml.report.table3 import PairRow, paper_delta

    assert paper_delta("citeseer", 5, "gmeta", "cml") == pytest.approx(11.54)
    assert paper_delta("citeseer", 1, "ammgnn", "cml") == pytest.approx(6.60)
    assert paper_delta("cora", 5, "gmeta", "cml") is None
    assert paper_delta("citeseer", 5, "maml", "cml") is None
    assert paper_delta("citeseer", 5, "gmeta", "dagger") is None
    row = PairRow("citeseer", "2-way 5-shot", 5, "1234", "gmeta", "cml", 20, 70, 1, 71, 1, 1.0, 2.0, -1.0, 3.0,
                  0.3, 11.54)
    assert row.paper_inside is False
    row.delta_high = 12.0
    assert row.paper_inside is True


def test_reproduce_gamma_quick(shared_data, tmp_path, capsys):
    from gnn_cml.cli import main

    out = tmp_path / "g"
    assert main(["reproduce", "gamma", "--quick", "--methods", "maml", "--gammas", "0,0.2", "--runs", "2",
                 "--root", str(shared_data), "--out", str(out), "--no-progress"]) == 0
    assert "Δ vs gamma 0" in capsys.readouterr().out
    payload = json.loads((out / "gamma.json").read_text())
    rows = {r["gamma"]: r for r in payload["rows"]}
    assert set(rows) == {0.0, 0.2} and rows[0.0]["delta"] == 0 and rows[0.2]["runs"] == 2
    assert "few_runs" in rows[0.2]["flags"]
    where = out / "citeseer" / "2w5s" / "split_1234"
    b = json.loads((where / "maml_gamma0" / "results.json").read_text())
    c = json.loads((where / "maml_gamma0.2" / "results.json").read_text())
    assert b["cml"] is False and c["cml"] is True and c["gamma"] == 0.2
    assert rows[0.2]["delta"] == pytest.approx(np.mean(np.subtract(c["test_accuracy"]["runs"],
                                                                    b["test_accuracy"]["runs"])))
    for name in ("gamma.md", "gamma.csv", "gamma.png"):
        assert (out / name).is_file()
    assert main(["reproduce", "gamma", "--gammas", "0.2,1", "--out", str(tmp_path / "x")]) == 2
