"""Recipes: one YAML file describes a whole run; `chatforge run` executes it stage by stage, resumably.

A recipe names the starting model, the SFT data mixture, how many rounds of (sample -> rate -> reward model ->
PPO) to run, who rates, and what to evaluate. Everything is validated before any work starts: an unknown key, a
missing model or data source, or an impossible setting (K < 2, a negative KL coefficient, responses longer than
the model's context) is refused with a message that names the key and the fix.

The run directory is the registry a person reads:

    RUN/recipe.yaml          the recipe as run (resolved)
    RUN/registry.json        every stage: status, start/end time, seconds, outputs, headline metrics
    RUN/<stage>/...          each stage's own output (checkpoints, metrics.jsonl, data)
    RUN/report.html          the report (see chatforge.report)
    RUN/chat                 the final chat checkpoint (a copy of the last policy), ready for `chatforge chat`

A stage is done when its entry in the registry says so; re-running a recipe skips done stages (`--resume`, the
default when the directory holds the same recipe) and a killed stage restarts from its own last checkpoint
(trainers resume exactly) or from scratch (cheap stages). Nothing a finished stage wrote is touched again.
"""

from __future__ import annotations

import difflib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the key and what to do."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SFTSection(_Section):
    enabled: bool = True
    mix: str = "behaviours=0.6,sharegpt=0.4"
    mix_size: int = Field(1500, ge=1)
    max_steps: int = Field(30, ge=1)
    batch_tokens: int = Field(2048, ge=64)
    max_seq_len: int = Field(256, ge=16)
    learning_rate: float = Field(2e-4, gt=0)
    lora: bool = False
    eval_fraction: float = Field(0.05, ge=0, lt=1)


class ComparisonsSection(_Section):
    prompts: str = Field("behaviours=0.7,sharegpt=0.3", description="prompt sources to sample from, mixed by weight")
    n: int = Field(48, ge=1, description="prompts per round")
    k: int = Field(4, description="responses per prompt (InstructGPT: 4 to 9)")
    max_new_tokens: int = Field(64, ge=1)
    temperature: float = Field(1.0, gt=0)
    with_reference: bool = Field(False, description="rank the prompt's demonstration among the K samples, too")

    @field_validator("k")
    @classmethod
    def _k_range(cls, k: int) -> int:
        if not 2 <= k <= 9:
            raise ValueError(f"k must be between 2 and 9 (a ranking needs at least 2 responses), got {k}")
        return k

    @model_validator(mode="after")
    def _room_for_reference(self) -> ComparisonsSection:
        if self.with_reference and self.k > 8:
            raise ValueError(f"with_reference adds one response to the k={self.k} samples, beyond 9: use k <= 8")
        return self


class RatersSection(_Section):
    kind: Literal["simulated"] = "simulated"
    size: int = Field(3, ge=1)
    agreement: float | None = Field(0.73, gt=0.5, le=1.0, description="tune noise to this agreement; null: use noise")
    noise: float = Field(0.5, ge=0)


class RewardSection(_Section):
    epochs: int = Field(2, ge=1)
    learning_rate: float = Field(1e-5, gt=0)
    batch_prompts: int = Field(4, ge=1)
    lora: bool = False
    max_seq_len: int = Field(384, ge=16)
    heldout_fraction: float = Field(0.2, gt=0, lt=1, description="share of prompts held out to measure accuracy")


class PolicySection(_Section):
    algorithm: Literal["ppo", "dpo", "best_of_n"] = Field(
        "ppo", description="what trains the policy each round: PPO against the reward model (InstructGPT), DPO on the "
        "round's rankings, or best-of-n sampling with the reward model and fine-tuning on the winners"
    )


class PPOSection(_Section):
    steps: int = Field(10, ge=1)
    prompts: str = Field("behaviours=0.7,sharegpt=0.3", description="prompt sources for rollouts, mixed by weight")
    batch_prompts: int = Field(8, ge=1)
    max_new_tokens: int = Field(64, ge=1)
    kl_coef: float = Field(0.05, description="per-token KL penalty to the round's starting policy")
    adaptive_kl_target: float | None = Field(None, gt=0, description="adaptive KL: aim for this KL; null: fixed kl_coef")
    learning_rate: float = Field(1e-6, gt=0)
    epochs: int = Field(2, ge=1, description="PPO epochs over each rollout batch")
    ptx_coef: float = Field(0.0, ge=0, description="PPO-ptx: weight of the SFT loss mixed into PPO")
    truncation_reward: float | None = Field(-1.0, description="score of replies cut off by max_new_tokens; null: RM")
    lora: bool = False

    @field_validator("kl_coef")
    @classmethod
    def _kl_non_negative(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"kl_coef must be >= 0 (it penalises moving away from the reference policy), got {value}")
        return value


class DPOSection(_Section):
    beta: float = Field(0.1, gt=0)
    learning_rate: float = Field(5e-7, gt=0)
    epochs: int = Field(1, ge=1)
    batch_pairs: int = Field(8, ge=1)


