"""Which edges carry the answer? Every edge of the graph (embeddings, heads, MLPs -> q/k/v inputs,
MLP inputs, logits) scored by EAP (`--ig_steps=0`) or EAP-IG, the top edges checked by exact path
patching, and the circuit of the top edges with its faithfulness; one W&B run (job_type `circuit`).

    python scripts/circuit.py --model=smollm2-135m --hops=2 --seq_len=6 --shots=3 --num_programs=20 \
        --ig_steps=5 --top_n=30 --verify_top_k=50

Every setting is `--name=value` (see `--help`) or a `BINDEXP_NAME` environment variable.
"""

from __future__ import annotations

from bindexp.jobs.circuit import CircuitSettings, run_circuit
from bindexp.runs.cli import run_cli


def _interval(entry: dict) -> str:
    return f"{entry['mean']:.3f} [{entry['ci_low']:.3f}, {entry['ci_high']:.3f}] (n={entry['n']})"


def _run_and_print(settings: CircuitSettings) -> None:
    outcome = run_circuit(settings)
    summary = outcome.summary
    print(f"\n{summary['method']} on {settings.model}: {summary['edges_total']} edges, {summary['pairs']} pairs")
    print(f"circuit of {summary['circuit_edges']} edges: faithfulness {_interval(summary['faithfulness'])}, "
          f"complement {_interval(summary['complement_faithfulness'])}")
    print("checked exactly: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in summary["verify"].items()))
    columns = ["rank", "edge", "score", "score_ci_low", "score_ci_high", "exact"]
    print(outcome.edges.sort_values("rank").head(15)[columns].to_string(index=False, float_format="%.3f"))


def main(argv: list[str] | None = None) -> int:
    return run_cli(CircuitSettings, _run_and_print, argv)


if __name__ == "__main__":
    raise SystemExit(main())
