"""The four trainers' outputs, pinned: a refactoring of the trainers must leave every one of them unchanged.

SFT, then a reward model from the SFT model, then PPO against that reward model and DPO from the SFT model,
each through its public API on the tiny model with fixed data and the default recipe's settings
(recipes/default.yaml, as ``chatforge.pipeline`` passes them to the trainers) scaled down to a few steps; plus
a LoRA run of each (for PPO also with the adaptive KL controller, early stopping and PPO-ptx, which the
default recipe leaves off). Compared with ``tests/fixtures/stage_outputs.json``, stage by stage:

* every file the run wrote, by path, with a fingerprint of its content: the tensors of each ``.safetensors``
  file (names, dtypes, shapes, bytes); every entry of each ``trainer_state.pt`` (optimizer moments, scheduler,
  RNG states, step, plan) but the seconds it took; the text of every other file with the run directory's path
  replaced by ``<RUN>`` and, in JSON files, the wall-clock keys dropped; the PNG plots by name only;
* every record of ``metrics.jsonl`` without its wall-clock keys (and that ``on_log`` saw the same records);
* the final weights: per tensor, its sum and L2 norm in float64, so that a failure shows how far they moved;
* the result object the trainer returned.

Left out, and why: wall-clock numbers (``elapsed``, ``step_time``, ``tokens_per_s``, ``prompts_per_s``,
``generation_time``, ``generation_share``) differ run to run; PNG bytes embed matplotlib's version;
TensorBoard is off (its event files are named after the time and host, and it is an optional dependency);
``local_files_only`` in a saved tokenizer config records whether the process ran offline (pytest's conftest
sets HF_HUB_OFFLINE, a plain script does not). peft writes an adapter's ``target_modules`` in a Python set's
order, which changes with PYTHONHASHSEED, so that list is compared sorted. Everything else came out bit for
bit the same in two runs in one process (``--check-reproducible``) and in separate processes with different
hash seeds, so it is compared exactly.

Floating-point results depend on the CPU's kernels and the thread count, so the stages run on one thread and
the fixture records the environment (torch and transformers versions, the CPU's vector extensions). Elsewhere
only the structure is compared (which files, which metric keys, how many records) and the numbers are skipped,
saying so. About 20 s of CPU.

An intended change of behaviour regenerates the fixture (and the commit says why):

    PYTHONPATH=src python tests/test_stage_outputs.py --regenerate
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import platform
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from chatforge import chat, models
from chatforge.data.comparisons import Comparison, Response

FIXTURE = Path(__file__).parent / "fixtures" / "stage_outputs.json"
WALL_CLOCK = {"elapsed", "step_time", "tokens_per_s", "prompts_per_s", "generation_time", "generation_share"}
# transformers writes the process's offline setting (HF_HUB_OFFLINE) into a saved tokenizer_config.json
ENVIRONMENT_KEYS = {"local_files_only"}
# peft keeps target_modules as a set and writes it in the set's order, which changes with PYTHONHASHSEED
SETS = {"target_modules"}

# --------------------------------------------------------------------------------------------------------------
# Fixed data
# --------------------------------------------------------------------------------------------------------------

CITIES = ["Paris", "Lima", "Oslo", "Cairo", "Hanoi", "Quito", "Accra", "Riga"]
TOPICS = ["tea", "rain", "maps", "owls", "jazz", "boats", "bread", "snow"]


def sft_conversations() -> list[chat.Conversation]:
    rng = random.Random(7)
    out = []
    for i in range(20):
        city = CITIES[i % len(CITIES)]
        messages = [
            {"role": "user", "content": f"Tell me about {city}."},
            {"role": "assistant", "content": f"{city} is a capital city." + " It is old." * rng.randint(0, 3)},
        ]
        if i % 3 == 0:  # some multi-turn, with a system prompt
            messages = [{"role": "system", "content": "Be brief."}, *messages,
                        {"role": "user", "content": "And the weather?"},
                        {"role": "assistant", "content": rng.choice(["Mild.", "Cold in winter.", "Hot."])}]
        out.append(chat.Conversation.from_messages(messages, id=f"sft-{i}"))
    return out


def comparisons(n: int, seed: int) -> list[Comparison]:
    """K = 3 or 4 replies per prompt; the polite one is ranked first, some replies tie."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        k = 3 + i % 2
        texts = [f"I like {topic}, thank you for asking."] + [
            " ".join(rng.choice(["no", "maybe", topic, "why", "ok", "fine"]) for _ in range(rng.randint(2, 6)))
            for _ in range(k - 1)
        ]
        ranks = [1] + [2 + rng.randrange(2) for _ in range(k - 1)]
        out.append(Comparison(f"cmp-{seed}-{i}", [{"role": "user", "content": f"Do you like {topic}?"}],
                              [Response(t, "fixture") for t in texts], ranks))
    return out


