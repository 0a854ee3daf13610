"""Keep loaded models around between runs in one process (notebooks, local sweeps)."""

from __future__ import annotations

import gc
from typing import Any

import torch

from bindexp.models.loading import LoadedModel, load_model


class ModelCache:
    """Models keyed by name and load options; `get` loads once and then reuses."""

    def __init__(self) -> None:
        self._models: dict[tuple, LoadedModel] = {}

    @staticmethod
    def _key(name: str, options: dict[str, Any]) -> tuple:
        return (name, *sorted((k, str(v)) for k, v in options.items()))

    def get(self, name: str, **options: Any) -> LoadedModel:
        key = self._key(name, options)
        if key not in self._models:
            self._models[key] = load_model(name, **options)
        return self._models[key]

    def preload(self, names: list[str], **options: Any) -> None:
        for name in names:
            self.get(name, **options)

    def loaded(self) -> list[str]:
        return [key[0] for key in self._models]

    def unload(self, name: str) -> int:
        """Drop every loaded copy of `name`; returns how many were dropped."""
        keys = [key for key in self._models if key[0] == name]
        for key in keys:
            del self._models[key]
        self._free()
        return len(keys)

    def clear(self) -> None:
        self._models.clear()
        self._free()

    @staticmethod
    def _free() -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


MODEL_CACHE = ModelCache()
