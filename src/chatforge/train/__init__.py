"""Training stages. Each is a config dataclass plus one trainer class; what they share is in ``checkpoint`` (the run
directory: checkpoints, resuming, the final model, metrics; the ``CheckpointedTrainer`` base class),
``starting_point`` (the model to start from, LoRA), ``common`` (processes, precision, randomness), ``config``
(config files and flags), ``packing`` (the batch layout), ``token_loss`` (the LM loss) and ``losses`` (the RL
losses).

* ``sft``: supervised fine-tuning on conversations (``SFTConfig``, ``SFTTrainer``);
* ``reward``: the reward model on ranked comparisons (``RewardConfig``, ``RewardTrainer``, ``RewardModel``);
* ``ppo``: PPO with a KL penalty to the SFT model, optionally PPO-ptx (``PPOConfig``, ``PPOTrainer``);
* ``dpo``: DPO on comparison records (``DPOConfig``, ``DPOTrainer``);
* ``best_of_n``: best-of-n sampling with a reward model and expert iteration (``best_of_n``, ``expert_iteration``);
* ``rollout``: what those three share (sampling, scoring, the packed log-prob forward pass).
"""

from typing import Any

from chatforge.train.sft import SFTConfig, SFTResult, SFTTrainer

# The reward stage reads comparisons through chatforge.data; importing it lazily keeps `from chatforge.train
# import SFTConfig` independent of the data package.
_REWARD_EXPORTS = ("RewardConfig", "RewardModel", "RewardResult", "RewardTrainer")


_LAZY = {
    **{name: "reward" for name in _REWARD_EXPORTS},
    "PPOConfig": "ppo",
    "PPOResult": "ppo",
    "PPOTrainer": "ppo",
    "DPOConfig": "dpo",
    "DPOResult": "dpo",
    "DPOTrainer": "dpo",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"chatforge.train.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'chatforge.train' has no attribute {name!r}")


__all__ = [
    "DPOConfig",
    "DPOResult",
    "DPOTrainer",
    "PPOConfig",
    "PPOResult",
    "PPOTrainer",
    "RewardConfig",
    "RewardModel",
    "RewardResult",
    "RewardTrainer",
    "SFTConfig",
    "SFTResult",
    "SFTTrainer",
]
