"""SFT under torchrun: two CPU processes (DDP over gloo) end with identical weights, and their steps equal those of
one process that accumulates the same micro-batches.

The test launches this very file with ``python -m torch.distributed.run --standalone --nproc_per_node=2``; run as
a script, the file is the worker.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from chatforge import chat, models
from chatforge.train import SFTConfig, SFTTrainer

STEPS = 3


def conversations() -> list[chat.Conversation]:
    rng = random.Random(11)
    out = []
    for i in range(12):
        city = rng.choice(["Paris", "Lima", "Oslo", "Cairo", "Hanoi"])
        reply = f"{city} is a capital city." + " It has a long history." * rng.randint(0, 2)
        out.append(
            chat.Conversation.from_messages(
                [
                    {"role": "user", "content": f"Tell me about {city}."},
                    {"role": "assistant", "content": reply},
                ],
                id=f"city-{i}",
            )
        )
    return out


def config(output_dir: Path, **overrides) -> SFTConfig:
    values = dict(
        output_dir=str(output_dir),
        learning_rate=1e-3,
        max_steps=STEPS,
        batch_sequences=2,
        max_seq_len=128,
        warmup_steps=0,
        bf16=False,
        progress=False,
        tensorboard=False,
    )
    values.update(overrides)
    return SFTConfig(**values)


def parameter_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, p in model.state_dict().items():
        digest.update(name.encode())
        digest.update(p.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def worker(out: Path) -> None:
    model, tokenizer = models.build_tiny(seed=0)
    trainer = SFTTrainer(config(out / "run"), model, tokenizer, conversations())
    initial = parameter_hash(trainer.model)  # the weights this run starts from
    result = trainer.train()
    report = {
        "rank": trainer.dist.rank,
        "world_size": trainer.dist.world_size,
        "steps": result.step,
        "initial": initial,
        "hash": parameter_hash(trainer.model),
    }
    (out / f"rank{trainer.dist.rank}.json").write_text(json.dumps(report))


def train_losses(run: Path) -> list[float]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"]


def test_two_processes_hold_identical_weights(tiny, tmp_path):
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

    # Only rank 0 wrote the run directory, once per step.
    assert len(train_losses(tmp_path / "run")) == STEPS
    assert json.loads((tmp_path / "run" / "run.json").read_text())["world_size"] == 2

    # Each process took its own share of a step: together they computed what one process accumulating both
    # micro-batches computes (the same micro-batches, the same token-weighted mean loss).
    model, tokenizer = tiny
    single = SFTTrainer(
        config(tmp_path / "single", grad_accum=2), copy.deepcopy(model), tokenizer, conversations()
    )
    single.train()
    assert train_losses(tmp_path / "run") == pytest.approx(train_losses(tmp_path / "single"), rel=1e-5)


if __name__ == "__main__":
    models.set_threads(None)
    worker(Path(sys.argv[1]))
