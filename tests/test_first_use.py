"""What a new user meets first: the README's claims and examples, config files, run folders,
TLP's output, the datasets listing, plots of a smoke run."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gnn_cml.cli import main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
FAST = ["--episodes", "4", "--val-every", "2", "--val-tasks", "2", "--test-tasks", "3", "--inner-steps", "1"]


def _env(**extra):
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1", **extra)


# --- the amazon_clothing config, the CLI and the README agree -----------------------------------
def test_amazon_clothing_config_cli_and_readme_agree():
    from gnn_cml.config import resolve

    config = REPO / "configs" / "amazon_clothing.yaml"
    by_file = resolve({}, config)
    by_flag = resolve({"graph": "amazon_clothing"})
    assert (by_file.method, by_file.cml) == ("gmeta", True)  # what the file says it trains
    assert (by_flag.method, by_flag.cml) == ("maml", False)  # the default method, as on every graph
    for key in ("ways", "shots", "queries", "test_queries", "test_tasks"):  # one GPN protocol
        assert getattr(by_file, key) == getattr(by_flag, key), key
    assert (by_flag.ways, by_flag.shots, by_flag.test_tasks) == (5, 5, 50)
    assert "gnn-cml train --config configs/amazon_clothing.yaml" in config.read_text()
    assert "gnn-cml train --config configs/amazon_clothing.yaml` downloads the GPN" in README
    assert "`gnn-cml train --graph amazon_clothing` alone uses the same protocol" in README


# --- the README says what is so -------------------------------------------------------------------
def test_readme_links_resolve_inside_the_repository():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" not in target:
            assert (REPO / target).exists(), f"README links {target}, which is not in the repository"
    assert "../shared/PAPER.md" not in README and "(`../shared/" not in README
    protocol = (REPO / "docs" / "protocol.md").read_text()
    for fact in ("np.random.seed(1234)", "| Cora | 3, 5, 6 | 4, 0 | 2, 1 |", "55.15", "0.196 * std"):
        assert fact in protocol


@pytest.mark.parametrize("argv", [["train"], ["reproduce", "table3"], ["reproduce", "field"], ["reproduce", "gamma"],
                                  ["reproduce", "regression"], ["reproduce", "omniglot"], ["datasets"]])
def test_docs_speak_of_the_project_not_its_history(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv + ["--help"])
    texts = {"README.md": README, " ".join(argv) + " --help": capsys.readouterr().out}
    for where, text in texts.items():
        for phrase in ("issue 1", "issue 2", "previous wave", "earlier version", "older code"):
            assert phrase not in text.lower(), f"{where} says {phrase!r}"


def test_help_defaults_state_each_value_once(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: dgi)" in text and "dgi for tlp" not in text and "dgi with tlp" not in text
    assert "default: 1)" in text and "1.0 for tlp" not in text
    assert "default: torch)" in text and "torch for tlp" not in text


def test_readme_python_api_runs_on_cora_and_on_an_own_csr_graph(shared_data, tmp_path, monkeypatch):
    """The README's two Python API blocks, as written, on Cora and on an own graph whose features
    the file stores as CSR parts (the README documents both): data.x is dense on both."""
    import scipy.sparse as sp
    import torch

    from gnn_cml.data import load_graph

    blocks = re.findall(r"```python\n(.*?)```", README.split("## Python API")[1], re.S)[:2]
    assert len(blocks) == 2 and "data.x[episode.support]" in blocks[0]
    monkeypatch.setenv("GNN_CML_DATA", str(shared_data))
    monkeypatch.chdir(tmp_path)
    cora = load_graph("cora")
    x = sp.csr_matrix(cora.x.numpy())
    own = tmp_path / "own.npz"
    np.savez(own, edge_index=cora.edge_index.numpy(), y=cora.y.numpy(), x_data=x.data, x_indices=x.indices,
             x_indptr=x.indptr, x_shape=np.array(x.shape))
    for name in ("cora", str(own)):
        scope = {}
        exec(blocks[0].replace('load_graph("cora")', f"load_graph({name!r})"), scope)
        data, episode = scope["data"], scope["episode"]
        assert data.x.layout == torch.strided and torch.equal(data.x, cora.x)
        assert torch.equal(scope["support_x"], cora.x[episode.support])
        assert tuple(scope["split"].train) == (3, 5, 6) and tuple(scope["split"].val) == (4, 0)
        assert tuple(scope["split"].test) == (2, 1)  # the README's comment
        exec(blocks[1], scope)
        assert scope["logits"].shape == (len(episode.query), 2)


# --- run folders agree with themselves --------------------------------------------------------------
def test_run_folder_units_numbering_and_resumed_wall_time(tmp_path, shared_data, capsys):
    out = tmp_path / "run"
    args = ["train", "--graph", "cora", "--root", str(shared_data), "--out", str(out), "--runs", "2", *FAST]
    assert main(args) == 0
    captured = capsys.readouterr()
    first = json.loads(captured.out)
    for key, value in first.items():  # rounded numbers on stdout
        if isinstance(value, float):
            assert value == round(value, 2), (key, value)
    results = json.loads((out / "results.json").read_text())
    assert results["test_accuracy"]["unit"] == "percent"
    for k, record in enumerate(results["runs"]):
        assert record["run"] == k and (out / f"run_{k}" / "result.json").is_file()
        assert f"run {k + 1}/2 (run_{k}) · test accuracy" in captured.err
        lines = [json.loads(line) for line in (out / f"run_{k}" / "metrics.jsonl").read_text().splitlines()]
        assert lines and all(line["unit"] == "percent" for line in lines)
        assert lines[-1]["best_val_accuracy"] == pytest.approx(record["best_val_accuracy"], abs=1e-3)
        assert any(line["val_accuracy"] > 1 for line in lines)  # percent, not fractions
    assert first["wall_time_s"] > 0
    assert main(args[:-len(FAST)] + FAST + ["--resume"]) == 0  # a finished run, resumed: nothing to do
    again = json.loads(capsys.readouterr().out)
    assert again["test_accuracy"] == first["test_accuracy"]
    assert again["wall_time_s"] >= first["wall_time_s"]  # its real time, not the 0 s of this call


def test_metrics_line_keeps_losses_and_non_accuracy_metrics():
    from gnn_cml.engine.trainer import metrics_line

    record = {"episode": 10, "train_loss": 0.5, "train_accuracy": 0.625, "val_accuracy": 0.5,
              "best_val_accuracy": None, "seconds": 1.0}
    assert metrics_line(record, "accuracy") == {"episode": 10, "train_loss": 0.5, "train_accuracy": 62.5,
                                                "val_accuracy": 50.0, "best_val_accuracy": None, "seconds": 1.0,
                                                "unit": "percent"}
    mse = {"episode": 10, "train_loss": 0.5, "val_mse": 0.3}
    assert metrics_line(mse, "mse") == mse


# --- TLP says what it does and stays in plain lines ---------------------------------------------------
def test_tlp_output_through_a_pipe(tmp_path, shared_data):
    env = _env(GNN_CML_DATA=str(shared_data))
    done = subprocess.run([sys.executable, "-m", "gnn_cml.cli", "train", "--graph", "cora", "--method", "tlp",
                           "--pretrain", "supervised", "--pretrain-epochs", "3", "--runs", "2", "--test-tasks", "3"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "\r" not in err and "\033" not in err and len(err) < 3000, err
    assert "episodes" not in err and "validation every" not in err, err
    assert "tlp-supervised on cora, 2-way 1-shot: 2 runs; each run pretrains a GCN" in err
    assert "at most 3 epochs" in err and "one logistic probe per test task" in err
    assert "run 1/2 (run_0) · tlp-supervised pretrain · done: 3 epochs" in err, err
    assert "tlp-supervised on cora 2-way 1-shot: test accuracy" in err
    line = json.loads(done.stdout)  # the only stdout line
    assert line["out"] == "runs/cora-tlp-supervised-2w1s"
    assert (tmp_path / "runs" / "cora-tlp-supervised-2w1s" / "run_1" / "encoder.pt").is_file()


# --- datasets is quick ---------------------------------------------------------------------------
def test_datasets_imports_neither_torch_nor_pyg(shared_data):
    probe = ("import sys, contextlib, io\nfrom gnn_cml.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()) as out:\n    assert main(['datasets']) == 0\n"
             "assert 'cora ' in out.getvalue()\n"
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'torch_geometric'}))")
    env = {k: v for k, v in _env(GNN_CML_DATA=str(shared_data)).items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_readme_command_table_mentions_quick_for_the_long_benchmarks():
    row = next(line for line in README.splitlines() if line.startswith("| `gnn-cml reproduce regression"))
    assert "reproduce regression [--quick]" in row and "reproduce omniglot [--quick]" in row


def test_readme_install_paths():
    for text in ("https://download.pytorch.org/whl/cpu", "torch ≥ 2.1 already installed", "an NVIDIA GPU",
                 "pip install torch==2.13.0 -e . && GNN_CML_DATA=../shared/data gnn-cml train --config "
                 "configs/citeseer.yaml", 'pip install torch==2.13.0 -e ".[test,ray]" && GNN_CML_DATA=../shared/data '
                 "python3 -m pytest"):
        assert text in README
    assert "pins the CPU build" not in README
    assert "torch>=2.1" in (REPO / "setup.cfg").read_text()


# --- plots of a smoke run -------------------------------------------------------------------------
def test_method_colours_are_one_per_learner():
    from gnn_cml.report.table3 import method_colour

    from gnn_cml import methods

    bases = [m.name for m in methods.BUILTIN if not m.arms] + [a for m in methods.BUILTIN for a in m.arms]
    assert {"maml", "gmeta", "ammgnn", "tlp-dgi", "tlp-grace", "tlp-supervised"} <= set(bases)
    assert len({method_colour(m) for m in bases}) == len(bases)
    for m in bases[:4]:
        variants = {method_colour(m), method_colour(m + "+cml"), method_colour(m + "+dagger")}
        assert len(variants) == 3
        assert method_colour(m + "+cml") == tuple(0.6 * c for c in method_colour(m))  # a darker shade, same hue


def test_quick_reports_carry_the_banner_and_the_seed(tmp_path, monkeypatch):
    """gamma.md names its seeds and, for --quick, the smoke banner; every --quick figure is drawn with it."""
    import matplotlib.pyplot as plt

    from gnn_cml.report import gamma, table3

    titles = []
    real_savefig = plt.Figure.savefig

    def savefig(fig, path, *args, **kwargs):
        texts = [fig._suptitle.get_text() if fig._suptitle else ""] + [ax.get_title() for ax in fig.axes]
        titles.append((Path(path).name, " ".join(texts)))
        return real_savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(plt.Figure, "savefig", savefig)
    rows = [gamma.GammaRow("citeseer", "2-way 5-shot", "gmeta", g, 3, 60.0 + g, 1.0, d, 0.5, d - 0.5, d + 0.5,
                           None if g == 0 else 0.5) for g, d in ((0.0, 0.0), (0.2, 0.1), (1.0, -0.2))]
    gamma.write_reports(rows, [], tmp_path, "gnn-cml reproduce gamma --quick --split-seed 1235 --seed 7",
                        split_seed=1235, seed=7, quick=True)
    md = (tmp_path / "gamma.md").read_text()
    assert "class split seed 1235" in md and "run seed 7" in md and table3.QUICK_BANNER in md
    pair = table3.PairRow("citeseer", "2-way 1-shot", 1, "1234", "gmeta", "cml", 3, 50.0, 1.0, 51.0, 1.0, 1.0, 0.5,
                          0.5, 1.5, 0.5, 6.02)
    arm = table3.Row("citeseer", "2-way 1-shot", "gmeta", 50.0, 1.0, 3, 55.15, None, None)
    table3.write_reports(table3.Report([arm], [pair], [], {}), tmp_path, "gnn-cml reproduce table3 --quick",
                         quick=True)
    drawn = dict(titles)
    assert set(drawn) == {"gamma.png", "table3.png", "table3_forest.png"}
    for name, text in drawn.items():
        assert table3.QUICK_BANNER in text, name
