"""Comparison: a local sweep of tiny models, then scripts/compare.py on its offline runs; the API source;
rate-limit backoff; averaged patch grids."""

import importlib.util
import json
import math
import os
import statistics
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
from wandb.apis.public import Runs
from wandb.errors import CommError
from wandb.proto import wandb_api_pb2
from wandb.sdk.lib.service.service_connection import WandbApiFailedError

from bindexp.io.grids import write_grid
from bindexp.results.records import RunFilter, RunRecord, api_records, is_rate_limited, with_backoff
from bindexp.results.tables import aggregate, tidy_table

ROOT = Path(__file__).resolve().parents[2]


def _script(name):
    spec = importlib.util.spec_from_file_location(f"{name}_script", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


T975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776}  # t(0.975, n - 1) from a printed table, by number of runs


def _mean_ci(values):
    """Mean and 95% Student-t interval over runs, clipped to [0, 1]; nan bounds for one run."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = T975[len(values)] * statistics.stdev(values) / math.sqrt(len(values))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def _close(a, b, tol=1e-9):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=tol)


TINY_SWEEP = """
    name: tiny-e2e
    program: scripts/eval.py
    method: grid
    command: [".venv/bin/python", "${program}", "${args}"]
    parameters:
      model: {value: tiny-random-llama}
      seed: {values: [0, 1]}
      hops: {value: [1, 2]}
      seq_len: {value: [4, 5]}
      num_programs: {value: 5}
      progress: {value: false}
