"""PPO under torchrun: two CPU processes (DDP over gloo), each with its own prompts and rollouts, start from the
same weights and end with identical policy and value-head weights, both moved from where they started; only rank
0 writes the run directory.

The test launches this very file with ``python -m torch.distributed.run --standalone --nproc_per_node=2``; run as
a script, the file is the worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from chatforge import models
from chatforge.train.ppo import PPOConfig, PPOTrainer

STEPS = 2
WORDS = ["cats", "dogs", "rain", "tea", "code", "maps", "owls", "jazz"]
PROMPTS = [[{"role": "user", "content": f"Do you like {w}?"}] for w in WORDS]


def reply_length(conversations):
    """Characters of the reply / 10: it differs from rollout to rollout, so every step has a gradient. (A reward
    that is 0 for every rollout, as "does it say yes" is for the untrained tiny model, gives none: the weights then
    stay where they started, which this test once did not notice.)"""
    return [len(c[-1].content) / 10 for c in conversations]


def parameter_hash(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, p in module.state_dict().items():
        digest.update(name.encode())
        digest.update(p.detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def weight_hashes(trainer: PPOTrainer) -> dict[str, str]:
    return {"policy": parameter_hash(trainer.model), "value_head": parameter_hash(trainer.value_head)}


def worker(out: Path) -> None:
    model, tokenizer = models.build_tiny(seed=0)
    config = PPOConfig(
        output_dir=str(out / "run"), steps=STEPS, batch_size=2, mini_batch_size=2, ppo_epochs=1,
        learning_rate=1e-3, max_new_tokens=4, progress=False, tensorboard=False,
    )
    trainer = PPOTrainer(config, model, tokenizer, reply_length, PROMPTS)
    initial = weight_hashes(trainer)  # the weights this run starts from (the value head as the trainer made it)
    result = trainer.train()
    report = {
        "rank": trainer.dist.rank,
        "world_size": trainer.dist.world_size,
        "steps": result.step,
        "initial": initial,
        "final": weight_hashes(trainer),
    }
    (out / f"rank{trainer.dist.rank}.json").write_text(json.dumps(report))


def test_two_processes_hold_identical_weights(tmp_path):
    env = {**os.environ, "CHATFORGE_THREADS": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    assert [r["steps"] for r in reports] == [STEPS, STEPS]
    assert reports[0]["initial"] == reports[1]["initial"]
    assert reports[0]["final"] == reports[1]["final"]
    # Both moved from where this run started: identical weights alone would also hold if nothing trained.
    for part in ("policy", "value_head"):
        assert reports[0]["final"][part] != reports[0]["initial"][part], f"the {part} did not train"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len([line for line in lines if json.loads(line)["kind"] == "train"]) == STEPS  # rank 0 alone writes


if __name__ == "__main__":
    models.set_threads(None)
    worker(Path(sys.argv[1]))
