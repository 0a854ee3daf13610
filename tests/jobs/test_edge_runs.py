"""scripts/path_patch.py and scripts/circuit.py end to end on tiny models (offline W&B): their files,
tables, summaries and the checks that refuse a request before any model loads or run starts."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bindexp.interventions.results.grid import Grid

pytestmark = pytest.mark.cli

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model=tiny-random-llama", "--seq_len=5", "--hops=2", "--shots=1", "--only_correct=False",
        "--systematic_only=False", "--progress=False", "--min_gap=0", "--num_programs=3"]


def _main(name, argv):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _files(printed):
    (line,) = [x for x in printed.splitlines() if "wandb sync" in x]
    return Path(line.split("wandb sync ")[1].strip()) / "files"


def test_path_patch_script(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = TINY + ["--wandb_mode=offline", "--receivers=[q:2.1, v:3.0+3.2, logits]", "--top_k=3"]
    assert _main("path_patch", argv) == 0
    files = _files(capsys.readouterr().out)
    assert json.loads((files / "config.json").read_text())["job_type"] == "path_patch"
    summary = json.loads((files / "summary.json").read_text())
    assert summary["pairs"] == 3 and set(summary["receiver_sets"]) == {"q:2.1", "v:3.0+3.2", "logits"}
    assert summary["receiver_sets"]["v:3.0+3.2"]["receivers"] == ["3.kv0 v", "3.kv1 v"]
    grid = Grid.load(files / "grids" / "logits")
    assert grid.axes == ("sender",) and len(grid.labels["sender"]) == 1 + 4 * 5  # every node before the logits
    assert Grid.load(files / "grids" / "q_2.1").labels["sender"][-1] == "mlp 1"  # nothing of layer 2 reaches q:2.1
    top = summary["receiver_sets"]["logits"]["top"]
    assert len(top) == 3
    effects = grid.mean["normalized_effect"]
    assert top[0]["sender"] == grid.labels["sender"][int(np.nanargmax(np.abs(effects)))]
    assert top[0]["ci_low"] <= top[0]["normalized_effect"] <= top[0]["ci_high"] and top[0]["n"] == 3
    table = pd.read_csv(files / "path_patch.csv")
    assert len(table) == sum(len(Grid.load(files / "grids" / n).labels["sender"]) for n in ("logits", "q_2.1", "v_3.0+3.2"))
    for name in ("logits", "q_2.1", "v_3.0+3.2"):
        assert (files / f"path_patch_{name}.png").exists()


def test_circuit_script(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = TINY + ["--model=tiny-random-conv", "--wandb_mode=offline", "--ig_steps=2", "--top_n=6",
                   "--verify_top_k=8", "--verify=full", "--verify_receivers=[logits, q:3.0]"]
    assert _main("circuit", argv) == 0
    printed = capsys.readouterr().out
    files = _files(printed)
    summary = json.loads((files / "summary.json").read_text())
    assert summary["method"] == "eap_ig" and summary["circuit_edges"] == 6 and summary["pairs"] == 3
    edges = pd.read_csv(files / "edges.csv")
    assert len(edges) == summary["edges_total"] == len(Grid.load(files / "grids" / "scores").labels["edge"])
    assert sorted(edges.loc[edges["in_circuit"], "rank"]) == list(range(1, 7))
    # checked: the 8 best by |score| and every edge into the logits and into head 3.0's query
    full = edges["receiver"].isin(["logits", "3.0 q"])
    checked = edges["exact"].notna()
    assert (checked == (full | (edges["rank"] <= 8))).all()
    assert summary["verify"]["edges_checked"] == int(checked.sum()) and summary["verify"]["full_edges"] == int(full.sum())
    assert 0 <= summary["verify"]["precision_at_k"] <= 1 and -1 <= summary["verify"]["spearman_full"] <= 1
    circuit = json.loads((files / "circuit.json").read_text())
    assert [e["rank"] for e in circuit["edges"]] == list(range(1, 7))
    assert circuit["graph"]["edges"] == len(edges)
    assert circuit["faithfulness"] == summary["faithfulness"]
    faithfulness = pd.read_csv(files / "faithfulness.csv")
    assert list(faithfulness["edges"]) == ["circuit", "complement"]
    assert faithfulness["mean"].iloc[0] == pytest.approx(summary["faithfulness"]["mean"])
    assert len(pd.read_csv(files / "minimality.csv")) == 6
    assert (files / "circuit.png").exists() and (files / "edge_verify.csv").exists()


@pytest.mark.parametrize("script, argv, fragment", [
    ("path_patch", ["--receivers=[attn:1]"], "is not one of"),
    ("path_patch", ["--receivers=[q:9.0]"], "no layer 9"),
    ("path_patch", ["--counterfactual=distractor_value"], "keeps the answer"),
    ("circuit", ["--verify_receivers=[logits]"], "set --verify=full"),
    ("circuit", ["--verify=full", "--verify_receivers=[k:1.7]"], "no head 7"),
])
def test_bad_edge_settings_exit_with_one_line(tmp_path, script, argv, fragment):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), *TINY, "--wandb_mode=offline",
                          f"--output_dir={tmp_path}", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("error:")
    assert not (tmp_path / "wandb").exists()  # refused before any run was made
