"""``chatforge ppo``: load the policy, the reward model, the prompts (and PPO-ptx data); train."""

from __future__ import annotations

from chatforge import chat, models
from chatforge.train import starting_point
from chatforge.train.command import StageCommand
from chatforge.train.ppo.config import PPOConfig, PPOConfigError
from chatforge.train.ppo.trainer import PPOTrainer
from chatforge.train.sft.data import read_conversations


def build(config: PPOConfig) -> PPOTrainer:
    """PPO against a reward model with a KL penalty to the SFT policy

    RLHF with PPO (InstructGPT step 3). Run under `torchrun --nproc_per_node=N -m chatforge.train ppo ...` for N
    processes.
    """
    missing = [flag for flag, value in (("--policy", config.policy), ("--reward", config.reward_model),
                                        ("--prompts", config.prompts)) if not value]
    if missing:
        raise PPOConfigError(f"missing {', '.join(missing)}")
    from chatforge.sampling import load_prompts
    from chatforge.train.reward import RewardModel

    assert config.policy and config.reward_model and config.prompts
    prompts = load_prompts(config.prompts, seed=config.seed)
    ptx = read_conversations(config.ptx_data) if config.ptx_data else None
    policy, tokenizer = starting_point.load_policy(config.policy)
    return PPOTrainer(config, policy, tokenizer, RewardModel.load(config.reward_model), prompts, ptx)


COMMAND = StageCommand(
    "ppo", PPOConfig, build, (PPOConfigError, chat.ConversationError, models.ModelNotFoundError, FileExistsError,
                              FileNotFoundError, ValueError),
    aliases={"reward_model": ["--reward"], "output_dir": ["--out"], "learning_rate": ["--lr"]},
)
add_arguments = COMMAND.add_arguments
run_command = COMMAND.run
register_cli = COMMAND.register
main = COMMAND.main
