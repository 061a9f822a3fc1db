"""What a new user sees: fast help, honest progress, strict JSON, whole-dataset messages, reports."""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gnn_cml.cli import build_parser, main
from gnn_cml.errors import GnnCmlError

REPO = Path(__file__).resolve().parents[1]
FAST = ["--episodes", "4", "--val-every", "2", "--val-tasks", "2", "--test-tasks", "3", "--inner-steps", "1"]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                OMP_NUM_THREADS="1")


def strict_loads(text: str):
    """``json.loads`` that rejects NaN/Infinity, as strict JSON readers do."""
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# --- help -------------------------------------------------------------------------------------
HELP_COMMANDS = [[], ["train"], ["evaluate"], ["datasets"], ["reproduce"], ["reproduce", "table3"],
                 ["reproduce", "gamma"], ["reproduce", "regression"], ["reproduce", "omniglot"]]


def test_help_imports_neither_torch_nor_pyg():
    """Help is fast because it imports no heavy module (benchmarks/help_time.py times it)."""
    probe = """
import contextlib, io, sys
import gnn_cml.config
assert "gnn_cml.commands.train" not in sys.modules, "config.py must not import commands/train.py"
from gnn_cml.cli import build_parser
for argv in %r:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(argv + ["--help"])
        except SystemExit:
            pass
print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "torch_geometric", "matplotlib", "scipy"}))
""" % (HELP_COMMANDS,)
    done = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv + ["--help"])
    return capsys.readouterr().out