"""


def test_local_sweep_then_compare_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # sweep commands are relative to the repository root, as for `wandb agent`
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(textwrap.dedent(TINY_SWEEP))
    out = tmp_path / "sweeps"
    run = _script("sweep_local").main
    # The first invocation stops after one run, the second skips it and runs the other.
    assert run([str(sweep), f"--output_dir={out}", "--max_runs=1"]) == 0
    state = json.loads((out / "tiny-e2e" / "state.json").read_text())
    assert [v["status"] for v in state.values()] == ["finished"]
    assert run([str(sweep), f"--output_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("skipped (finished before)") == 1 and "1 finished, 1 skipped" in printed
    state = json.loads((out / "tiny-e2e" / "state.json").read_text())
    assert len(state) == 2 and all(v["status"] == "finished" for v in state.values())
    run_dirs = [Path(v["run_dir"]) for v in state.values()]
    assert all(d.parent == Path(os.environ["WANDB_DIR"]) / "wandb" for d in run_dirs)

    cmp_dir = tmp_path / "cmp"
    assert _script("compare").main(["--group=tiny-e2e", f"--runs_dir={run_dirs[0].parent}", f"--out={cmp_dir}"]) == 0
    assert "| tiny-random-llama | 1 | 4 | 2 |" in capsys.readouterr().out
    tidy = pd.read_csv(cmp_dir / "tidy.csv")
    table = pd.read_csv(cmp_dir / "aggregate.csv")

    # Expectations from each run's own files, computed here without the package.
    per_cell: dict[tuple, list[float]] = {}
    for run_dir in run_dirs:
        rows = [json.loads(line) for line in (run_dir / "files" / "results.jsonl").read_text().splitlines()]
        summary = json.loads((run_dir / "files" / "summary.json").read_text())
        model = rows[0]["model"]
        mine = tidy[tidy["run_id"] == run_dir.name.rsplit("-", 1)[1]]
        assert len(mine) == 4 and set(mine["group"]) == {"tiny-e2e"} and set(mine["model"]) == {model}
        for hops in (1, 2):
            for seq_len in (4, 5):
                cell = [r["correct"] for r in rows if r["hops"] == hops and r["seq_len"] == seq_len]
                per_cell.setdefault((model, hops, seq_len), []).append(sum(cell) / len(cell))
                row = mine[(mine["hops"] == hops) & (mine["seq_len"] == seq_len)].iloc[0]
                assert row["n"] == len(cell) == 5 and row["correct"] == sum(cell)
            # the run's own summary: accuracy by hops over both lengths
            both = mine[mine["hops"] == hops]
            assert both["correct"].sum() / both["n"].sum() == pytest.approx(summary["by_hops"][str(hops)]["accuracy"])
        assert mine["correct"].sum() / mine["n"].sum() == pytest.approx(summary["accuracy"])
    assert len(table) == len(per_cell) == 4
    for row in table.to_dict("records"):
        accuracies = per_cell[(row["model"], row["hops"], row["seq_len"])]
        mean, low, high = _mean_ci(accuracies)
        assert row["runs"] == len(accuracies) and row["n"] == 5 * len(accuracies)
        assert _close(row["accuracy"], mean) and _close(row["ci_low"], low, 1e-3) and _close(row["ci_high"], high, 1e-3)

    # by model x hops, the mean over runs of each run's summary accuracy for that hops
    by_hops = aggregate(tidy, ["model", "hops"])
    for row in by_hops.to_dict("records"):
        expected = []
        for run_dir in run_dirs:
            summary = json.loads((run_dir / "files" / "summary.json").read_text())
            first = json.loads((run_dir / "files" / "results.jsonl").read_text().splitlines()[0])
            if first["model"] == row["model"]:
                expected.append(summary["by_hops"][str(row["hops"])]["accuracy"])
        assert row["accuracy"] == pytest.approx(statistics.fmean(expected))
    markdown = (cmp_dir / "aggregate.md").read_text()
    assert markdown.count("\n| tiny-random-llama |") == 4
    for name in ("accuracy_by_model.png", "accuracy_by_hops.png"):
        assert (cmp_dir / name).stat().st_size > 1000


# ---------------------------------------------------------------- the W&B API source


def test_server_filters_and_local_matching_select_the_same_runs():
    where = RunFilter(sweep="abc123", group="g1", tags=("eval", "smoke"), job_type="eval")
    assert where.server_filters() == {"sweep": "abc123", "group": "g1", "tags": {"$in": ["eval", "smoke"]},
                                      "jobType": "eval"}
    assert RunFilter().server_filters() == {}

    def record(**kw):
        base = dict(run_id="r", name=None, source="local", job_type="eval", group="g1", tags=["smoke"],
                    sweep="abc123", state="finished", exit_code=0, config={}, summary={}, files_dir=None)
        return RunRecord(**{**base, **kw})

    assert where.matches(record())
    for change in ({"sweep": "zzz"}, {"group": "g2"}, {"tags": ["other"]}, {"tags": []}, {"job_type": "patch"}):
        assert not where.matches(record(**change)), change
    assert RunFilter(tags=("a",)).matches(record(tags=["b", "a"]))


def _http_error(status, retry_after=None):
    response = requests.Response()
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return requests.HTTPError(f"{status} error", response=response)


def _core_error(status):
    return WandbApiFailedError("request failed", response=wandb_api_pb2.ApiErrorResponse(http_status=status))


def test_rate_limit_errors_are_recognised_in_every_form_wandb_raises():
    assert is_rate_limited(_http_error(429)) and not is_rate_limited(_http_error(500))
    assert is_rate_limited(_core_error(429)) and not is_rate_limited(_core_error(404))
    wrapped = CommError("request failed", _core_error(429))  # what wandb's normalize_exceptions raises
    assert is_rate_limited(wrapped)
    try:
        try:
            raise _http_error(429)
        except requests.HTTPError as err:
            raise RuntimeError("listing runs failed") from err
    except RuntimeError as chained:
        assert is_rate_limited(chained)
    assert not is_rate_limited(ValueError("bad filter"))


def test_backoff_retries_429_with_growing_delays_then_succeeds():
    failures = [_http_error(429), _core_error(429), CommError("x", _core_error(429))]
    slept = []

    def flaky():
        if failures:
            raise failures.pop(0)
        return "page"

    assert with_backoff(flaky, base_delay=0.5, sleep=slept.append) == "page"
    assert slept == [0.5, 1.0, 2.0]
    slept.clear()
    failures[:] = [_http_error(429, retry_after="7")]
    assert with_backoff(flaky, sleep=slept.append) == "page" and slept == [7.0]  # the server's Retry-After
    with pytest.raises(requests.HTTPError):  # other errors are not retried
        with_backoff(lambda: (_ for _ in ()).throw(_http_error(500)), sleep=slept.append)

    def always():
        raise _http_error(429)

    slept.clear()
    with pytest.raises(requests.HTTPError):
        with_backoff(always, retries=3, base_delay=1, max_delay=3, sleep=slept.append)
    assert slept == [1, 2, 3]


class RecordedGraphQL:
    """wandb's GraphQL transport (wandb-core, which needs a server) replaced by recorded answers to the
    Runs query; the second request is answered with HTTP 429. wandb's own Runs paginator and Run objects
    do the rest."""

    def __init__(self, pages):
        self.pages, self.requests = pages, []

    def execute_graphql(self, query, variables=None, *args, **kwargs):
        self.requests.append(dict(variables))
        if len(self.requests) == 2:
            raise _core_error(429)
        cursor = variables.get("cursor")
        return self.pages[0 if cursor is None else int(cursor)]


class RecordedApi:
    """`wandb.Api().runs` over the recorded transport (wandb.Api() itself needs a server and a key)."""

    def __init__(self, transport):
        self.transport = transport

    def runs(self, path, filters=None, order="+created_at", per_page=50, include_sweeps=False, lazy=True):
        entity, project = path.split("/")
        return Runs(self.transport, entity, project, filters=filters, order=order, per_page=per_page, lazy=lazy)


def _node(i, model, hops_acc, n):
    config = {"model": model, "task": "binding", "seed": i, "shots": 0, "hops": [1, 2], "seq_len": [6],
              "template": "raw", "systematic_only": False}
    summary = {"accuracy": sum(hops_acc) / 2, "n_programs": 2 * n,
               "by_hops": {str(h): {"accuracy": a, "n": n} for h, a in zip((1, 2), hops_acc)}}
    return {"id": f"gql{i}", "name": f"run{i}", "displayName": f"fox-{i}", "sweepName": "abc123", "state": "finished",
            "config": json.dumps({**{k: {"value": v, "desc": None} for k, v in config.items()}, "_wandb": {"value": {}}}),
            "summaryMetrics": json.dumps(summary), "group": None, "jobType": "eval", "tags": ["sweep"],
            "projectId": "1", "user": {"name": "me", "username": "me"}}


def test_api_source_pages_filters_and_retries_then_tabulates_like_local_runs(tmp_path, capsys):
    accuracies = {0: (0.5, 0.2), 1: (0.7, 0.4), 2: (0.75, 0.125)}
    models, sizes = {0: "m", 1: "m", 2: "other"}, {0: 10, 1: 20, 2: 8}  # unequal n: mean of runs != pooled
    nodes = [_node(i, models[i], acc, sizes[i]) for i, acc in accuracies.items()]

    def page(edges, cursor, more):
        return {"project": {"internalId": "p", "runCount": 3, "readOnly": False,
                            "runs": {"edges": edges, "pageInfo": {"endCursor": cursor, "hasNextPage": more}}}}

    transport = RecordedGraphQL([page([{"node": nodes[0], "cursor": "1"}, {"node": nodes[1], "cursor": "1"}], "1", True),
                                 page([{"node": nodes[2], "cursor": "2"}], "2", False)])
    where = RunFilter(sweep="abc123", job_type="eval")
    records = api_records("me/bindexp", where, per_page=2, api=RecordedApi(transport), cache_dir=tmp_path,
                          retry={"base_delay": 0.01})
    assert [r.run_id for r in records] == ["run0", "run1", "run2"]  # each once, none lost to the 429
    assert [r["cursor"] for r in transport.requests] == [None, "1", "1"]
    assert all(json.loads(r["filters"]) == where.server_filters() and r["perPage"] == 2 for r in transport.requests)
    assert "rate-limited" in capsys.readouterr().err
    assert records[0].config["model"] == "m" and "_wandb" not in records[0].config
    assert records[0].sweep == "abc123" and records[0].job_type == "eval" and records[0].problem is None

    tidy = tidy_table(records)  # from here on, the same code as for local runs
    assert len(tidy) == 6 and set(tidy["seq_len"]) == {6}
    for row in tidy.to_dict("records"):
        seed = int(row["seed"])
        assert row["accuracy"] == pytest.approx(accuracies[seed][row["hops"] - 1]) and row["n"] == sizes[seed]
    table = aggregate(tidy)
    assert len(table) == 4
    for row in table.to_dict("records"):
        seeds = [seed for seed in accuracies if models[seed] == row["model"]]
        runs = [accuracies[seed][row["hops"] - 1] for seed in seeds]
        mean, low, high = _mean_ci(runs)
        assert row["runs"] == len(runs) and _close(row["accuracy"], mean)
        assert _close(row["ci_low"], low) and _close(row["ci_high"], high)  # nan for "other": one run
        correct = sum(accuracies[seed][row["hops"] - 1] * sizes[seed] for seed in seeds)
        assert row["pooled_accuracy"] == pytest.approx(correct / sum(sizes[seed] for seed in seeds))


# ---------------------------------------------------------------- patch grids


def _save_grid(folder, settings, values, roles=("root_value", "final")):
    from bindexp.interventions.results.grid import Grid

    mean = {"normalized_effect": np.asarray(values, dtype=np.float32)}
    nan = {"normalized_effect": np.full_like(mean["normalized_effect"], np.nan)}
    grid = Grid(axes=("layer", "role"), labels={"layer": list(range(len(values))), "role": list(roles)},
                mean=mean, ci_low=nan, ci_high=nan, n=np.full(mean["normalized_effect"].shape, 3))
    write_grid(grid, folder, settings)
    (folder / "summary.json").write_text(json.dumps({"metric": "normalized_effect"}))


def test_grids_of_the_same_model_and_hops_are_averaged_only_when_their_layout_matches(tmp_path, capsys):
    """Grids written by the patch runner's own Grid.save into result folders (W&B disabled)."""
    base = {"model": "m", "hops": 1, "site": "resid_pre", "method": "exact", "counterfactual": "root_value"}
    _save_grid(tmp_path / "a", {**base, "seed": 0}, [[0.0, 1.0], [0.5, np.nan]])
    _save_grid(tmp_path / "b", {**base, "seed": 1}, [[1.0, 0.0], [0.25, 0.75]])
    _save_grid(tmp_path / "c", {**base, "hops": 2}, [[0.3, 0.3], [0.3, 0.3]])
    _save_grid(tmp_path / "d", {**base, "seed": 2}, [[9.0, 9.0], [9.0, 9.0]], roles=("root_value", "query_var"))
    out = tmp_path / "cmp"
    assert _script("compare").main([f"--runs_dir={tmp_path}", f"--out={out}", "--job_type=patch",
                                    "--log_wandb=True", "--wandb_mode=offline", "--run_name=grid-compare"]) == 0
    assert "differ in axes, labels or shape" in capsys.readouterr().err
    cells = pd.read_csv(out / "patch_cells.csv")
    from bindexp.interventions.results.grid import Grid

    folders = sorted(p.parent for p in (out / "patch").glob("*/grid.json"))
    assert len(folders) == 3
    averaged = {tuple(json.loads((f / "grid.json").read_text())["settings"]["runs"]): Grid.load(f) for f in folders}
    ab = averaged[("a", "b")]
    assert np.allclose(ab.mean["normalized_effect"], [[0.5, 0.5], [0.375, 0.75]])  # nan cell: the run that has it
    assert ab.n.tolist() == [[2, 2], [2, 1]]
    assert np.allclose(averaged[("c",)].mean["normalized_effect"], 0.3)
    assert np.allclose(averaged[("d",)].mean["normalized_effect"], 9.0)
    assert set(cells["hops"]) == {1, 2} and (folders[0] / "heatmap.png").exists()
    # logged back as a W&B run of job type compare, with the cell table
    (run_dir,) = (Path(os.environ["WANDB_DIR"]) / "wandb").glob("offline-run-*")
    from bindexp.results.records import read_wandb_folder

    logged = read_wandb_folder(run_dir)
    assert logged.job_type == "compare" and logged.name == "grid-compare" and logged.summary["patch_groups"] == 3
    assert list((run_dir / "files" / "media" / "table").glob("patch_cells_*.table.json"))


