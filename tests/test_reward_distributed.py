"""Reward model under torchrun: two CPU processes (DDP over gloo) end with identical weights, their steps equal
those of one process accumulating the same micro-batches, and the normalisation (references split between the
processes) comes out the same.

The test launches this very file with ``python -m torch.distributed.run --standalone --nproc_per_node=2``; run as
a script, the file is the worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chatforge import models
from chatforge.data.comparisons import Comparison, Response
from chatforge.train import reward
from chatforge.train.reward import RewardConfig, RewardTrainer

STEPS = 3


def comparisons() -> list[Comparison]:
    rng = random.Random(12)
    out = []
    for i in range(12):
        city = rng.choice(["Paris", "Lima", "Oslo", "Cairo", "Hanoi"])
        good = f"{city} is a capital city." + " It has a long history." * rng.randint(0, 2)
        responses = [good, f"{city}? Never heard of it.", "No."][: 2 + i % 2]  # K = 2 and K = 3 mixed
        out.append(
            Comparison(
                f"city-{i}",
                [{"role": "user", "content": f"Tell me about {city}."}],
                [Response(t) for t in responses],
                list(range(1, len(responses) + 1)),
            )
        )
    return out


def config(output_dir: Path, **overrides) -> RewardConfig:
    values = dict(
        output_dir=str(output_dir),
        learning_rate=1e-3,
        max_steps=STEPS,
        batch_prompts=2,
        max_seq_len=128,
        warmup_steps=0,
        bf16=False,
        plots=False,
        progress=False,
        tensorboard=False,
    )
    values.update(overrides)
    return RewardConfig(**values)


def base_model():
    lm, tokenizer = models.build_tiny(seed=0)
    return reward.reward_model_from_causal_lm(lm, tokenizer, seed=0)


def parameter_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, p in model.state_dict().items():
        digest.update(name.encode())
        digest.update(p.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def worker(out: Path) -> None:
    model, tokenizer = base_model()
    trainer = RewardTrainer(config(out / "run"), model, tokenizer, comparisons())
    initial = parameter_hash(trainer.model)  # the weights this run starts from
    result = trainer.train()
    report = {
        "rank": trainer.dist.rank,
        "world_size": trainer.dist.world_size,
        "steps": result.step,
        "offset": result.offset,
        "initial": initial,
        "hash": parameter_hash(trainer.model),
    }
    (out / f"rank{trainer.dist.rank}.json").write_text(json.dumps(report))


def train_curve(run: Path, key: str) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r[key] for r in map(json.loads, lines) if r["kind"] == "train"]


def test_two_processes_hold_identical_weights(tmp_path):
    env = {**os.environ, "CHATFORGE_THREADS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        str(tmp_path),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert [r["steps"] for r in reports] == [STEPS, STEPS]
    assert reports[0]["initial"] == reports[1]["initial"]
    assert reports[0]["hash"] == reports[1]["hash"]
    # ... and moved from where the run started: identical weights alone would also hold if nothing trained.
    assert reports[0]["hash"] != reports[0]["initial"]
    assert reports[0]["offset"] == reports[1]["offset"]
    assert len(train_curve(tmp_path / "run", "loss")) == STEPS  # only rank 0 wrote, once per step

    model, tokenizer = base_model()
    single = RewardTrainer(config(tmp_path / "single", grad_accum=2), model, tokenizer, comparisons())
    result = single.train()
    for key in ("loss", "accuracy", "pairs", "grad_norm"):
        assert train_curve(tmp_path / "run", key) == pytest.approx(
            train_curve(tmp_path / "single", key), rel=1e-5
        )
    assert reports[0]["offset"] == pytest.approx(result.offset, rel=1e-5)


if __name__ == "__main__":
    models.set_threads(None)
    worker(Path(sys.argv[1]))