@pytest.mark.parametrize("argv", HELP_COMMANDS[1:], ids=lambda a: "-".join(a))
def test_every_option_shows_its_default(argv, capsys):
    parser = build_parser()
    sub = parser
    for name in argv:
        sub = next(a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
    for action in sub._actions:
        if action.option_strings and action.option_strings[0] not in ("-h", "--help", "--second-order"):
            assert "default" in (action.help or ""), (argv, action.option_strings)
    text = _help(argv, capsys)
    assert ":class:" not in text and "``" not in text  # user-facing, no RST


def test_top_level_help_is_user_facing(capsys):
    text = _help([], capsys)
    assert "Few-shot node classification" in text and "``" not in text and "gnn_cml.commands" not in text


def test_train_options_come_from_runconfig(capsys):
    from dataclasses import fields

    from gnn_cml.config import RunConfig, cli_flag

    parser = build_parser()
    train = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices["train"]
    dests = {a.dest for a in train._actions}
    for f in fields(RunConfig):
        if cli_flag(f.name):
            assert f.name in dests, f.name
            assert f.metadata["help"], f.name
    text = _help(["train"], capsys)
    # defaults that depend on the method or graph say so, and where the resolved value is
    assert "0.01 for ammgnn" in text and "amazon_clothing" in text and "config.yaml" in text
    # every historical flag still parses to the same setting
    args = parser.parse_args(["train", "--root", "R", "--second-order", "--split", "3,2,2", "--split-rule", "shuffle",
                              "--init", "torch", "--out-activation", "relu", "--modulation", "scalar", "--config",
                              "c.yaml", "--out", "o", "--resume", "--overwrite", "--task-file", "t.npz",
                              "--no-progress", "--method", "GMETA", "--cml", "--lr", "0.1", "--ways", "3"])
    assert (args.data_root, args.first_order, args.split, args.split_rule, args.init) == \
        ("R", False, [3, 2, 2], "shuffle", "torch")
    assert (args.out_activation, args.modulation, args.method, args.cml, args.lr, args.ways) == \
        ("relu", "scalar", "gmeta", True, 0.1, 3)
    assert args.resume and args.overwrite and args.no_progress and str(args.task_file) == "t.npz"
    assert parser.parse_args(["train", "--first-order"]).first_order is True
    assert parser.parse_args(["train"]).first_order is None  # unset: the config/YAML decides


# --- strict JSON ------------------------------------------------------------------------------
def test_strict_json_writes_null_for_undefined_values(tmp_path):
    from gnn_cml.engine.checkpoint import dumps, write_json

    obj = {"a": float("nan"), "b": [1.5, float("inf")], "c": np.float32("nan"), "d": {"e": -math.inf}, "f": 2}
    assert strict_loads(dumps(obj)) == {"a": None, "b": [1.5, None], "c": None, "d": {"e": None}, "f": 2}
    write_json(tmp_path / "x.json", obj)
    assert strict_loads((tmp_path / "x.json").read_text())["a"] is None


def test_one_run_results_are_strict_json_and_flag_the_ci(tmp_path, shared_data, capsys):
    out = tmp_path / "run"
    assert main(["train", "--graph", "cora", "--root", str(shared_data), "--out", str(out), "--runs", "1",
                 *FAST, "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # --no-progress: nothing on stderr
    line = strict_loads(captured.out.strip())
    assert line["ci95"] is None and "undefined" in line["ci95_note"]
    results = strict_loads((out / "results.json").read_text())
    assert results["test_accuracy"]["ci95"] is None and results["test_accuracy"]["ci95_note"]
    strict_loads((out / "run_0" / "result.json").read_text())
    for text in (out / "run_0" / "metrics.jsonl").read_text().splitlines():
        strict_loads(text)


def test_two_runs_flag_an_unreliable_ci(finished_run):
    acc = strict_loads((finished_run / "results.json").read_text())["test_accuracy"]
    assert acc["n"] == 2 and "unreliable" in acc["ci95_note"]


# --- progress ---------------------------------------------------------------------------------
def test_status_line_tells_the_truth(monkeypatch):
    from gnn_cml.engine import progress

    buffer = io.StringIO()
    monkeypatch.setattr(progress, "stream", lambda: buffer)
    monkeypatch.setattr(progress, "MIN_INTERVAL_S", 0.0)
    shown = progress.TrainProgress("run 2/5", "accuracy", patience=10, max_episodes=1000)
    shown.start(0)
    shown.validated(140, 0.58, 0.61, 90, 2)
    shown.finish(200, stopped_early=True)
    lines = buffer.getvalue().splitlines()
    assert "\r" not in buffer.getvalue()
    assert lines[1].startswith("run 2/5 · episode 140 (at most 1000)")
    assert "best val 61.0% @ 90 · 2 of 10 validations without gain" in lines[1]
    assert "stopped early: 10 validations without gain" in lines[-1]


def test_plain_lines_are_rate_limited(monkeypatch):
    from gnn_cml.engine import progress

    buffer = io.StringIO()
    monkeypatch.setattr(progress, "stream", lambda: buffer)
    shown = progress.TrainProgress("run 1/1", "accuracy", patience=10, max_episodes=100)
    shown.start(0)
    for episode in range(1, 101):
        shown.episode(episode)  # episodes alone print nothing (until a long silence)
        if episode % 10 == 0:
            shown.validated(episode, 0.5, 0.5, 10, 0)
    assert len(buffer.getvalue().splitlines()) <= 3  # start + at most one validation within 2 s


@pytest.mark.parametrize("batched", [False, True])
def test_pipe_output_is_line_by_line(tmp_path, shared_data, batched):
    """Through a pipe: no carriage returns, start-up, run k/n lines with test accuracy, JSON on stdout
    (runs one after another, or all runs batched)."""
    out = tmp_path / "run"
    env = dict(_env(), GNN_CML_DATA=str(shared_data))
    done = subprocess.run([sys.executable, "-m", "gnn_cml.cli", "train", "--graph", "cora", "--out", str(out),
                           "--runs", "2", *FAST, *([] if batched else ["--no-batch-runs"])], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "\r" not in err and "\033" not in err
    lines = err.splitlines()
    assert lines[0].startswith("gnn-cml train: starting")
    assert any(line.startswith("loading graph cora") for line in lines)
    if batched:
        assert any(line.startswith("training runs 1-2 of 2 (run_0-run_1) as one batched computation")
                   for line in lines), err
        assert any(line.startswith("runs 1-2/2 (run_0-run_1) · 2 runs batched · episode") and "run-episodes/s" in line
                   for line in lines), err
        assert any(line.startswith("runs 1-2/2 (run_0-run_1) · testing on 6 tasks") for line in lines), err
        assert any(line.startswith("runs 1-2/2 (run_0-run_1) · the batch took") and "its 1/2 share" in line
                   for line in lines), err
    for k in (1, 2):  # the console's run k is the folder run_<k-1>
        assert (out / f"run_{k - 1}" / "result.json").is_file()
        if not batched:
            assert any(line.startswith(f"run {k}/2 (run_{k - 1}) · episode") for line in lines), err
            assert any(line.startswith(f"run {k}/2 (run_{k - 1}) · testing on 3 tasks") for line in lines), err
        assert any(line.startswith(f"run {k}/2 (run_{k - 1}) · test accuracy") and "%" in line
                   and ("its 1/2 share" in line) == batched for line in lines), err
    assert any("mean ± 95% CI over 2 runs" in line and "unreliable" in line for line in lines)
    stdout = done.stdout.strip().splitlines()
    assert len(stdout) == 1 and strict_loads(stdout[0])["runs"] == 2

    done = subprocess.run([sys.executable, "-m", "gnn_cml.cli", "evaluate", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    assert any(line.startswith("run 2/2 (run_1) · evaluating on 3 tasks") for line in done.stderr.splitlines())
    assert strict_loads(done.stdout)["test_accuracy"]["n"] == 2


# --- dataset messages -------------------------------------------------------------------------
def _tree(root: Path):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_missing_planetoid_lists_every_file_and_leaves_nothing(tmp_path, no_network):
    from gnn_cml.data import load_graph
    from gnn_cml.data.planetoid import raw_files

    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(GnnCmlError) as err:
        load_graph("cora", root)
    message = str(err.value)
    assert "8 of 8 files missing from" in message and str(root / "planetoid" / "Cora" / "raw") in message
    assert all(name in message for name in raw_files("cora")) and "\n" not in message
    assert _tree(root) == []  # no empty planetoid/Cora/raw left behind


def test_failed_download_midway_removes_what_it_fetched(tmp_path, monkeypatch):
    from gnn_cml.data import load_graph, planetoid

    root = tmp_path / "root"
    root.mkdir()
    calls = []

    def flaky(url, folder, filename=None, log=True):
        calls.append(url)
        if len(calls) > 2:
            raise OSError("connection reset")
        Path(folder, filename).write_bytes(b"partial")

    monkeypatch.setattr(planetoid, "download_url", flaky)
    monkeypatch.setattr(planetoid, "KNOWN_SHA256", {})  # the first two "downloads" pass
    with pytest.raises(GnnCmlError, match="connection reset"):
        load_graph("cora", root)
    assert _tree(root) == []


def test_partial_gpn_names_only_the_missing_file(tmp_path, shared_data, no_network):
    from gnn_cml.data import graph_info, load_graph

    root = tmp_path / "root"
    (root / "gpn").mkdir(parents=True)
    for name in ("Amazon_clothing_network", "Amazon_clothing_test.mat"):
        shutil.copyfile(shared_data / "gpn" / name, root / "gpn" / name)
    assert graph_info("amazon_clothing").file_status(root) == (2, 3)
    with pytest.raises(GnnCmlError) as err:
        load_graph("amazon_clothing", root)
    message = str(err.value)
    assert "1 of 3 files missing" in message and "Amazon_clothing_train.mat" in message
    assert "Amazon_clothing_network" not in message.split("missing from")[1].split(")")[0]
    assert sorted(p.name for p in (root / "gpn").iterdir()) == ["Amazon_clothing_network",
                                                                 "Amazon_clothing_test.mat"]


@pytest.mark.parametrize("graph, files", [("dblp", ["dblp_network", "dblp_train.mat", "dblp_test.mat"]),
                                          ("corafull", ["cora.npz"])])
def test_missing_graph_in_empty_root(tmp_path, no_network, graph, files):
    from gnn_cml.data import load_graph

    with pytest.raises(GnnCmlError) as err:
        load_graph(graph, tmp_path)
    message = str(err.value)
    assert f"{len(files)} of {len(files)} file" in message and all(f in message for f in files)
    assert "data/README.md" in message
    assert _tree(tmp_path) == []


# --- TensorBoard ------------------------------------------------------------------------------
def test_tensorboard_tags_are_shared_and_hold_test_and_hparams(finished_run):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = []
    for run in ("run_0", "run_1"):
        acc = EventAccumulator(str(finished_run / run / "tensorboard"))
        acc.Reload()
        tags.append(set(acc.Tags()["scalars"]))
    assert tags[0] == tags[1]  # the same names in every run: TensorBoard overlays them
    assert {"train/loss", "val/accuracy", "test/accuracy"} <= tags[0]
    events = b"".join(p.read_bytes() for p in (finished_run / "run_0" / "tensorboard").rglob("events.*"))
    assert b"hparams" in events and b"inner_lr" in events


# --- reports ----------------------------------------------------------------------------------
def test_table3_report_marks_quick_runs_and_small_ci(tmp_path):
    pytest.importorskip("matplotlib")
    from gnn_cml.report.table3 import Report, Row, write_reports

    rows = [Row("cora", "2-way 1-shot", "maml", 60.0, None, 1, None, 5.0, 10.0),
            Row("citeseer", "2-way 5-shot", "gmeta+cml", 75.0, 2.0, 2, 76.07, 5.0, 10.0)]
    paths = write_reports(Report(rows, [], [], {}), tmp_path, "gnn-cml reproduce table3 --quick", quick=True)
    md = (tmp_path / "table3.md").read_text()
    assert "| citeseer | 2-way 5-shot | 1234 | gmeta+cml | 75.00 ± 2.00 | 76.07 |" in md
    assert "| cora | 2-way 1-shot | 1234 | maml | 60.00 ± - | - |" in md
    assert "quick (smoke) run" in md and "fewer than 3 runs" in md
    assert (tmp_path / "table3.png") in paths and (tmp_path / "table3.png").stat().st_size > 0