PATCH_ARGS = ["--model=tiny-random-llama", "--seq_len=5", "--num_programs=3", "--shots=0", "--only_correct=False",
              "--hops=1", "--wandb_mode=offline", "--progress=False", "--min_gap=0"]


@pytest.mark.skipif(not (ROOT / "scripts" / "patch.py").exists(), reason="scripts/patch.py is not written yet")
def test_patch_runs_average_to_the_mean_of_their_grids(tmp_path, monkeypatch, capsys):
    from safetensors.numpy import load_file

    monkeypatch.chdir(tmp_path)
    patch = _script("patch").main
    run_dirs = []
    for seed in (0, 1):
        assert patch([*PATCH_ARGS, f"--seed={seed}", "--group=patch-avg"]) == 0
        (line,) = [x for x in capsys.readouterr().out.splitlines() if "wandb sync" in x]
        run_dirs.append(Path(line.split("wandb sync ")[1].strip()))
    out = tmp_path / "cmp"
    assert _script("compare").main(["--group=patch-avg", "--job_type=patch", f"--runs_dir={run_dirs[0].parent}",
                                    f"--out={out}"]) == 0
    (folder,) = [p.parent for p in (out / "patch").glob("*/grid.json")]
    averaged = load_file(str(folder / "grid.safetensors"))
    sidecar = json.loads((folder / "grid.json").read_text())
    grids = [load_file(str(d / "files" / "grid.safetensors")) for d in run_dirs]
    first = json.loads((run_dirs[0] / "files" / "grid.json").read_text())
    assert sidecar["axes"] == first["axes"] and sidecar["labels"] == first["labels"]
    assert sidecar["metrics"] == first["metrics"] and len(first["metrics"]) >= 1
    for metric in first["metrics"]:
        expected = np.nanmean(np.stack([g[metric] for g in grids]).astype(np.float64), axis=0)
        assert np.allclose(averaged[metric], expected, equal_nan=True), metric


