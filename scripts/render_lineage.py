"""Render one pipeline of a ``kedro viz build`` export as a left-to-right lineage picture (PNG).

Nodes (tasks), datasets and parameter blocks are laid out in columns: each node one column right
of its furthest input, and every dataset or parameter block that nothing produces (the raw data,
the ``params:`` blocks, a stage's own stored partitions ``*_state``) just left of the first node
that reads it, so each stage sits beside its parameters. Within a column, nodes are ordered by the
mean row of their neighbours (a few sweeps of the barycentre heuristic) to keep edges short.

Usage::

    python scripts/render_lineage.py --out docs/preprocess_lineage.png            # runs kedro viz build
    python scripts/render_lineage.py --json build/api/pipelines/preprocess --out lineage.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Face colours and box styles by kind of node in the export.
STYLE = {
    "task": {"facecolor": "#1f4e79", "textcolor": "white", "boxstyle": "square,pad=0.35"},
    "data": {"facecolor": "#dbe9f6", "textcolor": "black", "boxstyle": "round,pad=0.35"},
    "parameters": {"facecolor": "#fde9c9", "textcolor": "black", "boxstyle": "round4,pad=0.3"},
}


def viz_export(project: Path, pipeline: str) -> dict:
    """Run ``kedro viz build`` in ``project`` and return the export of ``pipeline``."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, "-m", "kedro", "viz", "build"], cwd=project, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"kedro viz build failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return json.loads((project / "build" / "api" / "pipelines" / pipeline).read_text())


def layout(export: dict, sweeps: int = 4) -> dict[str, tuple[int, float]]:
    """Column and row of every node of a viz export: ``{id: (column, row)}``.

    Parameters
    ----------
    export : dict
        ``nodes`` (``id``, ``name``, ``type``) and ``edges`` (``source``, ``target``) of one pipeline.
    sweeps : int
        Barycentre sweeps (left to right, then right to left) ordering the rows within columns.
    """
    ids = [n["id"] for n in export["nodes"]]
    inputs, outputs = defaultdict(list), defaultdict(list)
    for edge in export["edges"]:
        inputs[edge["target"]].append(edge["source"])
        outputs[edge["source"]].append(edge["target"])
    column: dict[str, int] = {}

    def depth(node: str, seen: frozenset = frozenset()) -> int:
        if node not in column:
            producers = [p for p in inputs[node] if inputs[p] and p not in seen]  # produced upstream
            column[node] = 1 + max((depth(p, seen | {node}) for p in producers), default=0)
        return column[node]

    for node in ids:
        if inputs[node]:
            depth(node)
    for node in ids:
        if not inputs[node]:  # a source: just left of its first reader
            column[node] = min((column[t] for t in outputs[node] if t in column), default=1) - 1
    columns: dict[int, list[str]] = defaultdict(list)
    for node in ids:
        columns[column[node]].append(node)
    row = {node: float(i) for nodes in columns.values() for i, node in enumerate(nodes)}
    order = sorted(columns)
    for sweep in range(2 * sweeps):
        for c in order if sweep % 2 == 0 else order[::-1]:
            side = inputs if sweep % 2 == 0 else outputs
            def centre(node: str) -> float:
                near = side[node] or (outputs if sweep % 2 == 0 else inputs)[node]
                return sum(row[n] for n in near) / len(near) if near else row[node]
            for i, node in enumerate(sorted(columns[c], key=centre)):
                row[node] = float(i)
    height = max(len(nodes) for nodes in columns.values())
    for nodes in columns.values():  # centre each column vertically
        for node in nodes:
            row[node] += (height - len(nodes)) / 2.0
    shift = min(order)
    return {node: (column[node] - shift, row[node]) for node in ids}


def label(node: dict) -> str:
    """A node's short name: ``params:preprocess.lungs`` -> ``preprocess.lungs``."""
    return node["name"].removeprefix("params:")


def render(export: dict, out: Path, title: str) -> Path:
    """Draw the export's nodes and edges left to right into ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = layout(export)
    n_columns = 1 + max(c for c, _ in pos.values())
    n_rows = 1 + max(r for _, r in pos.values())
    fig, ax = plt.subplots(figsize=(max(8.0, 2.1 * n_columns), max(4.0, 0.8 * n_rows + 1.5)))
    by_id = {n["id"]: n for n in export["nodes"]}
    fan_out = defaultdict(int)
    for edge in export["edges"]:
        fan_out[edge["source"]] += 1
    for edge in export["edges"]:
        (x0, y0), (x1, y1) = pos[edge["source"]], pos[edge["target"]]
        shared = by_id[edge["source"]]["type"] == "parameters" and fan_out[edge["source"]] > 2  # e.g. the executor
        ax.annotate("", xy=(x1 - 0.35, -y1), xytext=(x0 + 0.35, -y0),
                    arrowprops={"arrowstyle": "-|>", "color": "#c9a15a" if shared else "#666666",
                                "lw": 0.5 if shared else 0.8, "linestyle": ":" if shared else "-",
                                "shrinkA": 0, "shrinkB": 0}, zorder=1)
    for node_id, (x, y) in pos.items():
        node = by_id[node_id]
        style = STYLE.get(node["type"], STYLE["data"])
        ax.text(x, -y, label(node), ha="center", va="center", fontsize=7, color=style["textcolor"], zorder=3,
                bbox={"boxstyle": style["boxstyle"], "facecolor": style["facecolor"], "edgecolor": "#333333",
                      "linewidth": 0.6})
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=s["facecolor"], edgecolor="#333333") for s in STYLE.values()]
    ax.legend(handles, ["node (stage)", "dataset", "parameter block"], loc="lower left", fontsize=7, frameon=False)
    ax.set_xlim(-0.7, n_columns - 0.3)
    ax.set_ylim(-n_rows + 0.3, 0.8)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="a pipeline file of an existing export (build/api/pipelines/<name>)")
    parser.add_argument("--project", type=Path, default=ROOT, help="Kedro project to run `kedro viz build` in")
    parser.add_argument("--pipeline", default="preprocess")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "preprocess_lineage.png")
    args = parser.parse_args(argv)
    export = json.loads(args.json.read_text()) if args.json else viz_export(args.project, args.pipeline)
    kinds = defaultdict(int)
    for node in export["nodes"]:
        kinds[node["type"]] += 1
    render(export, args.out, f"{args.pipeline}: {kinds['task']} nodes, {kinds['data']} datasets, "
                             f"{kinds['parameters']} parameter blocks (kedro viz build)")
    print(f"{args.out}: {dict(kinds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