class BestOfNSection(_Section):
    n: int = Field(8, ge=2, description="samples per prompt; the reward model keeps the best")
    prompts: int = Field(96, ge=1, description="prompts per round (from ppo.prompts' mix)")
    max_new_tokens: int = Field(64, ge=1)
    learning_rate: float = Field(2e-5, gt=0)
    epochs: int = Field(1, ge=1)


class AdversarialSection(_Section):
    enabled: bool = Field(True, description="an adversarial round after the RLHF rounds (red-teaming, docs/redteam.md)")
    budget: int = Field(64, ge=1, description="attacks against the policy (training goals x training families)")
    rewriter: str | None = Field(
        "smollm2-135m-instruct", description="the language model that rewrites attacks; null: templates and stacking only"
    )
    replay: int = Field(4, ge=0, description="SFT-mixture conversations replayed per refusal demonstration")
    learning_rate: float = Field(1e-5, gt=0)
    epochs: int = Field(2, ge=1)
    heldout_attacks: int = Field(48, ge=1, description="held-out goals x held-out framings, for attack success rates")
    judge: str | None = Field(None, description="a trained safety judge directory; null: the cached one, trained on first use")


class EvaluationSection(_Section):
    per_category: int = Field(40, ge=1, description="test prompts per behaviour category at most (seeded sample)")
    general: int = Field(120, ge=0, description="held-out ShareGPT requests in the win rate (the alignment tax)")
    dev_per_category: int = Field(8, ge=1, description="dev prompts per category for choosing checkpoints")
    checkpoints: int = Field(3, ge=1, description="checkpoints per round compared on dev prompts (the best is kept)")
    max_new_tokens: int = Field(128, ge=1)
    guards: bool = Field(True, description="instruction following (IFEval-style) and MT-Bench, on SFT and the final policy")


