"""Reward model (RM): learn a scalar score of a response from people's (or simulated raters') rankings.

``RewardConfig`` says how; ``RewardTrainer(config, model, tokenizer, train, eval, references).train()`` does it;
``RewardModel.load(dir).score(...)`` is what later stages (PPO, best-of-n) call.

The model is a standard Hugging Face sequence-classification checkpoint with one label: the SFT model's decoder
plus a linear ``score`` head (``AutoModelForSequenceClassification``), so any tool that reads such checkpoints
(TRL, OpenRLHF, a ``text-classification`` pipeline) gets the same scores as chatforge. The score of a response
is the head's output at the last token of (context + response + end-of-turn marker); ``encoding`` says how that
token is kept in place.

Training follows InstructGPT: all K responses of a prompt go through the model in the same micro-batch, and the
loss (``losses.ranking_loss``) averages -log sigmoid(r_w - r_l) over the prompt's C(K, 2) ordered pairs, then
over prompts. After training, rewards are shifted so that reference responses (the demonstrations, or by
default the top-ranked responses) score 0 on average; the shift is stored in the saved config
(``chatforge_reward_offset``) and applied by ``RewardModel``.

A run directory holds ``run.json``, ``metrics.jsonl``, ``checkpoint-<step>/`` (``model/``, ``adapter/`` with
LoRA, ``trainer_state.pt``), ``final/`` (the normalised RM), ``adapter/`` (LoRA) and, with evaluation data,
``rm_eval.json`` with ``calibration.png`` and ``reward_vs_length.png``.

One module per concern:

* ``config``: ``RewardConfig`` and the errors;
* ``encoding``: comparisons as token ids, and the pad token the score head needs;
* ``model``: ``RewardModel`` (scoring), ``load_reward_base`` (the model to train);
* ``trainer``: ``RewardTrainer``;
* ``evaluation``: held-out accuracy (overall, per category, per rater), calibration and length bias, with plots
  (a diagnostic of the training, written into the run directory; chatforge's independent evaluation of the
  policy is ``chatforge.evaluate``);
* ``data``: comparison and reference files, the held-out split by prompt;
* ``cli``: the ``rm`` and ``rm-eval`` commands.
"""

from chatforge.train.reward.cli import main, register_cli
from chatforge.train.reward.config import RewardConfig, RewardConfigError, RewardDataError
from chatforge.train.reward.data import load_data, split_by_context
from chatforge.train.reward.encoding import encode_for_reward, prepare_tokenizer, reward_pad_token_id
from chatforge.train.reward.evaluation import evaluate_reward_model
from chatforge.train.reward.model import (
    MAX_LEN_KEY,
    OFFSET_KEY,
    OFFSET_STD_KEY,
    REFERENCE_COUNT_KEY,
    REFERENCE_KEY,
    RewardModel,
    load_reward_base,
    reward_model_from_causal_lm,
)
from chatforge.train.reward.trainer import RewardResult, RewardTrainer

__all__ = [
    "MAX_LEN_KEY",
    "OFFSET_KEY",
    "OFFSET_STD_KEY",
    "REFERENCE_COUNT_KEY",
    "REFERENCE_KEY",
    "RewardConfig",
    "RewardConfigError",
    "RewardDataError",
    "RewardModel",
    "RewardResult",
    "RewardTrainer",
    "encode_for_reward",
    "evaluate_reward_model",
    "load_data",
    "load_reward_base",
    "main",
    "prepare_tokenizer",
    "register_cli",
    "reward_model_from_causal_lm",
    "reward_pad_token_id",
    "split_by_context",
]
