"""Model layer: loading, tokenization, batched forwards and answer scoring."""

from bindexp.errors import ModelError
from bindexp.models.cache import MODEL_CACHE, ModelCache
from bindexp.models.loading import BUNDLED, LoadedModel, load_model
from bindexp.models.scoring import Score, candidate_token_ids, score_candidates, score_generate

__all__ = [
    "BUNDLED",
    "MODEL_CACHE",
    "LoadedModel",
    "ModelCache",
    "ModelError",
    "Score",
    "candidate_token_ids",
    "load_model",
    "score_candidates",
    "score_generate",
]