PROMPTS = [[{"role": "user", "content": f"Do you like {t}?"}] for t in TOPICS]


# --------------------------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------------------------


def _tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().reshape(-1).contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(tensors[name].shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()[:20]


def _plain(value: Any, root: str) -> Any:
    """A JSON-comparable copy: tensors by digest, floats as their exact repr (nan included), paths relative."""
    if isinstance(value, torch.Tensor):
        return {"tensor": _tensor_digest({"": value})}
    if isinstance(value, dict):
        kept = sorted((str(k), v) for k, v in value.items() if k not in WALL_CLOCK | ENVIRONMENT_KEYS)
        return {k: _plain(sorted(v) if k in SETS and isinstance(v, list) else v, root) for k, v in kept}
    if isinstance(value, (list, tuple)):
        return [_plain(v, root) for v in value]
    if isinstance(value, float):
        return repr(value)  # exact, and nan compares equal to itself as text
    if isinstance(value, Path):
        return _plain(str(value), root)
    if isinstance(value, str):
        return value.replace(root, "<RUN>")
    return value


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:20]


def file_fingerprint(path: Path, root: str) -> str:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return "tensors:" + _tensor_digest(load_file(path))
    if path.suffix == ".pt":
        return "state:" + _digest(_plain(torch.load(path, map_location="cpu", weights_only=True), root))
    if path.suffix == ".png":
        return "png"
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return "json:" + _digest(_plain(json.loads(text), root))
    if path.name == "metrics.jsonl":
        return "metrics"  # compared record by record
    return "text:" + hashlib.sha256(text.replace(root, "<RUN>").encode()).hexdigest()[:20]


def weight_summary(directory: Path) -> dict[str, list[str]]:
    from safetensors.torch import load_file

    out = {}
    for file in sorted(directory.glob("*.safetensors")):
        for name, t in sorted(load_file(file).items()):
            t64 = t.double()
            out[f"{file.name}:{name}"] = [repr(float(t64.sum())), repr(float(t64.norm()))]
    return out


def stage_outputs(output_dir: Path, root: Path, seen: list[dict[str, Any]], result: Any) -> dict[str, Any]:
    records = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
    files = {
        str(p.relative_to(output_dir)): file_fingerprint(p, str(root))
        for p in sorted(output_dir.rglob("*"))
        if p.is_file()
    }
    return {
        "files": files,
        "metrics": _plain(records, str(root)),
        "on_log": _plain(seen, str(root)) == _plain(records, str(root)),  # the callback saw what the log holds
        "final_weights": weight_summary(output_dir / "final"),
        "result": _plain(dataclasses.asdict(result), str(root)),
    }


# --------------------------------------------------------------------------------------------------------------
# The stages (the default recipe's settings as chatforge.pipeline passes them, scaled down)
# --------------------------------------------------------------------------------------------------------------


