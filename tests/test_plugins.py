"""A method defined outside gnn-cml: by import path and by entry point, through `train` and `reproduce table3`.

The plugin is ``examples/anil.py`` copied into a temporary package that is not part of gnn-cml.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gnn_cml import methods
from gnn_cml.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "anil.py"
FAST = ["--episodes", "4", "--val-every", "2", "--val-tasks", "2", "--test-tasks", "4", "--inner-steps", "2",
        "--runs", "2", "--no-progress"]


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """``my_methods.anil:ANIL`` in a temporary folder on sys.path, with an installed-package entry point."""
    root = tmp_path / "site"
    package = root / "my_methods"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(EXAMPLE, package / "anil.py")
    info = root / "my_methods-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-methods\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[gnn_cml.methods]\nanil = my_methods.anil:ANIL\n")
    monkeypatch.syspath_prepend(str(root))
    return "my_methods.anil:ANIL"


def test_plugin_by_import_path_and_entry_point(plugin):
    from gnn_cml.config import resolve

    by_path = methods.get(plugin)
    assert by_path.name == "anil" and by_path.cml and by_path.learner.__module__ == "my_methods.anil"
    assert "anil" in methods.available() and methods.get("anil").name == "anil"
    cfg = resolve({"graph": "citeseer", "method": plugin, "inner_steps": 3})
    assert cfg.method == plugin and cfg.option("inner_params") == "head" and cfg.to_dict()["inner_params"] == "head"
    assert resolve({"graph": "citeseer", "method": "anil"}).lr == 0.001


def test_plugin_trains_through_gnn_cml_train(plugin, tmp_path, shared_data, capsys):
    out = tmp_path / "run"
    config = tmp_path / "anil.yaml"
    config.write_text(f"method: {plugin}\ninner_params: head\n")
    assert main(["train", "--graph", "citeseer", "--config", str(config), "--cml", "--root", str(shared_data),
                 "--out", str(out)] + FAST) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["runs"] == 2 and 0 <= line["test_accuracy"] <= 100
    results = json.loads((out / "results.json").read_text())
    assert results["method"] == plugin and results["config"]["inner_params"] == "head"
    assert all(r["episodes"] > 0 for r in results["runs"])
    # the saved run re-evaluates through the same import path
    assert main(["evaluate", str(out), "--no-progress"]) == 0
    # its own option is refused on another method, and a bad value names the choices
    assert main(["train", "--graph", "citeseer", "--config", str(config), "--method", "maml",
                 "--root", str(shared_data), "--out", str(tmp_path / "x")] + FAST) == 2
    config.write_text(f"method: {plugin}\ninner_params: encoder\n")
    assert main(["train", "--graph", "citeseer", "--config", str(config), "--root", str(shared_data),
                 "--out", str(tmp_path / "y")] + FAST) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'inner_params'" in err  # not an option of maml
    assert "inner_params must be one of head, all" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_plugin_runs_in_reproduce_table3(plugin, tmp_path, shared_data, capsys):
    out = tmp_path / "t3"
    assert main(["reproduce", "table3", "--quick", "--graphs", "citeseer", "--shots", "1", "--runs", "2",
                 "--methods", plugin, "--root", str(shared_data), "--out", str(out), "--no-progress"]) == 0
    cell = out / "citeseer" / "2w1s" / "split_1234"
    for arm in ("anil", "anil+cml"):
        results = json.loads((cell / arm / "results.json").read_text())
        assert results["method"] == plugin and len(results["test_accuracy"]["runs"]) == 2
    assert "anil+cml" in (out / "table3.md").read_text()