def test_result_folders_written_with_wandb_disabled_are_compared_too(tmp_path):
    from bindexp.jobs.evaluate import EvalSettings, run_eval
    from bindexp.results.compare import CompareSettings, run_compare

    outputs = tmp_path / "outputs"
    results = []
    for seed in (0, 1):
        results.append(run_eval(EvalSettings(model="tiny-random-llama", hops=[1], seq_len=[4, 6], num_programs=4,
                                             seed=seed, progress=False, wandb_mode="disabled",
                                             output_dir=str(outputs))).results)
    outcome = run_compare(CompareSettings(runs_dir=str(outputs), out=str(tmp_path / "cmp")))
    assert len(outcome.tidy) == 4 and set(outcome.tidy["seed"]) == {0, 1}
    for row in outcome.aggregate.to_dict("records"):
        accuracies = [r[r["seq_len"] == row["seq_len"]]["correct"].mean() for r in results]
        assert row["runs"] == 2 and row["accuracy"] == pytest.approx(statistics.fmean(accuracies))


def test_grids_differing_in_more_than_the_seed_are_not_averaged(tmp_path):
    from bindexp.results.compare import CompareSettings, run_compare

    base = {"model": "m", "hops": 1, "site": "resid_pre", "method": "exact", "counterfactual": "root_value"}
    _save_grid(tmp_path / "a", {**base, "seed": 0, "seq_len": 6}, [[0.0, 1.0], [0.5, 0.5]])
    _save_grid(tmp_path / "b", {**base, "seed": 1, "seq_len": 6}, [[1.0, 0.0], [0.5, 0.5]])
    _save_grid(tmp_path / "c", {**base, "seed": 0, "seq_len": 16}, [[0.2, 0.2], [0.2, 0.2]])
    outcome = run_compare(CompareSettings(runs_dir=str(tmp_path), out=str(tmp_path / "cmp"), job_type="patch"))
    runs = sorted(sorted(a.run_ids) for a in outcome.grids)
    assert runs == [["a", "b"], ["c"]]
    assert len({a.name for a in outcome.grids}) == 2