def run_sft(root: Path, name: str, **overrides: Any) -> tuple[dict[str, Any], Path]:
    from chatforge.train.sft import SFTConfig, SFTTrainer

    model, tokenizer = models.build_tiny(seed=0)
    conversations = sft_conversations()
    held = 3
    steps = overrides.get("max_steps", 3)
    config = SFTConfig(**{
        "output_dir": str(root / name), "learning_rate": 2e-4, "max_steps": steps, "batch_tokens": 256,
        "max_seq_len": 128, "warmup_steps": max(1, steps // 10), "seed": 0, "eval_every": max(1, steps // 2),
        "save_every": max(1, steps // 3), "threads": 1, "bf16": False, "progress": False, "tensorboard": False,
        **overrides,
    })
    seen: list[dict[str, Any]] = []
    trainer = SFTTrainer(config, model, tokenizer, conversations[held:], conversations[:held], on_log=seen.append)
    result = trainer.train()
    return stage_outputs(root / name, root, seen, result), root / name / "final"


def run_reward(root: Path, name: str, sft_model: Path, **overrides: Any) -> tuple[dict[str, Any], Path]:
    from chatforge.train.reward import RewardConfig, RewardTrainer, load_reward_base

    model, tokenizer = load_reward_base(str(sft_model), seed=0)
    config = RewardConfig(**{
        "output_dir": str(root / name), "learning_rate": 2e-5, "epochs": 2, "batch_prompts": 4, "max_seq_len": 128,
        "seed": 0, "threads": 1, "bf16": False, "progress": False, "tensorboard": False, **overrides,
    })
    seen: list[dict[str, Any]] = []
    train, held_out = comparisons(12, seed=1), comparisons(4, seed=2)
    trainer = RewardTrainer(config, model, tokenizer, train, held_out, on_log=seen.append)
    result = trainer.train()
    return stage_outputs(root / name, root, seen, result), root / name / "final"


def run_ppo(root: Path, name: str, policy: Path, reward_model: Path, **overrides: Any) -> dict[str, Any]:
    from chatforge.train.ppo import PPOConfig, PPOTrainer
    from chatforge.train.reward import RewardModel

    model, tokenizer = models.load_model(str(policy))
    steps = overrides.get("steps", 3)
    config = PPOConfig(**{
        "output_dir": str(root / name), "steps": steps, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 2,
        "learning_rate": 1e-5, "max_new_tokens": 12, "kl_coef": 0.05, "truncation_reward": -1.0,
        "decode_dtype": "float32", "seed": 1, "save_every": max(1, steps // 3), "threads": 1, "bf16": False,
        "progress": False, "tensorboard": False, **overrides,
    })
    ptx = sft_conversations()[:6] if config.ptx_coef > 0 else None
    seen: list[dict[str, Any]] = []
    reward = RewardModel.load(reward_model)
    trainer = PPOTrainer(config, model, tokenizer, reward, PROMPTS, ptx, on_log=seen.append)
    result = trainer.train()
    return stage_outputs(root / name, root, seen, result)


def run_dpo(root: Path, name: str, policy: Path, **overrides: Any) -> dict[str, Any]:
    from chatforge.train.dpo import DPOConfig, DPOTrainer

    model, tokenizer = models.load_model(str(policy))
    config = DPOConfig(**{
        "output_dir": str(root / name), "max_steps": 3, "batch_pairs": 4, "max_seq_len": 128, "seed": 0,
        "save_every": 1, "threads": 1, "bf16": False, "progress": False, "tensorboard": False, **overrides,
    })
    seen: list[dict[str, Any]] = []
    result = DPOTrainer(config, model, tokenizer, comparisons(6, seed=3), on_log=seen.append).train()
    return stage_outputs(root / name, root, seen, result)


def environment() -> dict[str, Any]:
    import transformers

    flags: set[str] = set()
    if platform.system() == "Linux":
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                flags.update(value.split())
    vector = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "asimd", "sve"}
    kernels = sorted(flags & vector)
    return {"torch": torch.__version__, "transformers": transformers.__version__, "machine": platform.machine(),
            "cpu_extensions": kernels, "threads": 1}


def run_all(root: Path) -> dict[str, Any]:
    """Every stage's outputs, on one torch thread (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict[str, Any] = {}
        out["sft"], sft_model = run_sft(root, "sft")
        out["sft_lora"], _ = run_sft(root, "sft_lora", max_steps=2, lora=True, lora_r=4)
        out["reward"], reward_model = run_reward(root, "reward", sft_model)
        out["reward_lora"], _ = run_reward(root, "reward_lora", sft_model, max_steps=2, lora=True, lora_r=4)
        out["ppo"] = run_ppo(root, "ppo", sft_model, reward_model)
        out["ppo_lora"] = run_ppo(
            root, "ppo_lora", sft_model, reward_model, steps=2, lora=True, lora_r=4, learning_rate=1e-3,
            adaptive_kl_target=0.01, kl_horizon=20, early_stop_kl=0.02, ptx_coef=0.5, ptx_batch_sequences=2,
        )
        out["dpo"] = run_dpo(root, "dpo", sft_model)
        out["dpo_lora"] = run_dpo(
            root, "dpo_lora", sft_model, max_steps=2, lora=True, lora_r=4, learning_rate=1e-3
        )
        return out
    finally:
        torch.set_num_threads(threads)


STAGES = ("sft", "sft_lora", "reward", "reward_lora", "ppo", "ppo_lora", "dpo", "dpo_lora")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return run_all(tmp_path_factory.mktemp("stages"))


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    if not FIXTURE.is_file():
        pytest.fail(f"{FIXTURE} is missing: python {Path(__file__).name} --regenerate writes it")
    loaded: dict[str, Any] = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return loaded


def _structure(stage: dict[str, Any]) -> dict[str, Any]:
    return {
        "files": sorted(stage["files"]),
        "metric_keys": [sorted(r) for r in stage["metrics"]],
        "weights": sorted(stage["final_weights"]),
    }


def _differences(expected: Any, actual: Any, where: str = "") -> Iterator[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                yield f"{where}/{key}: missing (expected {expected[key]!r})"
            elif key not in expected:
                yield f"{where}/{key}: unexpected ({actual[key]!r})"
            else:
                yield from _differences(expected[key], actual[key], f"{where}/{key}")
    elif isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        for i, (e, a) in enumerate(zip(expected, actual, strict=True)):
            yield from _differences(e, a, f"{where}[{i}]")
    elif expected != actual:
        yield f"{where}: expected {expected!r}, got {actual!r}{_relative(expected, actual)}"


def _relative(expected: Any, actual: Any) -> str:
    try:
        e, a = float(expected), float(actual)
    except (TypeError, ValueError):
        return ""
    if math.isfinite(e) and math.isfinite(a) and e != 0:
        return f" (relative difference {abs(a - e) / abs(e):.2e})"
    return ""


@pytest.mark.parametrize("stage", STAGES)
def test_stage_outputs_match_the_fixture(stage: str, outputs: dict[str, Any], fixture: dict[str, Any]) -> None:
    expected, actual = fixture["stages"][stage], outputs[stage]
    assert actual["on_log"], "on_log records differ from metrics.jsonl"
    assert _structure(actual) == _structure(expected)
    if fixture["environment"] != environment():
        pytest.skip(
            f"the fixture's numbers were recorded on {fixture['environment']}, this is {environment()}: only the "
            "structure was compared (regenerate the fixture here to compare numbers)"
        )
    problems = list(_differences(expected, actual))
    assert not problems, f"{stage}: {len(problems)} differences from {FIXTURE.name}:\n" + "\n".join(problems[:40])


def regenerate(check: bool) -> int:
    """Write the fixture from the current code (``check``: run twice and report what differs between the runs)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="chatforge-stages-") as tmp:
        first = run_all(Path(tmp) / "a")
        if check:
            second = run_all(Path(tmp) / "b")
            problems = [p for s in STAGES for p in _differences(first[s], second[s], s)]
            print("\n".join(problems) if problems else "two runs agree bit for bit")
            return 1 if problems else 0
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps({"environment": environment(), "stages": first}, indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", action="store_true", help="write the fixture from the current code")
    parser.add_argument("--check-reproducible", action="store_true", help="run twice and compare the runs")
    args = parser.parse_args()
    if not (args.regenerate or args.check_reproducible):
        parser.error("give --regenerate or --check-reproducible (the test itself runs under pytest)")
    sys.exit(regenerate(check=args.check_reproducible))
