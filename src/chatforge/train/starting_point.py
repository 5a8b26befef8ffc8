"""What a trainer starts from: the model (a chatforge run directory means its ``final/``), LoRA adapters on it,
and the parameters it trains.

* ``resolve_start``: a run directory -> its ``final/`` model; anything else as given;
* ``load_policy``: the causal LM to start PPO or DPO from (``models.load_model`` after ``resolve_start``);
* ``with_lora``: the model wrapped with peft LoRA adapters as a config's ``lora_*`` fields describe;
* ``trainable_parameters``: what the optimizer will update, refused unless there is some, all in float32.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Protocol

import torch

from chatforge import models


class LoRASettings(Protocol):
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: list[str] | str


def resolve_start(name_or_path: str | os.PathLike[str]) -> str:
    """A chatforge run directory (SFT, RM, PPO, DPO) means its ``final/`` model; anything else is passed on as is."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and (path / "final" / "config.json").is_file():
        return str(path / "final")
    return str(name_or_path)


def load_policy(name: str | os.PathLike[str]) -> tuple[Any, Any]:
    """The policy to start from: a run directory (its ``final/``) or anything ``models.load_model`` takes."""
    return models.load_model(resolve_start(name))


def with_lora(model: Any, config: LoRASettings, task_type: Literal["CAUSAL_LM", "SEQ_CLS"] = "CAUSAL_LM") -> Any:
    """``model`` with LoRA adapters (peft). With ``SEQ_CLS`` peft trains and saves the score head in full
    ("modules_to_save"): a new head has nothing for a low-rank update to adjust."""
    from peft import LoraConfig, get_peft_model

    lora_config = LoraConfig(
        task_type=task_type,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target_modules,
    )
    return get_peft_model(model, lora_config)


def trainable_parameters(model: Any, error: type[ValueError]) -> list[torch.nn.Parameter]:
    """The parameters that require a gradient; ``error`` if there are none or any is not float32."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise error("the model has no trainable parameters")
    wrong = sorted({str(p.dtype) for p in trainable if p.dtype != torch.float32})
    if wrong:
        raise error(
            f"trainable parameters must be float32 (got {', '.join(wrong)}); load the model in float32: "
            "bf16 autocast gives the speed, float32 weights keep small updates from rounding away"
        )
    return trainable
