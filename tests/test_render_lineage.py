"""scripts/render_lineage.py lays a kedro-viz export out left to right and draws it (issue 9: a picture of the lineage)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "render_lineage.py"
spec = importlib.util.spec_from_file_location("render_lineage", SCRIPT)
render_lineage = importlib.util.module_from_spec(spec)
spec.loader.exec_module(render_lineage)


def pipeline_export(pipeline) -> dict:
    """What ``kedro viz build`` exports of a pipeline: task, data and parameters nodes, and the edges between them."""
    nodes, edges = {}, []
    for node in pipeline.nodes:
        nodes[node.name] = {"id": node.name, "name": node.name, "type": "task"}
        for name in node.inputs:
            nodes.setdefault(name, {"id": name, "name": name, "type": "parameters" if name.startswith("params:") else "data"})
            edges.append({"source": name, "target": node.name})
        for name in node.outputs:
            nodes.setdefault(name, {"id": name, "name": name, "type": "data"})
            edges.append({"source": node.name, "target": name})
    return {"nodes": list(nodes.values()), "edges": edges}


def test_the_preprocess_lineage_reads_left_to_right_with_each_stage_beside_its_parameters():
    from colearn_pipeline.pipelines.preprocess import create_pipeline

    export = pipeline_export(create_pipeline())
    pos = render_lineage.layout(export)
    column = {node: c for node, (c, _) in pos.items()}
    assert all(column[e["source"]] < column[e["target"]] for e in export["edges"])
    chain = ["discover_studies", "read_series", "convert_to_suv", "resample_pet_to_ct", "segment_tumours",
             "compose_labels", "build_model_input", "write_manifest", "check_preprocess_outcome"]
    assert [column[n] for n in chain] == sorted(column[n] for n in chain) and len({column[n] for n in chain}) == len(chain)
    assert column["segment_lungs"] < column["segment_mediastinum"] < column["compose_labels"]
    for stage, block in [("segment_tumours", "params:preprocess.tumours"), ("segment_lungs", "params:preprocess.lungs"),
                         ("discover_studies", "params:preprocess.discover_studies")]:
        assert column[block] == column[stage] - 1
    assert column["raw_dicom"] == 0
    rows = {}
    for node, (c, r) in pos.items():
        assert (c, r) not in rows, (node, rows.get((c, r)))  # no two nodes on one spot
        rows[(c, r)] = node


def test_render_writes_a_png_of_the_export(tmp_path):
    export = {"nodes": [{"id": "a", "name": "raw", "type": "data"}, {"id": "p", "name": "params:preprocess.x", "type": "parameters"},
                        {"id": "t", "name": "stage", "type": "task"}, {"id": "b", "name": "out", "type": "data"}],
              "edges": [{"source": "a", "target": "t"}, {"source": "p", "target": "t"}, {"source": "t", "target": "b"}]}
    assert render_lineage.layout(export) == {"a": (0, 0.0), "p": (0, 1.0), "t": (1, 0.5), "b": (2, 0.5)}
    out = render_lineage.render(export, tmp_path / "lineage.png", "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    json_file = tmp_path / "preprocess"
    json_file.write_text(__import__("json").dumps(export))
    assert render_lineage.main(["--json", str(json_file), "--out", str(tmp_path / "cli.png")]) == 0
    assert (tmp_path / "cli.png").is_file()
    assert render_lineage.label(export["nodes"][1]) == "preprocess.x"