class Recipe(_Section):
    """A whole run. ``trainer_bf16`` and ``decode_dtype`` translate ``precision`` for the trainers and engines."""

    name: str = "run"
    base: str = "smollm2-135m-instruct"
    seed: int = 0
    threads: int | None = Field(None, ge=1)
    # One switch for the numerics of every stage: "auto" trains under bf16 autocast and samples in bf16 where the
    # hardware does bf16 natively (and fast), "float32" does neither, "bf16" forces both.
    precision: Literal["auto", "float32", "bf16"] = "auto"
    rounds: int = Field(2, ge=0)
    sft: SFTSection = Field(default_factory=SFTSection)
    comparisons: ComparisonsSection = Field(default_factory=ComparisonsSection)
    raters: RatersSection = Field(default_factory=RatersSection)
    reward: RewardSection = Field(default_factory=RewardSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    ppo: PPOSection = Field(default_factory=PPOSection)
    dpo: DPOSection = Field(default_factory=DPOSection)
    best_of_n: BestOfNSection = Field(default_factory=BestOfNSection)
    adversarial: AdversarialSection = Field(default_factory=AdversarialSection)
    evaluation: EvaluationSection = Field(default_factory=EvaluationSection)

    @property
    def trainer_bf16(self) -> bool | Literal["auto"]:
        return {"auto": "auto", "float32": False, "bf16": True}[self.precision]  # type: ignore[return-value]

    @property
    def decode_dtype(self) -> str:
        return {"auto": "auto", "float32": "float32", "bf16": "bfloat16"}[self.precision]


def _known_keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in path:
        field_info = current.model_fields.get(part) if isinstance(part, str) else None
        if field_info is None or not isinstance(field_info.annotation, type) or not issubclass(field_info.annotation, BaseModel):
            break
        current = field_info.annotation
    return list(current.model_fields)


# Keys that were renamed or removed: a recipe using one is told exactly what to write instead.
RENAMED = {
    "ppo.target_kl": "did you mean 'ppo.adaptive_kl_target'? (renamed: it sets the KL that adaptive control aims for)",
    "raters.heldout_seed": "removed: the win rate is judged by the evaluation's own pairwise judge, not by another "
    "seed of the training raters; delete the key",
    "evaluation.behaviours_per_category": "did you mean 'evaluation.per_category'? (renamed)",
    "evaluation.winrate_prompts": "removed: the win rate uses every evaluation prompt (evaluation.per_category and "
    "evaluation.general set how many); delete the key",
}


def _explain(err: ValidationError, source: str) -> RecipeError:
    lines = []
    for problem in err.errors():
        location = ".".join(str(p) for p in problem["loc"])
        if problem["type"] == "extra_forbidden" and location in RENAMED:
            lines.append(f"unknown key '{location}': {RENAMED[location]}")
        elif problem["type"] == "extra_forbidden":
            key = str(problem["loc"][-1])
            known = _known_keys(Recipe, problem["loc"][:-1])
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"known keys here: {', '.join(known)}"
            lines.append(f"unknown key '{location}': {hint}")
        else:
            message = str(problem["msg"]).removeprefix("Value error, ")
            lines.append(f"'{location}': {message}")
    return RecipeError(f"{source}: " + "; ".join(lines))


def load_recipe(path: str | os.PathLike[str] | None = None, *, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe file (default: recipes/default.yaml)."""
    source = Path(path) if path is not None else RECIPES_DIR / "default.yaml"
    if not source.is_file():
        raise RecipeError(f"recipe {source} does not exist (the shipped ones are in {RECIPES_DIR})")
    try:
        data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"{source}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping of keys to values, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        target = data
        *parents, last = dotted.split(".")
        for part in parents:
            target = target.setdefault(part, {})
        target[last] = value
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        raise _explain(err, str(source)) from None


def check_resources(recipe: Recipe) -> None:
    """The checks that need the installed models and data: run before any work starts."""
    from chatforge import models
    from chatforge.data.mixture import MixSpecError, parse_mix

    problems = []
    try:
        models.resolve(recipe.base, convert=False)
    except models.ModelNotFoundError as err:
        problems.append(f"'base': {err}")
    if recipe.sft.enabled:
        try:
            parse_mix(recipe.sft.mix)
        except MixSpecError as err:
            problems.append(f"'sft.mix': {err}")
    for key, mix in (("comparisons.prompts", recipe.comparisons.prompts), ("ppo.prompts", recipe.ppo.prompts)):
        try:
            entries = parse_mix(mix)
        except MixSpecError as err:
            problems.append(f"'{key}': {err}")
            continue
        for entry in entries:
            if entry.name == "mtbench":
                problems.append(f"'{key}': MT-Bench is evaluation data and cannot be a training prompt source")
            elif entry.name not in ("behaviours", "sharegpt", "chitchat") and not Path(entry.name).is_file():
                problems.append(f"'{key}': no prompt source or file called {entry.name!r}")
    if not problems:
        limit = _context_length(recipe.base)
        for key, length in (
            ("comparisons.max_new_tokens", recipe.comparisons.max_new_tokens),
            ("ppo.max_new_tokens", recipe.ppo.max_new_tokens),
            ("evaluation.max_new_tokens", recipe.evaluation.max_new_tokens),
        ):
            if limit is not None and length >= limit:
                problems.append(f"'{key}': {length} tokens do not fit the model's {limit}-token context; lower it")
    if problems:
        raise RecipeError("the recipe cannot run: " + "; ".join(problems))


def _context_length(name: str) -> int | None:
    from chatforge import models

    resolved = models.resolve(name, convert=False)
    config_file = resolved.path / "config.json" if resolved.path is not None else None
    if config_file is not None and config_file.is_file():
        value = json.loads(config_file.read_text()).get("max_position_embeddings")
        return int(value) if value else None
    return None


# --------------------------------------------------------------------------------------------------------------
# The run directory and its registry
# --------------------------------------------------------------------------------------------------------------


@dataclass
class StageRecord:
    name: str
    status: Literal["done", "running", "failed"]
    started: float
    finished: float | None = None
    outputs: dict[str, str] | None = None
    metrics: dict[str, Any] | None = None
    error: str | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.started


class RunDirectory:
    """The registry of a run: which stages are done, what they wrote, their headline metrics."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.registry_path = self.root / "registry.json"
        self.stages: dict[str, StageRecord] = {}
        if self.registry_path.is_file():
            raw = json.loads(self.registry_path.read_text())
            self.stages = {name: StageRecord(**record) for name, record in raw["stages"].items()}

    def save(self) -> None:
        data = {"stages": {name: record.__dict__ for name, record in self.stages.items()}}
        tmp = self.registry_path.with_name("registry.json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(self.registry_path)

    def done(self, name: str) -> bool:
        record = self.stages.get(name)
        return record is not None and record.status == "done"

    def path(self, name: str) -> Path:
        return self.root / name

    def run_stage(
        self, name: str, work: Callable[[Path], tuple[dict[str, str], dict[str, Any]]], log: Callable[[str], None]
    ) -> StageRecord:
        """Run `work(stage_dir) -> (outputs, metrics)` unless the stage is done; record the result."""
        if self.done(name):
            log(f"[{name}] done already, skipped")
            return self.stages[name]
        log(f"[{name}] starting")
        record = StageRecord(name, "running", time.time())
        self.stages[name] = record
        self.save()
        stage_dir = self.path(name)
        stage_dir.mkdir(parents=True, exist_ok=True)
        try:
            outputs, metrics = work(stage_dir)
        except BaseException as err:
            record.status, record.finished, record.error = "failed", time.time(), f"{type(err).__name__}: {err}"
            self.save()
            raise
        record.status, record.finished, record.outputs, record.metrics = "done", time.time(), outputs, metrics
        self.save()
        log(f"[{name}] done in {record.seconds:.0f} s")
        return record