def test_one_bookkeeping_list_keeps_seeds_of_other_commits_and_sweeps_together(tmp_path):
    """Patch grids and analysis summaries group alike: the seed, the commit, the sweep, the inputs and
    W&B bookkeeping never split runs; a setting that really differs does."""
    from bindexp.results.compare import CompareSettings, run_compare
    from bindexp.results.records import AVERAGED, BOOKKEEPING, RunRecord
    from bindexp.results.tables import summary_scalars

    assert {"provenance", "inputs", "sweep", "causal_model", "hops_label"} <= BOOKKEEPING and "seed" in AVERAGED
    base = {"model": "m", "hops": 1, "site": "resid_pre", "method": "exact", "counterfactual": "root_value"}
    _save_grid(tmp_path / "a", {**base, "seed": 0, "provenance": {"git_commit": "aaa"}, "sweep": "s1"}, [[0.0, 1.0]])
    _save_grid(tmp_path / "b", {**base, "seed": 1, "provenance": {"git_commit": "bbb"}, "sweep": "s2",
                                "inputs": {"model": "x"}}, [[1.0, 0.0]])
    _save_grid(tmp_path / "c", {**base, "seed": 2, "seq_len": 9}, [[0.5, 0.5]])
    outcome = run_compare(CompareSettings(runs_dir=str(tmp_path), out=str(tmp_path / "cmp"), job_type="patch"))
    assert sorted(sorted(a.run_ids) for a in outcome.grids) == [["a", "b"], ["c"]]

    def record(run_id, **config):
        return RunRecord(run_id, None, "files", "lens", None, [], config.get("sweep"), "finished", 0,
                         {"model": "m", **config}, {"final_p_answer": 0.5}, None)

    scalars = summary_scalars([record("a", seed=0, provenance={"git_commit": "aaa"}, sweep="s1"),
                               record("b", seed=1, provenance={"git_commit": "bbb"}, causal_model="x"),
                               record("c", seed=0, readable_threshold=0.7)])
    assert sorted(scalars.groupby("settings")["run_id"].apply(sorted).tolist()) == [["a", "b"], ["c"]]
