"""Training stages. Each is a config dataclass plus one trainer class; the shared machinery (processes,
precision, checkpoints, metrics) is in ``common``, the batch layout in ``packing``, the LM loss in ``token_loss``,
the RL losses in ``losses``.

* ``sft``: supervised fine-tuning on conversations (``SFTConfig``, ``SFTTrainer``);
* ``reward``: the reward model on ranked comparisons (``RewardConfig``, ``RewardTrainer``, ``RewardModel``).
"""

from typing import Any

from chatforge.train.sft import SFTConfig, SFTResult, SFTTrainer

# The reward stage reads comparisons through chatforge.data; importing it lazily keeps `from chatforge.train
# import SFTConfig` independent of the data package.
_REWARD_EXPORTS = ("RewardConfig", "RewardModel", "RewardResult", "RewardTrainer")


def __getattr__(name: str) -> Any:
    if name in _REWARD_EXPORTS:
        from chatforge.train import reward

        return getattr(reward, name)
    raise AttributeError(f"module 'chatforge.train' has no attribute {name!r}")


__all__ = [
    "RewardConfig",
    "RewardModel",
    "RewardResult",
    "RewardTrainer",
    "SFTConfig",
    "SFTResult",
    "SFTTrainer",
]
