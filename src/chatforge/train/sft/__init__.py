"""Supervised fine-tuning (SFT): teach a base model to answer like the assistant in a set of conversations.

``SFTConfig`` says how; ``SFTTrainer(config, model, tokenizer, train_conversations, eval_conversations).train()``
does it. The loss is the next-token cross-entropy on the assistant's tokens only (``chat.encode_conversation``
marks them), averaged over all such tokens of an optimizer step, across gradient accumulation and processes.

How a step runs:

* conversations are tokenized once, truncated to ``max_seq_len`` and packed several to a row without padding
  between them; position ids restart at each conversation, which makes transformers give each one its own causal
  attention block (``packing.py``);
* the decoder runs under bf16 autocast when the CPU has native bf16; the output head runs only on the positions
  that carry a loss, chunked, with a float32 loss (``token_loss.py``);
* under ``torchrun`` the model is wrapped in DistributedDataParallel (gloo on CPU); each process takes its share
  of the micro-batches of a step, and only rank 0 writes files.

A run directory holds ``metrics.jsonl`` (one record per step, and per evaluation), ``checkpoint-<step>/``
(``model/``: a Hugging Face checkpoint with the chat template, merged when training LoRA; ``adapter/``: the LoRA
adapter; ``trainer_state.pt``: optimizer, scheduler, RNG states and data position), and at the end ``final/``
(and ``adapter/`` with LoRA). A run resumed from a checkpoint continues the very same loss curve.

One module per concern: ``config`` (``SFTConfig`` and the errors), ``trainer`` (``SFTTrainer``), ``data``
(conversation files and mixtures) and ``cli`` (the ``sft`` command).
"""

from chatforge.train.sft.cli import add_arguments, config_from_args, main, register_cli, run_command
from chatforge.train.sft.config import DEFAULT_BATCH_TOKENS, SFTConfig, SFTConfigError, SFTDataError
from chatforge.train.sft.data import load_data, read_conversations
from chatforge.train.sft.trainer import SFTResult, SFTTrainer

__all__ = [
    "DEFAULT_BATCH_TOKENS",
    "SFTConfig",
    "SFTConfigError",
    "SFTDataError",
    "SFTResult",
    "SFTTrainer",
    "add_arguments",
    "config_from_args",
    "load_data",
    "main",
    "read_conversations",
    "register_cli",
    "run_command",
]
