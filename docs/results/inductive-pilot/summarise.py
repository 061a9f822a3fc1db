"""Paired inductive − transductive table of the pilot (``run.sh``'s output folder).

    PYTHONPATH=. python3 docs/results/inductive-pilot/summarise.py OUT_DIR > docs/results/inductive-pilot/summary.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from gnn_cml.experiments.paired import load_results, paired_stats

METHODS = {"gmeta": "G-Meta", "maml": "MAML", "protonet": "ProtoNet", "tlp": "TLP-DGI (100 epochs)"}


def main(out: Path) -> None:
    rows, lines = [], ["| method | transductive | inductive | inductive − transductive (paired, 95% CI) |",
                       "|---|---|---|---|"]
    for method, name in METHODS.items():
        arms = {s: load_results(out / f"{method}-{s}") for s in ("transductive", "inductive")}
        assert arms["transductive"]["test_tasks_sha256"] == arms["inductive"]["test_tasks_sha256"]
        stats = paired_stats(arms["transductive"]["test_accuracy"]["runs"], arms["inductive"]["test_accuracy"]["runs"])
        rows.append({"method": method, **stats,
                     "wall_time_s": {s: arms[s]["wall_time_s"] for s in arms}})
        b, t = stats["base"], stats["treated"]
        lines.append(f"| {name} | {b['mean']:.2f} ± {b['ci95']:.2f} | {t['mean']:.2f} ± {t['ci95']:.2f} | "
                     f"{stats['delta']:+.2f} [{stats['delta_low']:+.2f}, {stats['delta_high']:+.2f}] |")
    order = {s: sorted(rows, key=lambda r: -r["base" if s == "transductive" else "treated"]["mean"])
             for s in ("transductive", "inductive")}
    ranking = {s: [r["method"] for r in order[s]] for s in order}
    print(json.dumps({"cell": "CiteSeer 2-way 5-shot, class split seed 1234, 5 paired runs, 100 fixed test tasks",
                      "rows": rows, "ranking_by_mean": ranking, "table": lines}, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
