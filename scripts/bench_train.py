"""Tokens per second of bindexp's training step vs a bare torch loop, same model and batches.

    python scripts/bench_train.py --preset=cpu --steps=50          # goal: ratio >= 0.5
    python scripts/bench_train.py --n_layers=1 --d_model=32 --n_heads=2 --steps=3 --warmup=1   # smoke

Both loops start from the same initial weights and run the same pre-tokenized batches (drawn by
bindexp's data stream before timing); bindexp's loop is `bindexp.training.step.train_step`
(answer-token loss, AdamW + schedule, gradient clipping, autocast on CUDA) and the bare loop is
the textbook forward / cross-entropy / backward / AdamW step. Program generation is timed
separately (programs/s), since the runner draws each batch on the fly. Measure on an idle machine.
"""

from __future__ import annotations

import time

from pydantic import Field

from bindexp.jobs.train import TrainSettings
from bindexp.runs.cli import run_cli


class BenchTrainSettings(TrainSettings):
    warmup: int = Field(5, ge=0, description="untimed steps before each timed loop")
    repeats: int = Field(1, ge=1, description="timed passes per loop; the best is kept")


def _bare_step(model, input_ids, labels, optimizer):
    import torch

    logits = model(input_ids=input_ids).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _timed(run_steps, n_steps: int, device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    run_steps(n_steps)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def bench(settings: BenchTrainSettings) -> dict[str, float]:
    import torch

    from bindexp.jobs.train import arch_spec, data_spec, optim_spec
    from bindexp.models.loading import resolve_device, resolve_dtype
    from bindexp.training.architecture import new_model, program_tokenizer
    from bindexp.training.data import ProgramData
    from bindexp.training.step import make_batch, make_optimizer, train_step

    device = resolve_device(settings.device)
    amp_dtype = resolve_dtype(settings.dtype, device)
    data = ProgramData(data_spec(settings))
    tokenizer = program_tokenizer()
    n_batches = settings.warmup + settings.steps
    start = time.perf_counter()
    examples = [data.train_examples(step, settings.batch_size) for step in range(n_batches)]
    programs_per_s = n_batches * settings.batch_size / (time.perf_counter() - start)
    batches = [make_batch(tokenizer, e, settings.loss_on, device) for e in examples]
    arch, optim = arch_spec(settings), optim_spec(settings, steps=n_batches)

    def bindexp_loop():
        model = new_model(arch, tokenizer, settings.seed).to(device)
        optimizer, scheduler = make_optimizer(model, optim)
        return lambda ids: [train_step(model, batches[i], optimizer, scheduler, optim, amp_dtype) for i in ids]

    def bare_loop():
        model = new_model(arch, tokenizer, settings.seed).to(device)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr)
        autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype != torch.float32)

        def run(ids):
            for i in ids:
                with autocast:
                    _bare_step(model, batches[i].input_ids, batches[i].labels, optimizer)
        return run

    seconds = {}
    for name, make in (("bare", bare_loop), ("bindexp", bindexp_loop)):
        best = float("inf")
        for _ in range(settings.repeats):
            run = make()
            run(range(settings.warmup))
            timed = range(settings.warmup, n_batches)
            best = min(best, _timed(lambda _: run(timed), settings.steps, device))  # noqa: B023 - called at once
        seconds[name] = best
    tokens = sum(batches[i].n_tokens for i in range(settings.warmup, n_batches))
    result = {"bare_tokens_per_s": tokens / seconds["bare"], "bindexp_tokens_per_s": tokens / seconds["bindexp"],
              "programs_per_s": programs_per_s}
    result["ratio"] = result["bindexp_tokens_per_s"] / result["bare_tokens_per_s"]
    return result


def _run(settings: BenchTrainSettings) -> None:
    result = bench(settings)
    print(f"device={settings.device} model={settings.model} layers={settings.n_layers} d={settings.d_model} "
          f"batch={settings.batch_size} seq_len={settings.seq_len} steps={settings.steps}")
    print(f"bare torch loop:   {result['bare_tokens_per_s']:12.0f} tokens/s")
    print(f"bindexp loop:      {result['bindexp_tokens_per_s']:12.0f} tokens/s  (ratio {result['ratio']:.2f}, goal >= 0.5)")
    print(f"program generation: {result['programs_per_s']:11.0f} programs/s "
          f"(= {result['programs_per_s'] / settings.batch_size:.1f} batches/s, drawn on the fly by the runner)")


def main(argv: list[str] | None = None) -> int:
    return run_cli(BenchTrainSettings, _run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
