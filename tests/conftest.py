import os
import random
import sys

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# BINDEXP_TEST_THREADS=1 leaves the other core of a 2-core machine to another job
torch.set_num_threads(int(os.environ.get("BINDEXP_TEST_THREADS", min(2, os.cpu_count() or 1))))


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _wandb_in_tmp(tmp_path, monkeypatch):
    """Offline W&B into a temp dir; nothing lands in $HOME or the repo."""
    for name in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        path = tmp_path / "wandb-home" / name.lower()
        path.mkdir(parents=True, exist_ok=True)
        monkeypatch.setenv(name, str(path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield
    if "wandb" in sys.modules:  # W&B reads its directories once per process: start afresh
        sys.modules["wandb"].teardown()


@pytest.fixture(scope="session")
def tiny_llama():
    from bindexp.models import load_model

    return load_model("tiny-random-llama", device="cpu")


@pytest.fixture(scope="session")
def tiny_qwen3():
    from bindexp.models import load_model

    return load_model("tiny-random-qwen3", device="cpu")


@pytest.fixture(scope="session")
def tiny_conv():
    from bindexp.models import load_model

    return load_model("tiny-random-conv", device="cpu")


@pytest.fixture(scope="session")
def smollm():
    from bindexp.models import load_model

    return load_model("smollm2-135m", device="cpu")


@pytest.fixture(params=["tiny_llama", "tiny_qwen3", "tiny_conv"])
def tiny_model(request):
    return request.getfixturevalue(request.param)


def _restored(table: dict):
    """Yield once, then put `table` back as it was (what a test registered is gone)."""
    saved = dict(table)
    yield
    table.clear()
    table.update(saved)


@pytest.fixture
def clean_registry():
    """Whatever a test registers as a task is gone afterwards."""
    from bindexp.tasks import registry

    yield from _restored(registry._TASKS)


@pytest.fixture
def clean_templates():
    """Whatever a test registers as a prompt template is gone afterwards."""
    from bindexp.tasks import prompts

    yield from _restored(prompts._TEMPLATES)
