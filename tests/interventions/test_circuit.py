"""Circuits: the full graph is the clean run (faithfulness 1), the empty graph the counterfactual
run (0); the two ways of running a circuit agree; a planted two-head circuit is recovered by EAP and
by exact path patching, with faithfulness 1, complement 0 and every edge necessary."""

import random

import numpy as np
import pytest

from bindexp.interventions.engine.graph_forward import GraphParts, PrefixState
from bindexp.interventions.engine.graph_runs import pair_runs
from bindexp.interventions.engine.plan import plan_grid
from bindexp.interventions.methods.circuit import choose_edges, circuit_faithfulness, circuit_lds
from bindexp.interventions.methods.edge_attribution import edge_attribution
from bindexp.interventions.methods.path_patching import exact_edges
from bindexp.interventions.results.grid import Grid
from bindexp.tasks import make_programs
from bindexp.tasks.counterfactuals import make_pairs

CHAIN = ["embed->0.kv0 v", "0.0->1.kv1 v", "1.2->logits"]


def _plan(lm, n=3, shots=2):
    shot_programs = make_programs("binding", shots, 5, 0, stream="shots", hops=2)
    pairs = make_pairs("root_value", n, 5, 0, hops=2, exclude={s.text for s in shot_programs})
    return plan_grid(lm, pairs, shots=shot_programs)


def test_full_graph_is_the_clean_run_and_empty_graph_the_counterfactual(amplified):
    graph = GraphParts.of(amplified).graph
    every = [graph.edge_name(e) for e in graph.edges]
    plan = _plan(amplified)
    full = circuit_faithfulness(plan, every, minimality=False)
    empty = circuit_faithfulness(plan, [], minimality=False)
    np.testing.assert_allclose(full.per_pair["faithfulness"], 1.0, atol=1e-4)
    np.testing.assert_allclose(empty.per_pair["faithfulness"], 0.0, atol=1e-4)
    np.testing.assert_allclose(full.per_pair["complement"], 0.0, atol=1e-4)  # its complement: no edge
    np.testing.assert_allclose(empty.per_pair["complement"], 1.0, atol=1e-4)
    assert full.interval("faithfulness")["n"] == 3


def test_both_ways_of_running_a_circuit_agree(amplified_llama):
    """base = counterfactual residual + kept edges' differences vs this run's residual minus the
    dropped edges' differences, on random circuits (the second form runs each as a complement)."""
    parts = GraphParts.of(amplified_llama)
    graph = parts.graph
    plan = _plan(amplified_llama, n=1)
    prefix = PrefixState.of(plan.prefix, graph.n_layers)
    runs = pair_runs(parts, plan.tokenized[0], prefix)
    rng = random.Random(0)
    edges = list(graph.edges)
    circuits = [rng.sample(edges, k) for k in (5, 60, 200)]
    complements = [[e for e in edges if e not in set(c)] for c in circuits]
    kept = circuit_lds(parts, runs, circuits, prefix=prefix)
    dropped = circuit_lds(parts, runs, complements, complement=True, prefix=prefix)
    np.testing.assert_allclose(kept, dropped, atol=2e-5)
    assert np.ptp(kept) > 2e-3  # the circuits differ (100 times the tolerance)


def test_a_planted_two_head_circuit_is_recovered(planted):
    plan = plan_grid(planted, make_pairs("root_value", 4, 5, 0, hops=2))
    graph = GraphParts.of(planted).graph
    estimate = edge_attribution(plan)
    exact = exact_edges(plan, graph.edges)
    for grid in (estimate, exact):
        top = choose_edges(grid, top_n=3)
        assert set(top[:2]) <= set(CHAIN) and set(top) == set(CHAIN), top
        assert {"0.0->1.kv1 v", "1.2->logits"} <= set(choose_edges(grid, top_n=3))
        others = np.delete(grid.mean["normalized_effect"], [grid.labels["edge"].index(e) for e in CHAIN])
        assert np.abs(others).max() < 0.01
    result = circuit_faithfulness(plan, CHAIN)
    assert result.interval("faithfulness")["mean"] == pytest.approx(1.0, abs=0.01)
    assert result.interval("complement")["mean"] == pytest.approx(0.0, abs=0.01)
    for row in result.minimality():  # each edge of a chain is necessary
        assert row["mean"] == pytest.approx(1.0, abs=0.01)
    padded = circuit_faithfulness(plan, CHAIN + ["embed->1.kv1 v"])
    assert padded.minimality()[-1]["mean"] == pytest.approx(0.0, abs=0.01)  # an edge that carries nothing


def test_choose_edges_by_threshold_or_count():
    grid = Grid(("edge",), {"edge": ["a", "b", "c", "d"]}, {"normalized_effect": np.array([0.1, -0.5, np.nan, 0.3])},
                {}, {}, np.ones(4, dtype=int))
    assert choose_edges(grid, top_n=2) == ["b", "d"]
    assert choose_edges(grid, threshold=0.2) == ["b", "d"]
    assert choose_edges(grid, threshold=0.05) == ["b", "d", "a"]
