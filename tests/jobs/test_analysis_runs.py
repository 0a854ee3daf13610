"""scripts/{attention,lens,subspace,locate,path_patch,circuit}.py end to end on a tiny model (offline
W&B), and the runners' own guarantees: locate's table on a planted case, held-out pairs never train,
the edge-level runs' files and summaries agree."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bindexp.errors import BindexpError
from bindexp.interventions.results.grid import Grid
from bindexp.jobs.lens import LensSettings
from bindexp.jobs.locate import LocateSettings
from bindexp.jobs.patch import PatchSettings
from bindexp.jobs.subspace import SubspaceSettings

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--model=tiny-random-llama", "--seq_len=5", "--hops=2", "--shots=1", "--only_correct=False",
        "--systematic_only=False", "--progress=False", "--min_gap=0"]
SMALL = dict(model="tiny-random-llama", seq_len=5, hops=2, shots=1, only_correct=False, systematic_only=False,
             progress=False, wandb_mode="disabled", min_gap=0)


def _main(name, argv):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def _files(printed):
    (line,) = [x for x in printed.splitlines() if "wandb sync" in x]
    return Path(line.split("wandb sync ")[1].strip()) / "files"


def _inspect(files):
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb_cli), "leet", "inspect", "--summary", "--json", str(files.parent)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def test_attention_script(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _main("attention", TINY + ["--num_programs=3", "--wandb_mode=offline", "--top_k=2"]) == 0
    files = _files(capsys.readouterr().out)
    summary = json.loads((files / "summary.json").read_text())
    assert summary["attn_implementation_loaded"] == "sdpa" and summary["switched_to_eager"] is True
    assert json.loads((files / "config.json").read_text())["job_type"] == "attention"
    grid = Grid.load(files / "grids" / "final")
    assert grid.axes == ("layer", "role", "head") and grid.n.max() == 3
    routing = pd.read_csv(files / "routing_heads.csv")
    assert set(routing["destination"]) == {"final", "query_var"}
    assert set(routing["source"]) == {"chain1_lhs", "root_value", "chain1_end", "chain2_lhs", "chain2_rhs", "chain2_end"}
    top = routing[(routing["destination"] == "final") & (routing["source"] == "root_value") & (routing["rank"] == 1)]
    column = grid.labels["role"].index("root_value")
    assert float(top["attention"].iloc[0]) == pytest.approx(float(np.nanmax(grid.mean["attention"][:, column, :])))
    assert routing["head_patch_effect"].notna().all()  # every routing head was patched
    assert (routing["knockout_n"] == 3).all()  # ... and its edge knocked out on every program
    for metric in ("knockout_ld_drop", "knockout_logit_drop"):  # the LD drop, and the raw logit kept beside it
        assert (routing[f"{metric}_ci_low"] <= routing[metric]).all() and (routing[metric] <= routing[f"{metric}_ci_high"]).all()
    assert ((routing["knockout_accuracy_ci_low"] >= 0) & (routing["knockout_accuracy_ci_high"] <= 1)).all()
    for key in ("knockout_ld_drop", "knockout_logit_drop", "knockout_accuracy"):
        assert summary["routing"]["final"]["root_value"][key] == pytest.approx(float(top[key].iloc[0]))
    assert (files / "attention_final.png").exists() and (files / "attention_query_var.png").exists()
    logged = _inspect(files)["summary"]["routing"]["final"]["root_value"]["head"]
    assert logged == summary["routing"]["final"]["root_value"]["head"]


def test_lens_script_and_the_last_layer_is_the_models_own_output(tmp_path, monkeypatch, capsys, tiny_llama):
    monkeypatch.chdir(tmp_path)
    assert _main("lens", TINY + ["--num_programs=3", "--wandb_mode=offline"]) == 0
    printed = capsys.readouterr().out
    files = _files(printed)
    assert "answer readable" in printed
    grid = Grid.load(files / "grids" / "lens")
    assert grid.labels["layer"] == list(range(tiny_llama.n_layers + 1))
    summary = json.loads((files / "summary.json").read_text())
    assert {"readable_layer", "readable_layer_low", "readable_layer_point", "undetermined_layers",
            "final_p_answer"} <= set(summary)
    # after the last layer the lens is the model's logits: p(answer) by a plain forward
    from bindexp.models.cache import ModelCache
    from bindexp.runs.analysis import pairs_and_plan, prepare

    settings = LensSettings(**{**SMALL, "num_programs": 3})
    cache = ModelCache()
    lm, shots = prepare(settings, cache)
    _, _, plan = pairs_and_plan(lm, settings, shots)
    probabilities = []
    for item in plan.tokenized:
        with torch.no_grad():
            logits = lm.model(input_ids=torch.tensor([item.ids])).logits[0, -1].float()
        probabilities.append(float(torch.softmax(logits, -1)[item.answer.original]))
    assert summary["final_p_answer"] == pytest.approx(np.mean(probabilities), abs=1e-5)
    assert (files / "lens_final.png").exists() and not grid.to_frame().empty


def test_readable_layer_on_planted_shares():
    from bindexp.jobs.lens import first_layer_above, readable_layer

    assert first_layer_above([0.1, 0.6, 0.4, 0.8, 0.9], [0, 1, 2, 3, 4], 0.5) == 3  # a blip at 1 does not count
    assert first_layer_above([0.1, 0.2], [0, 1], 0.5) is None
    shares = np.array([[0.0], [0.3], [0.7], [1.0]])
    counts = np.full((4, 1), 10)
    grid = Grid(("layer", "role"), {"layer": [0, 1, 2, 3], "role": ["final"]}, {"top1_answer": shares},
                {"top1_answer": shares}, {"top1_answer": shares}, counts, {"top1_answer": counts})
    readable = readable_layer(grid, 0.5)
    assert readable["readable_layer_point"] == 2  # 0.7 > 0.5 from layer 2 on
    # by the interval rule: 7/10's Wilson lower bound (0.40) is below 0.5, 10/10's (0.72) above: readable from 3;
    # 3/10's upper bound (0.60) reaches 0.5 (earliest plausible: layer 1); layers 1 and 2 are undetermined
    assert readable["readable_layer"] == 3 and readable["readable_layer_low"] == 1
    assert readable["undetermined_layers"] == [1, 2]


def test_subspace_script_keeps_heldout_pairs_out_of_training(tmp_path, monkeypatch, capsys, tiny_llama):
    monkeypatch.chdir(tmp_path)
    argv = TINY + ["--n_train=6", "--n_heldout=3", "--ks=[1, 4]", "--steps=3", "--wandb_mode=offline"]
    assert _main("subspace", argv) == 0
    files = _files(capsys.readouterr().out)
    texts = [{(r["original"], r["counterfactual"]) for r in map(json.loads, (files / name).read_text().splitlines())}
             for name in ("train_pairs.jsonl", "heldout_pairs.jsonl")]
    programs = [{text for pair in side for text in pair} for side in texts]
    assert len(texts[1]) == 3 and texts[0] and not programs[0] & programs[1]
    summary = json.loads((files / "summary.json").read_text())
    assert set(summary["das"]) == {"k1", "k4"} and summary["n_heldout"] == 3
    frame = pd.read_csv(files / "subspace.csv")
    learned = ["das", "das", "pca_probe_value", "boundless_das"]
    assert list(frame["method"])[:4] == learned
    # the controls at every k of the learned subspaces (the ks, the probe's, boundless DAS's)
    ks = sorted({1, 4, *frame.loc[frame["method"].isin(learned[2:]), "k"]})
    assert sorted(frame.loc[frame["method"] == "diff_pca", "k"]) == ks
    assert (frame[frame["method"] == "random"].groupby("k").size() == 5).all()  # --random_seeds default
    assert frame.iloc[-1]["method"] == "whole_residual" and frame.iloc[-1]["k"] == tiny_llama.model.config.hidden_size
    assert (frame["n_heldout"] == 3).all() and (frame["iia_ci_low"] <= frame["iia"]).all()
    assert frame["variance_share"].between(0, 1 + 1e-9).all() and frame["difference_share"].between(0, 1 + 1e-9).all()
    assert set(summary["random"]) == {f"k{k}" for k in ks} and summary["boundless_das"]["size"] >= 1
    assert {"variance_share", "difference_share"} <= set(summary["probe"]) | set(summary["das"]["k4"])
    assert summary["at_edited_token"] in (True, False) and (files / "subspace_iia.png").exists()
    logged = _inspect(files)["summary"]  # the W&B summary holds the controls too
    assert logged["random"]["k1"]["iia_mean"] == pytest.approx(summary["random"]["k1"]["iia_mean"])
    from safetensors import safe_open

    width = tiny_llama.model.config.hidden_size
    with safe_open(str(files / "das_rotations.safetensors"), "pt") as handle:
        assert sorted(handle.keys()) == ["k1", "k4"] and handle.get_tensor("k4").shape == (width, width)
    assert (files / "das_loss.png").exists() and (files / "probe_basis.safetensors").exists()


def test_subspace_run_refuses_overlapping_splits(tmp_path, monkeypatch):
    import bindexp.jobs.subspace as runner

    def overlapping(pairs, n_heldout, seed):
        return list(pairs), list(pairs[:n_heldout])

    monkeypatch.setattr(runner, "split_pairs", overlapping)
    settings = SubspaceSettings(**SMALL, output_dir=str(tmp_path), n_train=3, n_heldout=2, ks=[1], steps=1)
    with pytest.raises(BindexpError, match="in both the training and the held-out"):
        runner.run_subspace(settings)


def test_locate_table_and_the_planted_input_cell(tmp_path, monkeypatch, capsys):
    from bindexp.jobs.locate import run_locate
    from bindexp.jobs.patch import run_patch

    settings = LocateSettings(**SMALL, output_dir=str(tmp_path), num_programs=4)
    outcome = run_locate(settings)
    assert list(outcome.table["variable"]) == ["value", "query", "pointer2"]
    assert list(outcome.table["counterfactual"]) == ["root_value", "query_chain", "chain_link"]
    assert {"best_layer", "best_role", "iia", "iia_ci_low", "iia_ci_high", "where"} <= set(outcome.table.columns)
    assert len(outcome.cells) == 3 * 4 * len(outcome.grids["value"].labels["role"])
    # the planted case: at layer 0 on the root constant's token, interchanging the value is the
    # counterfactual's input there, so IIA equals the exact patch run's, and the share of pairs
    # whose counterfactual prompt the model answers with the counterfactual's answer
    patch = run_patch(PatchSettings(**SMALL, output_dir=str(tmp_path), num_programs=4, counterfactual="root_value"))
    root = patch.grid.labels["role"].index("root_value")
    cell = outcome.cells[(outcome.cells["variable"] == "value") & (outcome.cells["layer"] == 0)
                         & (outcome.cells["role"] == "root_value")].iloc[0]
    assert cell["iia"] == pytest.approx(float(patch.grid.mean["iia"][0, root]))
    from bindexp.interventions.engine.plan import pair_prompts
    from bindexp.models import MODEL_CACHE, score_candidates
    from bindexp.runs.pairs import patch_shots
    from bindexp.vocab import DIGITS

    lm = MODEL_CACHE.get("tiny-random-llama", **settings.model_kwargs())
    shots = patch_shots(settings)
    prompts = [pair_prompts(pair, shots, "raw")[1] for pair in patch.pairs]
    scores = score_candidates(lm, prompts, [p.counterfactual.answer for p in patch.pairs], DIGITS)
    assert cell["iia"] == pytest.approx(np.mean([s.correct for s in scores]))
    assert cell["n"] == 4 and cell["iia_ci_low"] <= cell["iia"] <= cell["iia_ci_high"]
    summary = json.loads((outcome.out_dir / "summary.json").read_text())
    assert set(summary["variables"]) == {"value", "query", "pointer2"}
    declared = json.loads((outcome.out_dir / "causal_model.json").read_text())
    assert declared["interventions"]["chain_link"] == "pointer"
    assert (outcome.out_dir / "locate.csv").exists() and (outcome.out_dir / "locate_iia.png").exists()


@pytest.mark.parametrize("script, argv, fragment", [
    ("locate", ["--site=head"], "exact role grids"),
    ("locate", ["--site=v"], "exact role grids"),
    ("locate", ["--counterfactuals=[distractor_item]"], "distractor_item"),
    ("subspace", ["--num_programs=5"], "n_train + n_heldout"),
    ("subspace", ["--role=nope"], "nope"),
    ("subspace", ["--ks=[1, 99999]"], "residual width"),
    ("attention", ["--routing_sources=[nope]", "--num_programs=2"], "nope"),
    ("lens", ["--readable_threshold=1.5"], "readable_threshold"),
])
def test_bad_analysis_settings_exit_with_one_line(tmp_path, script, argv, fragment):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), *TINY, "--wandb_mode=disabled",
                          f"--output_dir={tmp_path}", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]


def test_one_program_reads_roles_inside_what_would_be_a_shared_prefix(tmp_path):
    """With one pair the prompts share everything up to the edit, chain1_lhs included: the plan's
    prefix must stop before the first role token, or the lens could not read it."""
    from bindexp.jobs.lens import run_lens

    outcome = run_lens(LensSettings(**{**SMALL, "num_programs": 1}, output_dir=str(tmp_path)))
    column = outcome.grid.labels["role"].index("chain1_lhs")
    assert np.isfinite(outcome.grid.mean["p_answer"][:, column]).all()


def test_locate_skips_a_variable_without_usable_pairs_and_says_why(tmp_path, capsys):
    """min_gap=1.0 on the random tiny model leaves no pair for any variable: each is skipped with
    its reason, and with nothing left the run is one error naming them all."""
    from bindexp.errors import ModelError
    from bindexp.jobs.locate import run_locate

    settings = LocateSettings(**{**SMALL, "min_gap": 1.0}, output_dir=str(tmp_path), num_programs=4)
    with pytest.raises(ModelError, match="no variable could be located: .*value.*min_gap"):
        run_locate(settings)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert {line.split()[1] for line in warnings} >= {"value", "query"}


def test_path_patch_script(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = TINY + ["--num_programs=3", "--wandb_mode=offline", "--receivers=[q:2.1, v:3.0+3.2, logits]", "--top_k=3"]
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
    argv = TINY + ["--num_programs=3", "--model=tiny-random-conv", "--wandb_mode=offline", "--ig_steps=2", "--top_n=6",
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
    assert "exact_circuit" not in summary  # only some edges were checked
    assert (files / "circuit.png").exists() and (files / "edge_verify.csv").exists()


@pytest.mark.parametrize("script, argv, fragment", [
    ("path_patch", ["--receivers=[attn:1]"], "is not one of"),
    ("path_patch", ["--receivers=[q:9.0]"], "no layer 9"),
    ("path_patch", ["--counterfactual=distractor_value"], "keeps the answer"),
    ("circuit", ["--verify_receivers=[logits]"], "set --verify=full"),
    ("circuit", ["--verify=full", "--verify_receivers=[k:1.7]"], "no head 7"),
])
def test_bad_edge_settings_exit_with_one_line(tmp_path, script, argv, fragment):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / f"{script}.py"), *TINY, "--num_programs=3",
                          "--wandb_mode=offline",
                          f"--output_dir={tmp_path}", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and lines[0].startswith("error:")
    assert not (tmp_path / "wandb").exists()  # refused before any run was made


def test_circuit_with_every_edge_checked_compares_the_exact_circuit(tmp_path):
    from bindexp.jobs.circuit import CircuitSettings, run_circuit

    settings = CircuitSettings(**{**SMALL, "model": "tiny-random-conv", "num_programs": 2}, top_n=4, verify="full",
                               verify_top_k=0, minimality=False, output_dir=str(tmp_path), sizes=[1, 4])
    outcome = run_circuit(settings)
    by_size = outcome.summary["faithfulness_by_size"]
    assert by_size["4"]["faithfulness"] == outcome.summary["faithfulness"]  # the same 4 edges
    assert set(by_size) == {"1", "4"} and by_size["1"]["faithfulness"]["n"] == 2
    exact = outcome.summary["exact_circuit"]
    assert exact["edges"] == 4 and 0 <= exact["shared_with_circuit"] <= 4
    assert outcome.edges["exact"].notna().all() and outcome.summary["verify"]["full_edges"] == len(outcome.edges)
    chosen = set(outcome.edges.sort_values("exact", key=abs, ascending=False)["edge"].head(4))
    assert exact["shared_with_circuit"] == len(chosen & set(outcome.edges.loc[outcome.edges["in_circuit"], "edge"]))


def test_locate_where_lists_only_cells_the_interval_rule_says_carry():
    """n = 10: 5/10 (and 6/10) decide nothing at 0.5; 10/10 and 9/10 carry; 0/10 does not."""
    import pandas as pd

    from bindexp.jobs.locate import locate_table
    from bindexp.stats import decide, wilson_interval

    rows = []
    for layer, hits in enumerate([10, 9, 6, 5, 0]):
        low, high = wilson_interval(hits, 10)
        rows.append({"variable": "value", "counterfactual": "root_value", "layer": layer, "role": "root_value", "n": 10,
                     "iia": hits / 10, "iia_ci_low": low, "iia_ci_high": high, "decision": decide(hits, 10, 0.5)})
    table = locate_table(pd.DataFrame(rows), 0.5, {"value": "root_value"})
    row = table.iloc[0]
    assert row["where"] == "root_value@0-1" and row["cells_carrying"] == 2  # a point estimate >= 0.5 would say 0-3
    assert row["cells_undetermined"] == 2 and row["where_undetermined"] == "root_value@2-3"


def test_a_saved_subspace_applied_by_a_second_run_gives_the_same_iia(tmp_path):
    """Run 1 trains DAS and saves its subspaces; run 2 (same settings, so the same held-out pairs)
    applies them with subspace_from and must score exactly what run 1 scored, and declare the file
    as its input. A file of another width is refused before any W&B run exists."""
    from bindexp.io.subspaces import read_subspaces, write_subspaces
    from bindexp.jobs.subspace import run_subspace

    base = dict(SMALL, n_train=8, n_heldout=6, ks=[1, 4], steps=4, boundless=False, probe="none", random_seeds=2)
    first = run_subspace(SubspaceSettings(**base, output_dir=str(tmp_path / "one")))
    saved = read_subspaces(first.out_dir)
    assert set(saved.bases) >= {"das_k1", "das_k4", "diff_pca_k1"} and saved.width == 64
    torch.testing.assert_close(saved.bases["das_k4"], first.das.rotations[4][:4])
    second = run_subspace(SubspaceSettings(**base, output_dir=str(tmp_path / "two"), subspace_from=str(first.out_dir)))
    assert second.das is None and second.layer == first.layer
    for k in (1, 4):
        trained = first.frame[(first.frame["method"] == "das") & (first.frame["k"] == k)].iloc[0]
        applied = second.frame[(second.frame["method"] == "das") & (second.frame["k"] == k)].iloc[0]
        assert applied["successes"] == trained["successes"] and applied["n_heldout"] == trained["n_heldout"] == 6
        assert applied["difference_share"] == pytest.approx(trained["difference_share"])
    assert second.summary["das"]["k4"]["iia"] == first.summary["das"]["k4"]["iia"]
    config = json.loads((second.out_dir / "config.json").read_text())
    assert config["extra"]["inputs"]["subspace"]["path"] == str(first.out_dir.resolve())
    assert second.summary["subspace_from"]["saved_layer"] == first.layer
    narrow = write_subspaces(tmp_path / "narrow.safetensors", {"das_k1": ("das", torch.eye(32)[:1])}, width=32,
                             layer=0, role="root_value")
    with pytest.raises(BindexpError, match="32-wide"):
        run_subspace(SubspaceSettings(**base, output_dir=str(tmp_path / "three"), subspace_from=str(narrow)))
    assert not (tmp_path / "three").exists()
    with pytest.raises(BindexpError, match="no such file"):
        run_subspace(SubspaceSettings(**base, output_dir=str(tmp_path / "four"), subspace_from="nowhere/at-all"))
