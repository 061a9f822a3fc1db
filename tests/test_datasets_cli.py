"""``gnn-cml datasets``: a table of every registered graph, answered without loading any."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from gnn_cml.cli import main
from gnn_cml.data import gpn, list_graphs, ogb_datasets, planetoid, pyg_datasets


def rows(output: str):
    lines = output.splitlines()
    assert lines[0].split()[:5] == ["graph", "nodes", "edges", "features", "classes"]
    return {line.split()[0]: line for line in lines[1:] if line and not line.startswith("data root")}


@pytest.fixture
def no_loading(monkeypatch):
    for module in (planetoid, pyg_datasets, ogb_datasets, gpn):
        monkeypatch.setattr(module, "load", lambda *a: pytest.fail("datasets loaded a graph"))


def test_table_lists_every_graph_with_split_and_availability(shared_data, capsys, no_loading,
                                                             no_network):
    start = time.perf_counter()
    assert main(["datasets", "--root", str(shared_data)]) == 0
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    table = rows(out)
    assert list(table) == [g.name for g in list_graphs()]
    assert table["cora"].split()[1:5] == ["2,708", "10,556", "1,433", "7"]
    assert " 3/2/2 " in table["cora"] and table["cora"].endswith("yes")
    assert table["citeseer"].endswith("yes")
    assert "40/17/20 (upstream)" in table["amazon_clothing"]
    assert table["amazon_clothing"].endswith("no (2/3 files)")  # the real _train.mat is not shipped offline
    assert table["amazon_electronics"].endswith("no (1/3 files)")
    for name in ("corafull", "amazon_computers", "coauthor_cs", "ogbn_arxiv", "dblp"):
        assert table[name].endswith("no")
    assert f"data root: {shared_data.resolve()} (--root)" in out
    assert elapsed < 2.0


def test_root_from_environment_and_empty_root(tmp_path, capsys, monkeypatch, no_loading):
    monkeypatch.setenv("GNN_CML_DATA", str(tmp_path))
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert all(line.endswith("no") for line in rows(out).values())
    assert f"data root: {tmp_path.resolve()} ($GNN_CML_DATA)" in out


def test_module_entry_point_runs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gnn_cml.cli", "datasets", "--root", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "amazon_electronics" in result.stdout and "91/36/40 (upstream)" in result.stdout
