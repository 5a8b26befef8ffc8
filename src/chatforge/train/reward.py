"""Reward model (RM): learn a scalar score of a response from people's (or simulated raters') rankings.

``RewardConfig`` says how; ``RewardTrainer(config, model, tokenizer, train, eval, references).train()`` does it;
``RewardModel.load(dir).score(...)`` is what later stages (PPO, best-of-n, evaluation) call.

The model is a standard Hugging Face sequence-classification checkpoint with one label: the SFT model's decoder
plus a linear ``score`` head (``AutoModelForSequenceClassification``), so any tool that reads such checkpoints
(TRL, OpenRLHF, a ``text-classification`` pipeline) gets the same scores as chatforge. The score of a response
is the head's output at the last token of (context + response + end-of-turn marker).

Where that last token is matters. transformers' head reads the *rightmost token that is not the pad token*.
Many tokenizers (SmolLM2's among them) use the end-of-turn token as pad; a padded batch would then be scored at
the wrong position, and an unpadded one at the token *before* the end-of-turn. So the RM gets a pad token
distinct from the end-of-turn and eos tokens (``<|endoftext|>`` for SmolLM2), sequences are right-padded with it,
and the saved config and tokenizer carry it, so every reader finds the same position.

Training follows InstructGPT: all K responses of a prompt go through the model in the same micro-batch, and the
loss (``losses.ranking_loss``) averages -log sigmoid(r_w - r_l) over the prompt's C(K, 2) ordered pairs, then
over prompts. After training, rewards are shifted so that reference responses (the demonstrations, or by
default the top-ranked responses) score 0 on average; the shift is stored in the saved config
(``chatforge_reward_offset``) and applied by ``RewardModel``.

A run directory holds ``run.json``, ``metrics.jsonl``, ``checkpoint-<step>/`` (``model/``, ``adapter/`` with
LoRA, ``trainer_state.pt``), ``final/`` (the normalised RM), ``adapter/`` (LoRA) and, with evaluation data,
``rm_eval.json`` with ``calibration.png`` and ``reward_vs_length.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import ConfigDict
from torch import nn

from chatforge import chat, models
from chatforge.data.comparisons import Comparison, ComparisonError, load_comparisons
from chatforge.decoder import base_model
from chatforge.evaluate.reward import PlottingUnavailable, evaluate_reward_model, require_matplotlib
from chatforge.quiet import transformers_quietly
from chatforge.train import common, losses, packing, starting_point, token_loss
from chatforge.train.checkpoint import CheckpointedTrainer
from chatforge.train.config import ConfigIO, add_config_arguments
from chatforge.train.config import config_from_args as config_from_args_of
from chatforge.train.sft import SFTDataError, read_conversations

log = logging.getLogger(__name__)


# Keys chatforge adds to the saved Hugging Face config of a reward model.
OFFSET_KEY = "chatforge_reward_offset"  # mean raw score of the reference responses; RewardModel subtracts it
OFFSET_STD_KEY = "chatforge_reward_reference_std"  # spread of those raw scores (the reward's natural scale)
REFERENCE_KEY = "chatforge_reward_reference"  # what the references were
REFERENCE_COUNT_KEY = "chatforge_reward_reference_count"
MAX_LEN_KEY = "chatforge_reward_max_seq_len"  # longer inputs are cut from the left, in training and scoring


class RewardConfigError(ValueError):
    """A reward-model configuration that cannot run; the message lists every problem found."""


class RewardDataError(ValueError):
    """Comparisons or reference data that cannot be used; the message names file and line, or what is missing."""


@dataclass
class RewardConfig(ConfigIO):
    """Everything that decides a reward-model run. Keys of a YAML config and long CLI flags have the same names."""

    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")
    _error: ClassVar[type[ValueError]] = RewardConfigError
    _what: ClassVar[str] = "reward-model"

    output_dir: str = field(metadata={"help": "run directory: metrics, checkpoints, final reward model"})
    # Read by the command (`run_command`, `load_data`); RewardTrainer itself takes a loaded model and records.
    sft_model: str | None = field(
        default=None,
        metadata={
            "help": "model to start from: a chatforge SFT run directory (its final/) or any model name"
        },
    )
    comparisons: str | None = field(default=None, metadata={"help": "training comparisons, JSONL"})
    eval_comparisons: str | None = field(default=None, metadata={"help": "held-out comparisons, JSONL"})
    eval_fraction: float = field(
        default=0.1,
        metadata={"help": "without eval_comparisons, hold out this fraction of the prompts (seeded)"},
    )
    reference_data: str | None = field(
        default=None,
        metadata={
            "help": "conversations JSONL ending in reference replies (e.g. SFT demonstrations) that the "
            "normalised reward puts at 0 on average; default: the top-ranked training responses"
        },
    )
    skip_bad_records: bool = field(
        default=False, metadata={"help": "skip malformed comparison lines (logged) instead of stopping"}
    )

    learning_rate: float = field(default=1e-5, metadata={"help": "peak learning rate of AdamW"})
    epochs: int = field(
        default=1, metadata={"help": "passes over the data (InstructGPT: 1; the RM overfits beyond)"}
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "train exactly this many optimizer steps, cycling the data as needed"}
    )
    batch_prompts: int = field(
        default=8,
        metadata={"help": "prompts per micro-batch per process; each brings all of its K responses"},
    )
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step (per process)"})
    max_seq_len: int = field(
        default=1024,
        metadata={"help": "longest context + response in tokens; longer ones lose the start of the context"},
    )
    margin: float = field(
        default=0.0, metadata={"help": "demand r_better - r_worse > margin (0: InstructGPT's plain loss)"}
    )
    warmup_ratio: float = field(
        default=0.03, metadata={"help": "linear warmup over this fraction of the steps"}
    )
    warmup_steps: int | None = field(
        default=None, metadata={"help": "linear warmup over this many steps (overrides warmup_ratio)"}
    )
    lr_schedule: Literal["cosine", "constant"] = field(
        default="cosine", metadata={"help": "learning-rate decay after warmup"}
    )
    weight_decay: float = field(
        default=0.0, metadata={"help": "AdamW weight decay (not applied to biases and norms)"}
    )
    max_grad_norm: float | None = field(
        default=1.0, metadata={"help": "clip the gradient norm to this (null: no clipping)"}
    )
    seed: int = field(
        default=0, metadata={"help": "seed for data order, the held-out split, head and LoRA initialisation"}
    )
    bf16: bool | Literal["auto"] = field(
        default="auto",
        metadata={"help": "bfloat16 autocast: auto uses it where the hardware has native bf16"},
    )

    lora: bool = field(
        default=False,
        metadata={"help": "train LoRA adapters (and the full score head) instead of all weights"},
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    lora_target_modules: list[str] | str = field(
        default="all-linear", metadata={"help": "modules to adapt: 'all-linear' or a list of names"}
    )

    eval_every: int | None = field(
        default=None,
        metadata={"help": "evaluate every N steps (and at the end) when there is evaluation data"},
    )
    save_every: int | None = field(
        default=None, metadata={"help": "write a checkpoint every N steps (one is always written at the end)"}
    )
    save_limit: int | None = field(
        default=2, metadata={"help": "keep only the newest N checkpoints (null: all)"}
    )
    score_batch_size: int = field(
        default=16, metadata={"help": "sequences per forward pass when scoring references and evaluating"}
    )
    plots: bool = field(
        default=True, metadata={"help": "write calibration and reward-vs-length plots (needs matplotlib)"}
    )
    resume: bool = field(
        default=False, metadata={"help": "continue from the newest checkpoint in output_dir"}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "delete an earlier run in output_dir and start over"}
    )
    threads: int | None = field(
        default=None, metadata={"help": "torch threads (default: CHATFORGE_THREADS, else torch's choice)"}
    )
    tensorboard: bool = field(
        default=True, metadata={"help": "also log to output_dir/tensorboard when tensorboard is installed"}
    )
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise RewardConfigError(
                "invalid reward-model config:\n" + "\n".join(f"  - {p}" for p in problems)
            )

    def problems(self) -> list[str]:
        """Every reason this config cannot run (empty when it can)."""
        out: list[str] = []

        def number(
            name: str,
            *,
            minimum: float,
            inclusive: bool = True,
            integer: bool = False,
            optional: bool = False,
        ) -> None:
            value: Any = getattr(self, name)
            if value is None and optional:
                return
            kinds = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds):
                out.append(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
            elif not math.isfinite(v := float(value)) or v < minimum or (v == minimum and not inclusive):
                out.append(f"{name} must be {'>=' if inclusive else '>'} {minimum}, got {value!r}")

        def below_one(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
                out.append(f"{name} must be below 1, got {value!r}")

        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            out.append("output_dir must be a non-empty path")
        for name in ("sft_model", "comparisons", "eval_comparisons", "reference_data"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                out.append(f"{name} must be a path or name, got {value!r}")
        number("eval_fraction", minimum=0.0)
        below_one("eval_fraction")
        number("learning_rate", minimum=0.0, inclusive=False)
        number("epochs", minimum=1, integer=True)
        number("max_steps", minimum=1, integer=True, optional=True)
        number("batch_prompts", minimum=1, integer=True)
        number("grad_accum", minimum=1, integer=True)
        number("max_seq_len", minimum=2, integer=True)
        number("margin", minimum=0.0)
        number("warmup_ratio", minimum=0.0)
        below_one("warmup_ratio")
        number("warmup_steps", minimum=0, integer=True, optional=True)
        if self.lr_schedule not in ("cosine", "constant"):
            out.append(f"lr_schedule must be 'cosine' or 'constant', got {self.lr_schedule!r}")
        number("weight_decay", minimum=0.0)
        number("max_grad_norm", minimum=0.0, inclusive=False, optional=True)
        number("seed", minimum=0, integer=True)
        if self.bf16 not in (True, False, "auto"):
            out.append(f"bf16 must be true, false or 'auto', got {self.bf16!r}")
        number("lora_r", minimum=1, integer=True)
        number("lora_alpha", minimum=1, integer=True)
        number("lora_dropout", minimum=0.0)
        below_one("lora_dropout")
        targets = self.lora_target_modules
        if not (
            (isinstance(targets, str) and targets.strip())
            or (isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets))
        ):
            out.append(
                f"lora_target_modules must be 'all-linear' or a non-empty list of module names, got {targets!r}"
            )
        number("eval_every", minimum=1, integer=True, optional=True)
        number("save_every", minimum=1, integer=True, optional=True)
        number("save_limit", minimum=1, integer=True, optional=True)
        number("score_batch_size", minimum=1, integer=True)
        number("threads", minimum=1, integer=True, optional=True)
        if self.resume and self.overwrite:
            out.append("resume and overwrite contradict each other: give one")
        return out


def _end_tokens(tokenizer: Any) -> set[int]:
    """Ids a scored sequence can end with, which therefore must never be the pad id."""
    ids = set(chat.stop_token_ids(tokenizer))
    marker = tokenizer.encode(chat.end_of_turn(tokenizer), add_special_tokens=False)
    if marker:
        ids.add(int(marker[-1]))
    return ids


def reward_pad_token_id(tokenizer: Any) -> int:
    """A pad id that is not the end-of-turn or eos token: the tokenizer's own pad when it qualifies, else
    ``<|endoftext|>``, ``<pad>`` or the unknown token, else any other id (only "not the last token" matters,
    because transformers reads the rightmost non-pad position)."""
    avoid = _end_tokens(tokenizer)
    vocab = tokenizer.get_vocab()
    candidates = [
        tokenizer.pad_token_id,
        vocab.get("<|endoftext|>"),
        vocab.get("<pad>"),
        vocab.get("<|pad|>"),
        tokenizer.unk_token_id,
        tokenizer.bos_token_id,
    ]
    for candidate in candidates:
        if isinstance(candidate, int) and candidate not in avoid:
            return candidate
    return next(i for i in range(len(tokenizer)) if i not in avoid)


def prepare_tokenizer(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` that pads on the right with ``reward_pad_token_id`` (the original is left as is:
    the SFT model and its generation still pad with their own token)."""
    chat.ensure_chat_template(tokenizer)
    pad_id = reward_pad_token_id(tokenizer)
    if tokenizer.pad_token_id == pad_id and tokenizer.padding_side == "right":
        return tokenizer  # already prepared (a saved reward model's tokenizer, say)
    prepared = copy.deepcopy(tokenizer)
    prepared.pad_token = prepared.convert_ids_to_tokens(pad_id)
    prepared.padding_side = "right"
    return prepared


def encode_for_reward(
    tokenizer: Any,
    messages: chat.Conversation | Sequence[chat.Message | Mapping[str, Any]],
    max_seq_len: int | None = None,
) -> tuple[list[int], bool]:
    """Token ids of a conversation ending in the assistant reply to score, up to and including that reply's
    end-of-turn marker (never the template's trailing newline), and whether it was cut: a sequence longer than
    ``max_seq_len`` keeps its last ``max_seq_len`` tokens, so the reply and its end stay and the context loses
    its start."""
    msgs = (
        list(messages.messages) if isinstance(messages, chat.Conversation) else chat.parse_messages(messages)
    )
    chat.validate_messages(msgs, last="assistant")
    encoded = chat.encode_conversation(tokenizer, msgs)
    last = max(i for i, flag in enumerate(encoded.assistant_mask) if flag)
    ids = encoded.input_ids[: last + 1]
    truncated = max_seq_len is not None and len(ids) > max_seq_len
    if truncated:
        assert max_seq_len is not None
        ids = ids[-max_seq_len:]
    return ids, truncated


@dataclass(frozen=True)
class EncodedComparison:
    sequences: tuple[tuple[int, ...], ...]  # one per response: context + response + end-of-turn
    ranks: tuple[int, ...]

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


def encode_comparisons(
    tokenizer: Any, comparisons: Iterable[Comparison], max_seq_len: int
) -> tuple[list[EncodedComparison], int]:
    """Encoded comparisons and how many of their sequences were cut to ``max_seq_len``."""
    out = []
    cut = 0
    for comparison in comparisons:
        sequences = []
        for k in range(comparison.k):
            ids, truncated = encode_for_reward(tokenizer, comparison.conversation(k), max_seq_len)
            sequences.append(tuple(ids))
            cut += int(truncated)
        out.append(EncodedComparison(tuple(sequences), comparison.ranks))
    return out, cut


def _fingerprint(encoded: Sequence[EncodedComparison]) -> str:
    digest = hashlib.sha256()
    for item in encoded:
        digest.update(bytes(item.ranks))
        for sequence in item.sequences:
            digest.update(len(sequence).to_bytes(4, "little"))
            digest.update(b"".join(i.to_bytes(4, "little") for i in sequence))
    return digest.hexdigest()[:16]


def _pad(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded input ids and attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids.to(device), mask.to(device)


def _scores(module: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One float32 reward per row, read by the model's own head at the rightmost non-pad token."""
    output = module(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return output.logits[:, 0].float()


class _PackedScores(nn.Module):
    """Rewards of sequences packed into rows without padding: the model's trunk over the rows (each sequence its own
    causal block, from restarting position ids: ``token_loss.hidden_at``), then its score head at each sequence's
    last token. Padding every response of a micro-batch to its longest (a prompt's demonstration, ranked with the
    samples, often runs several times longer) made the trunk compute on up to 3x the real tokens. DDP wraps this
    module, so its forward is the one whose gradients are synchronised."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, last_index: torch.Tensor) -> torch.Tensor:
        model: Any = self.model
        base = base_model(model)
        trunk, head = getattr(base, base.base_model_prefix), base.score  # (head: PEFT's trainable copy with LoRA)
        hidden = token_loss.hidden_at(trunk, input_ids, position_ids, last_index)
        return head(hidden)[:, 0].float()


@dataclass
class _Batch:
    input_ids: torch.Tensor  # [rows, width]: every response of every prompt of the micro-batch, packed
    position_ids: torch.Tensor
    last_index: torch.Tensor  # [N]: flat index of each sequence's last token
    slots: torch.Tensor  # [N]: where each sequence's reward goes in the flattened [B, K] rewards
    ranks: torch.Tensor  # [B, K], 0 for empty slots
    prompts: int
    tokens: int

    def scores(self, module: nn.Module) -> torch.Tensor:
        """One float32 reward per sequence, by a ``_PackedScores`` (possibly DDP-wrapped)."""
        return module(self.input_ids, self.position_ids, self.last_index)


def _collate(
    encoded: Sequence[EncodedComparison], indices: Sequence[int], pad_id: int, device: torch.device
) -> _Batch:
    items = [encoded[i] for i in indices]
    width = max(len(item.ranks) for item in items)
    ranks = torch.zeros((len(items), width), dtype=torch.long)
    sequences: list[Sequence[int]] = []
    slots = []
    for b, item in enumerate(items):
        ranks[b, : len(item.ranks)] = torch.tensor(item.ranks)
        for k, sequence in enumerate(item.sequences):
            sequences.append(sequence)
            slots.append(b * width + k)
    lengths = [len(seq) for seq in sequences]
    rows = packing.pack_rows(lengths, range(len(sequences)), max(lengths))
    input_ids, position_ids, start = packing.lay_out(sequences, rows, pad_id)
    last_index = [start[i] + lengths[i] - 1 for i in range(len(sequences))]
    return _Batch(
        input_ids=input_ids.to(device),
        position_ids=position_ids.to(device),
        last_index=torch.tensor(last_index, dtype=torch.long, device=device),
        slots=torch.tensor(slots, dtype=torch.long, device=device),
        ranks=ranks.to(device),
        prompts=len(items),
        tokens=sum(item.tokens for item in items),
    )


def _ranked_rewards(scores: torch.Tensor, batch: _Batch) -> torch.Tensor:
    flat = torch.zeros(batch.ranks.numel(), dtype=scores.dtype, device=scores.device)
    return flat.index_copy(0, batch.slots, scores).view_as(batch.ranks)


# --------------------------------------------------------------------------------------------------------------
# The model to start from
# --------------------------------------------------------------------------------------------------------------


def _sequence_classifier(source: str, tokenizer: Any, seed: int) -> tuple[Any, Any]:
    from transformers import AutoModelForSequenceClassification

    tokenizer = prepare_tokenizer(tokenizer)
    # The head of a causal LM checkpoint is new, drawn from torch's RNG: seed it so a run is reproducible.
    with torch.random.fork_rng(devices=[]), transformers_quietly():
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=1, pad_token_id=tokenizer.pad_token_id, dtype=torch.float32
        )
    return model.eval(), tokenizer


def reward_model_from_causal_lm(model: Any, tokenizer: Any, *, seed: int = 0) -> tuple[Any, Any]:
    """A fresh one-label sequence-classification model with ``model``'s weights (through a temporary checkpoint,
    so that transformers builds the class it would build from disk) and the prepared tokenizer."""
    with tempfile.TemporaryDirectory(prefix="chatforge-rm-") as tmp:
        with transformers_quietly():
            models.save_checkpoint(model, tokenizer, Path(tmp) / "lm")
        classifier, prepared = _sequence_classifier(str(Path(tmp) / "lm"), tokenizer, seed)
    # Keep the causal LM's own origin rather than the deleted temporary directory, which peft would otherwise
    # look up (locally, then on the hub) when saving an adapter.
    origin = str(getattr(model, "name_or_path", "") or "")
    classifier.name_or_path = origin
    classifier.config._name_or_path = origin
    return classifier, prepared


def load_reward_base(name_or_path: str | os.PathLike[str], *, seed: int = 0) -> tuple[Any, Any]:
    """(sequence-classification model, prepared tokenizer) to train from: an SFT run directory, a checkpoint,
    a packaged model, ``tiny`` or a hub id (anything ``models.load_model`` accepts). float32 weights."""
    name = starting_point.resolve_start(name_or_path)
    if name == models.TINY:
        lm, tokenizer = models.build_tiny()
        return reward_model_from_causal_lm(lm, tokenizer, seed=seed)
    resolved = models.resolve(name)
    source = str(resolved.path) if resolved.path is not None else resolved.name
    try:
        tokenizer = models.load_tokenizer(name if resolved.kind == "packaged" else source)
        return _sequence_classifier(source, tokenizer, seed)
    except OSError as err:
        raise models.ModelNotFoundError(f"could not load {name!r} as a reward model: {err}") from err


def _check_reward_model(model: Any) -> None:
    config = getattr(model, "config", None)
    if (
        config is None
        or getattr(config, "num_labels", None) != 1
        or not type(model).__name__.endswith("ForSequenceClassification")
    ):
        raise RewardConfigError(
            f"the reward model must be a one-label *ForSequenceClassification model, got {type(model).__name__}; "
            "build one with reward.load_reward_base(name) or reward.reward_model_from_causal_lm(model, tokenizer)"
        )


# --------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------

Scorable = chat.Conversation | Sequence[chat.Message | Mapping[str, Any]] | tuple[Any, str]


def _as_conversation(item: Scorable) -> chat.Conversation | list[chat.Message]:
    """A conversation ending in the reply to score, from a Conversation, a message list, or a (context, reply)
    pair whose context is text (one user message), a message list or a Conversation."""
    if isinstance(item, chat.Conversation):
        return item
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], str):
        context, reply = item
        if isinstance(context, str):
            messages = [chat.Message("user", context)]
        elif isinstance(context, chat.Conversation):
            messages = list(context.messages)
        else:
            messages = chat.parse_messages(typing.cast(Sequence[Any], context))
        return [*messages, chat.Message("assistant", reply)]
    return chat.parse_messages(item)


class RewardModel:
    """A trained reward model for the stages that use it: ``score`` gives one float per (context, reply),
    shifted by the stored offset so that reference replies average 0 (``normalize=False`` gives the head's raw
    output, which equals transformers' own forward on the checkpoint)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        offset: float | None = None,
        max_seq_len: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = prepare_tokenizer(tokenizer)
        config = getattr(model, "config", None)
        self.offset = float(offset if offset is not None else getattr(config, OFFSET_KEY, 0.0) or 0.0)
        self.max_seq_len = max_seq_len if max_seq_len is not None else getattr(config, MAX_LEN_KEY, None)
        self.pad_id = int(self.tokenizer.pad_token_id)
        configured_pad = getattr(config, "pad_token_id", None)
        if configured_pad != self.pad_id:
            raise ValueError(
                f"the model's config pads with id {configured_pad} but the tokenizer with {self.pad_id}; transformers "
                "would read the score at the wrong token (load both from the same reward-model checkpoint)"
            )
        self.device = next(model.parameters()).device
        self._lean: Any = None  # LeanDecoder over the trunk, built at the first score() it can serve

    def _lean_trunk(self) -> Any:
        """The lean decoder (chatforge.decoder) over this model's trunk, in the model's own dtype, for no-grad
        scoring on a CPU: 1.82 s against transformers' 2.38 s for 8 x 148 tokens on the 135M model (bench/score.py),
        agreeing with it to ~4e-6 in float32. None where it does not apply
        (other architectures or devices): scoring then runs transformers' forward."""
        from chatforge.decoder import LeanDecoder, unsupported_reason

        if self._lean is None:
            usable = self.device.type == "cpu" and unsupported_reason(self.model, head=False) is None
            dtype = next(self.model.parameters()).dtype
            self._lean = LeanDecoder(self.model, dtype=dtype, head=False) if usable else False
        if self._lean is not False:
            self._lean.refresh()  # the weights may have changed since (a reward model still training)
            return self._lean
        return None

    def _lean_scores(self, lean: Any, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
        from chatforge.generation import left_padded

        ids, valid, positions = left_padded(sequences, self.pad_id, self.device)
        last = lean.hidden_states(ids, positions, valid.bool())[:, -1]  # left-padded: every last token at the end
        head = base_model(self.model).score
        return head(last.to(next(head.parameters()).dtype))[:, 0].float()

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, dtype: str | torch.dtype = "float32", device: str = "cpu"
    ) -> RewardModel:
        """Load a reward-model checkpoint (a run directory means its ``final/``)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        source = starting_point.resolve_start(path)
        if not (Path(source) / "config.json").is_file():
            raise models.ModelNotFoundError(f"{path} is not a reward-model checkpoint (no config.json)")
        with transformers_quietly():
            model = AutoModelForSequenceClassification.from_pretrained(
                source, dtype=models.parse_dtype(dtype)
            )
            tokenizer = AutoTokenizer.from_pretrained(source)
        _check_reward_model(model)
        return cls(model.to(device).eval(), tokenizer)

    def encode(self, item: Scorable) -> list[int]:
        return encode_for_reward(self.tokenizer, _as_conversation(item), self.max_seq_len)[0]

    @torch.no_grad()
    def score(
        self, items: Sequence[Scorable], batch_size: int = 16, *, normalize: bool = True
    ) -> list[float]:
        """Rewards of ``items`` (conversations ending in the reply to score, or (context, reply) pairs), in
        order. Batches group similar lengths so that little is spent on padding."""
        sequences = [self.encode(item) for item in items]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = [0.0] * len(sequences)
        was_training = self.model.training
        self.model.eval()
        try:
            lean = self._lean_trunk() if sequences else None
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                if lean is not None:
                    values = self._lean_scores(lean, [sequences[i] for i in chunk]).tolist()
                else:
                    input_ids, attention_mask = _pad([sequences[i] for i in chunk], self.pad_id, self.device)
                    values = _scores(self.model, input_ids, attention_mask).tolist()
                for i, value in zip(chunk, values, strict=True):
                    out[i] = value - self.offset if normalize else value
        finally:
            self.model.train(was_training)
        return out


# --------------------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardResult:
    step: int
    train_loss: float | None  # last step
    train_accuracy: float | None
    eval_loss: float | None  # last evaluation
    eval_accuracy: float | None
    offset: float  # mean raw score of the references, subtracted by RewardModel
    checkpoint_dir: Path | None
    final_dir: Path | None  # the normalised reward model (Hugging Face sequence classification)
    adapter_dir: Path | None  # LoRA runs
    eval_report: dict[str, Any] | None  # what rm_eval.json holds


# Config fields that decide which examples form each step: a resumed run with other values would not continue
# the same data order.
_PLAN_FIELDS = ("seed", "batch_prompts", "grad_accum", "max_seq_len", "lora")


class RewardTrainer(CheckpointedTrainer[RewardResult]):
    """Train a one-label sequence-classification ``model`` on ranked comparisons, in place (with LoRA, adapters
    are added; ``trainer.model`` is the model being trained). ``references`` (conversations ending in a reference
    reply) set the normalisation; default: the top-ranked responses of the training comparisons."""

    what = "reward-model"
    config_error = RewardConfigError
    plan_note = "data a hash of the tokenized comparisons"
    run_markers = ("metrics.jsonl", "final", "rm_eval.json")
    run_files = ("metrics.jsonl", "run.json", "rm_eval.json", "calibration.png", "reward_vs_length.png")
    config: RewardConfig

    def __init__(
        self,
        config: RewardConfig,
        model: Any,
        tokenizer: Any,
        train_comparisons: Iterable[Comparison],
        eval_comparisons: Iterable[Comparison] | None = None,
        references: Iterable[chat.Conversation] | None = None,
        *,
        reference_name: str | None = None,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        _check_reward_model(model)
        super().__init__(config, next(model.parameters()).device, on_log)
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.pad_id = int(self.tokenizer.pad_token_id)
        # transformers finds the scored token through the config's pad id: it must be the one we pad with.
        model.config.pad_token_id = self.pad_id

        self.train_comparisons = list(train_comparisons)
        if not self.train_comparisons:
            raise RewardDataError("no training comparisons")
        self.eval_comparisons = list(eval_comparisons) if eval_comparisons is not None else []
        self.train_encoded, train_cut = encode_comparisons(
            self.tokenizer, self.train_comparisons, config.max_seq_len
        )
        self.eval_encoded, eval_cut = encode_comparisons(
            self.tokenizer, self.eval_comparisons, config.max_seq_len
        )
        self.data_stats = {
            "train_comparisons": len(self.train_comparisons),
            "train_pairs": sum(len(c.pairs()) for c in self.train_comparisons),
            "train_truncated_sequences": train_cut,
            "eval_comparisons": len(self.eval_comparisons),
            "eval_pairs": sum(len(c.pairs()) for c in self.eval_comparisons),
            "eval_truncated_sequences": eval_cut,
            "responses_per_prompt": dict(sorted(Counter(c.k for c in self.train_comparisons).items())),
        }
        if references is not None:
            self.references = list(references)
            self.reference_name = reference_name or "given reference replies"
        else:
            self.references = [c.conversation(k) for c in self.train_comparisons for k in c.best()]
            self.reference_name = "top-ranked training responses"
        if not self.references:
            raise RewardDataError("no reference replies to normalise the reward with")
        for conversation in self.references:
            if conversation.messages[-1].role != "assistant":
                raise RewardDataError(
                    f"reference {conversation.id!r} must end with the assistant reply to score"
                )
        if config.plots and self.eval_comparisons:
            require_matplotlib()  # now, not after an hour of training
        self._fingerprint = _fingerprint(self.train_encoded)
        self._normalisation: dict[str, Any] = {}  # what publish_final_normalised adds to final/config.json

        random.seed(config.seed)
        torch.manual_seed(config.seed)  # LoRA initialisation draws from it
        if config.lora:
            model = starting_point.with_lora(model, config, task_type="SEQ_CLS")
        self.model = model
        self.trainable = starting_point.trainable_parameters(model, RewardConfigError)
        self.bf16 = common.bf16_supported(self.device) if config.bf16 == "auto" else bool(config.bf16)
        decay = [p for p in self.trainable if p.ndim >= 2]
        no_decay = [p for p in self.trainable if p.ndim < 2]
        self.optimizer = common.adamw(
            [
                {"params": decay, "weight_decay": config.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=config.learning_rate,
        )
        if self.steps_per_epoch == 0:
            raise RewardDataError(
                f"{len(self.train_encoded)} training comparisons fill fewer micro-batches than one optimizer step "
                f"takes ({config.grad_accum} accumulation x {self.dist.world_size} processes); use smaller "
                "batch_prompts, less accumulation or more data"
            )
        self.total_steps = config.max_steps or self.steps_per_epoch * config.epochs
        warmup = (
            config.warmup_steps
            if config.warmup_steps is not None
            else math.ceil(config.warmup_ratio * self.total_steps)
        )
        from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

        if config.lr_schedule == "cosine":
            self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, warmup, self.total_steps)
        else:
            self.scheduler = get_constant_schedule_with_warmup(self.optimizer, warmup)

    # ----------------------------------------------------------------------------------------------------------
    # Data plan
    # ----------------------------------------------------------------------------------------------------------

    @property
    def _per_step(self) -> int:
        return self.config.grad_accum * self.dist.world_size

    @property
    def steps_per_epoch(self) -> int:
        micro_batches = math.ceil(len(self.train_encoded) / self.config.batch_prompts)
        return micro_batches // self._per_step  # an incomplete last step is left out, as in drop_last

    def epoch_plan(self, epoch: int) -> list[list[int]]:
        """The micro-batches (lists of comparison indices) of ``epoch``, all processes together."""
        order = packing.epoch_order(len(self.train_encoded), seed=self.config.seed, epoch=epoch)
        size = self.config.batch_prompts
        return [order[i : i + size] for i in range(0, len(order), size)]

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # ----------------------------------------------------------------------------------------------------------
    # Training
    # ----------------------------------------------------------------------------------------------------------

    def _run(self) -> RewardResult:
        config = self.config
        self.model.train()
        module: nn.Module = _PackedScores(self.model)
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            module = DistributedDataParallel(module)
        self._describe_run()

        from tqdm.auto import tqdm

        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            unit="step",
            dynamic_ncols=True,
            disable=not (config.progress and self.dist.is_main),
        )
        started = time.monotonic()
        last: dict[str, Any] = {}
        evaluation: dict[str, float] = {}
        epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
        plan = self.epoch_plan(epoch)
        while self.step < self.total_steps:
            if in_epoch == self.steps_per_epoch:
                epoch, in_epoch = epoch + 1, 0
                plan = self.epoch_plan(epoch)
            # Micro-batch m of process r in this step: one process accumulating A micro-batches sees the same
            # prompts as A processes without accumulation.
            first = in_epoch * self._per_step
            mine = [plan[first + m * self.dist.world_size + self.dist.rank] for m in range(config.grad_accum)]
            step_started = time.monotonic()
            lr = float(self.scheduler.get_last_lr()[0])
            batches = [_collate(self.train_encoded, indices, self.pad_id, self.device) for indices in mine]
            last = self._train_step(module, batches)
            step_time = time.monotonic() - step_started
            self.step += 1
            in_epoch += 1
            self.log(
                {
                    "kind": "train",
                    "step": self.step,
                    "epoch": round(epoch + in_epoch / self.steps_per_epoch, 4),
                    **last,
                    "lr": lr,
                    "prompts_per_s": last["prompts"] / step_time if step_time > 0 else 0.0,
                    "elapsed": self._elapsed(started),
                }
            )
            bar.set_postfix(loss=f"{last['loss']:.4f}", acc=f"{last['accuracy']:.3f}", refresh=False)
            bar.update(1)
            done = self.step == self.total_steps
            if self.eval_encoded and ((config.eval_every and self.step % config.eval_every == 0) or done):
                evaluation = self.evaluate()
                self.log({"kind": "eval", "step": self.step, **evaluation})
            if self._save_due():
                self.save_checkpoint(self._elapsed(started))
        bar.close()
        if self.eval_encoded and not evaluation:  # resumed from the final checkpoint: nothing was trained
            evaluation = self.evaluate()
        offset, spread = self.normalise()
        final_dir, adapter_dir = self.publish_final_normalised(offset, spread)
        report = None
        if self.eval_comparisons and self.dist.is_main:
            scorer = RewardModel(self.model, self.tokenizer, offset=offset, max_seq_len=config.max_seq_len)
            report = evaluate_reward_model(
                scorer,
                self.eval_comparisons,
                self.output_dir,
                batch_size=config.score_batch_size,
                plots=config.plots,
            )
            log.info(
                "held-out pairwise accuracy %.3f over %d pairs", report["accuracy"] or 0.0, report["pairs"]
            )
        self.dist.barrier()
        return RewardResult(
            step=self.step,
            train_loss=last.get("loss"),
            train_accuracy=last.get("accuracy"),
            eval_loss=evaluation.get("eval_loss"),
            eval_accuracy=evaluation.get("eval_accuracy"),
            offset=offset,
            checkpoint_dir=self.checkpoint_dir(self.step),
            final_dir=final_dir,
            adapter_dir=adapter_dir,
            eval_report=report,
        )

    def _train_step(self, module: nn.Module, batches: list[_Batch]) -> dict[str, Any]:
        """One optimizer step over this process's micro-batches; the returned numbers cover every process."""
        local_prompts = sum(b.prompts for b in batches)
        (total_prompts,) = self.dist.sum([local_prompts])
        # Every training comparison has a pair, so each micro-batch's loss is a mean over its prompts; weighting
        # it by its share of the step's prompts (times world size, which DDP's averaging divides back out) makes
        # the step's gradient that of the mean over all the step's prompts, however they were split.
        loss_sum = correct = pairs = tokens = 0.0
        reward_sum = reward_square_sum = responses = 0.0
        for i, batch in enumerate(batches):
            sync = i == len(batches) - 1
            no_sync = getattr(module, "no_sync", None)
            with contextlib.nullcontext() if sync or no_sync is None else no_sync():
                with self._autocast():
                    scores = batch.scores(module)
                loss, stats = losses.ranking_loss(
                    _ranked_rewards(scores, batch), batch.ranks, self.config.margin
                )
                (loss * (stats.prompts * self.dist.world_size / total_prompts)).backward()
            loss_sum += float(loss.detach()) * stats.prompts
            correct += stats.correct
            pairs += stats.pairs
            tokens += batch.tokens
            detached = scores.detach().double()
            reward_sum += float(detached.sum())
            reward_square_sum += float((detached**2).sum())
            responses += len(detached)
        limit = self.config.max_grad_norm if self.config.max_grad_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.trainable, limit))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, correct, pairs, tokens, reward_sum, reward_square_sum, responses = self.dist.sum(
            [loss_sum, correct, pairs, tokens, reward_sum, reward_square_sum, responses]
        )
        mean = reward_sum / responses
        return {
            "loss": loss_sum / total_prompts,
            "accuracy": correct / pairs if pairs else float("nan"),
            "pairs": int(pairs),
            "prompts": int(total_prompts),
            "grad_norm": grad_norm,
            "reward_mean": mean,
            "reward_std": math.sqrt(max(reward_square_sum / responses - mean * mean, 0.0)),
            "tokens": int(tokens),
        }

    def evaluate(self) -> dict[str, float]:
        """Loss and pairwise accuracy over the held-out comparisons (each process takes a share)."""
        if not self.eval_encoded:
            return {}
        was_training = self.model.training
        self.model.eval()
        loss_sum = prompts = correct = pairs = 0.0
        size = self.config.batch_prompts
        chunks = [
            list(range(i, min(i + size, len(self.eval_encoded))))
            for i in range(0, len(self.eval_encoded), size)
        ]
        scorer = _PackedScores(self.model)
        with torch.no_grad(), self._autocast():
            for indices in chunks[self.dist.rank :: self.dist.world_size]:
                batch = _collate(self.eval_encoded, indices, self.pad_id, self.device)
                scores = batch.scores(scorer)
                loss, stats = losses.ranking_loss(
                    _ranked_rewards(scores, batch), batch.ranks, self.config.margin
                )
                loss_sum += float(loss) * stats.prompts
                prompts += stats.prompts
                correct += stats.correct
                pairs += stats.pairs
        self.model.train(was_training)
        loss_sum, prompts, correct, pairs = self.dist.sum([loss_sum, prompts, correct, pairs])
        return {
            "eval_loss": loss_sum / prompts if prompts else float("nan"),
            "eval_accuracy": correct / pairs if pairs else float("nan"),
            "eval_pairs": int(pairs),
        }

    def normalise(self) -> tuple[float, float]:
        """(mean, std) of the raw scores of the reference replies; the mean becomes the stored offset. Scored in
        float32 without autocast, as ``RewardModel.load`` scores by default, so the references of the saved
        model average 0 exactly as loaded."""
        scorer = RewardModel(self.model, self.tokenizer, offset=0.0, max_seq_len=self.config.max_seq_len)
        mine = self.references[self.dist.rank :: self.dist.world_size]
        raw = scorer.score(mine, batch_size=self.config.score_batch_size, normalize=False) if mine else []
        total, square, count = self.dist.sum([sum(raw), sum(r * r for r in raw), len(raw)])
        mean = total / count
        spread = math.sqrt(max(square / count - mean * mean, 0.0))
        if self.dist.is_main:
            log.info(
                "reward offset %.4f (std %.4f) from %d %s", mean, spread, int(count), self.reference_name
            )
        return mean, spread

    # ----------------------------------------------------------------------------------------------------------
    # What the run directory saves (see checkpoint.CheckpointedTrainer)
    # ----------------------------------------------------------------------------------------------------------

    def plan_signature(self) -> dict[str, Any]:
        return self._plan(_PLAN_FIELDS, data=self._fingerprint)

    def _checkpoint_summary(self, elapsed: float) -> dict[str, Any]:
        return {"step": self.step, "total_steps": self.total_steps, "elapsed": elapsed, "config": self.config.to_dict()}

    def publish_final_normalised(self, offset: float, spread: float) -> tuple[Path, Path | None]:
        """``final/``: the last checkpoint's model (hard-linked) with the normalisation added to its config."""
        self._normalisation = {
            OFFSET_KEY: offset,
            OFFSET_STD_KEY: spread,
            REFERENCE_KEY: self.reference_name,
            REFERENCE_COUNT_KEY: len(self.references),
            MAX_LEN_KEY: self.config.max_seq_len,
        }
        final, adapter = self.publish_final()
        for key, value in self._normalisation.items():  # the in-memory model now describes the same reward
            setattr(_base_config(self.model), key, value)
        return final, adapter

    def _fill_final(self, tmp: Path, checkpoint: Path) -> None:
        config_path = tmp / "config.json"
        values = json.loads(config_path.read_text(encoding="utf-8"))
        values.update(self._normalisation)
        config_path.unlink()  # a hard link to the checkpoint's file: replace it, never write through it
        config_path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def _describe_run(self) -> None:
        info = {
            "config": self.config.to_dict(),
            "world_size": self.dist.world_size,
            "bf16": self.bf16,
            "total_steps": self.total_steps,
            "pad_token_id": self.pad_id,
            "data": self.data_stats,
            "references": {"name": self.reference_name, "count": len(self.references)},
            "trainable_parameters": sum(p.numel() for p in self.trainable),
        }
        self.write_run_info(info)
        if self.dist.is_main:
            log.info(
                "%d training comparisons (%d pairs), %d held out; %d steps of %d micro-batch(es) x %d "
                "process(es); bf16 autocast %s; %s trainable parameters",
                self.data_stats["train_comparisons"],
                self.data_stats["train_pairs"],
                self.data_stats["eval_comparisons"],
                self.total_steps,
                self.config.grad_accum,
                self.dist.world_size,
                "on" if self.bf16 else "off",
                f"{info['trainable_parameters']:,}",
            )


def _base_config(model: Any) -> Any:
    """The transformers config under any peft wrapper."""
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


# --------------------------------------------------------------------------------------------------------------
# Data files and the command line
# --------------------------------------------------------------------------------------------------------------


def split_by_context(
    comparisons: Sequence[Comparison], fraction: float, seed: int
) -> tuple[list[Comparison], list[Comparison]]:
    """(train, held out): about ``fraction`` of the distinct contexts, with all their comparisons, are held out,
    so that no held-out prompt was seen in training (several raters may rank the same prompt)."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(comparisons):
        key = json.dumps([m.to_dict() for m in c.context], ensure_ascii=False)
        groups.setdefault(key, []).append(i)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    wanted = max(1, round(len(comparisons) * fraction))
    held: set[int] = set()
    for key in keys:
        if len(held) >= wanted:
            break
        held.update(groups[key])
    if len(held) >= len(comparisons):
        raise RewardDataError(
            f"eval_fraction {fraction} leaves no training data ({len(comparisons)} comparisons over {len(keys)} "
            "prompts)"
        )
    return [c for i, c in enumerate(comparisons) if i not in held], [
        c for i, c in enumerate(comparisons) if i in held
    ]


def _read_comparisons(path: str, strict: bool) -> list[Comparison]:
    errors: list[str] = []
    loaded = load_comparisons(path, strict=strict, errors=errors)
    for message in errors[:20]:
        log.warning("skipped %s", message)
    if len(errors) > 20:
        log.warning("... and %d more malformed lines skipped", len(errors) - 20)
    if not loaded:
        raise RewardDataError(f"{path} holds no usable comparisons")
    return loaded


def load_data(
    config: RewardConfig,
) -> tuple[list[Comparison], list[Comparison], list[chat.Conversation] | None]:
    """(train, held-out, references) as a config names them: ``comparisons``; ``eval_comparisons`` or a
    held-out ``eval_fraction`` of the prompts; ``reference_data`` (None: the trainer's default)."""
    if config.comparisons is None:
        raise RewardDataError("no training comparisons: give --comparisons FILE.jsonl")
    strict = not config.skip_bad_records
    train = _read_comparisons(config.comparisons, strict)
    if config.eval_comparisons is not None:
        held_out = _read_comparisons(config.eval_comparisons, strict)
    elif config.eval_fraction > 0:
        train, held_out = split_by_context(train, config.eval_fraction, config.seed)
    else:
        held_out = []
    references = None
    if config.reference_data is not None:
        references = read_conversations(config.reference_data)
        for conversation in references:
            if conversation.messages[-1].role != "assistant":
                raise RewardDataError(
                    f"{conversation.id}: a reference conversation must end with the assistant reply to score"
                )
    return train, held_out, references


_ALIASES = {"sft_model": ["--sft"], "output_dir": ["--out"], "learning_rate": ["--lr"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rm`` command's flags: --config YAML, and one flag per RewardConfig field (flags beat the YAML)."""
    add_config_arguments(parser, RewardConfig, _ALIASES)


def config_from_args(args: argparse.Namespace) -> RewardConfig:
    """The config a command line describes: the --config YAML (if any) with the given flags on top."""
    return typing.cast(RewardConfig, config_from_args_of(RewardConfig, args))


_COMMAND_ERRORS = (
    RewardConfigError,
    RewardDataError,
    ComparisonError,
    SFTDataError,
    chat.ConversationError,
    models.ModelNotFoundError,
    FileExistsError,
    PlottingUnavailable,
)


def run_command(args: argparse.Namespace) -> int:
    """``chatforge rm``: load the start model and comparisons, train, normalise, evaluate."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = config_from_args(args)
        if config.sft_model is None:
            raise RewardConfigError(
                "no model to start from: give --sft RUN_DIR_OR_MODEL (or sft_model in the YAML)"
            )
        models.set_threads(config.threads)
        train, held_out, references = load_data(config)
        model, tokenizer = load_reward_base(config.sft_model, seed=config.seed)
        trainer = RewardTrainer(
            config,
            model,
            tokenizer,
            train,
            held_out or None,
            references,
            reference_name=config.reference_data,
        )
        result = trainer.train()
    except _COMMAND_ERRORS as err:
        print(f"chatforge rm: error: {err}", file=sys.stderr)
        return 2
    if trainer.dist.is_main:
        lines = [
            f"done: {result.step} steps, last loss {result.train_loss:.4f}"
            if result.train_loss is not None
            else "done"
        ]
        if result.eval_accuracy is not None:
            lines.append(
                f"held-out pairwise accuracy {result.eval_accuracy:.3f} (loss {result.eval_loss:.4f})"
            )
        lines.append(f"reward model: {result.final_dir} (offset {result.offset:.4f})")
        if result.eval_report is not None:
            lines.append(f"evaluation: {trainer.output_dir / 'rm_eval.json'}")
        print("\n".join(lines))
    return 0


def run_eval_command(args: argparse.Namespace) -> int:
    """``chatforge rm-eval``: evaluate a trained reward model on comparisons."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    models.set_threads(args.threads)
    try:
        reward_model = RewardModel.load(args.rm)
        comparisons = _read_comparisons(args.comparisons, strict=not args.skip_bad_records)
        report = evaluate_reward_model(
            reward_model, comparisons, args.out, batch_size=args.batch_size, plots=args.plots
        )
    except _COMMAND_ERRORS as err:
        print(f"chatforge rm-eval: error: {err}", file=sys.stderr)
        return 2
    accuracy = report["accuracy"]
    print(
        f"pairwise accuracy {accuracy:.3f} over {report['pairs']} pairs"
        if accuracy is not None
        else "no pairs",
        f"\nreport: {Path(args.out) / 'rm_eval.json'}",
        sep="",
    )
    return 0


def register_cli(subparsers: Any) -> None:
    """Add ``rm`` (train a reward model) and ``rm-eval`` (evaluate one) to a ``chatforge`` sub-parser set."""
    parser = subparsers.add_parser(
        "rm",
        help="train a reward model on ranked comparisons",
        description="Train a reward model (the SFT model with a scalar head) on K-wise rankings with "
        "InstructGPT's loss, normalise it so reference replies score 0, and evaluate it on held-out "
        "comparisons. Run it under `torchrun --nproc_per_node=N` to train on N processes.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run_command)

    evaluate = subparsers.add_parser(
        "rm-eval",
        help="evaluate a reward model on comparisons",
        description="Pairwise accuracy (overall, per category, per rater), calibration and length bias of a "
        "reward model on a comparisons file; writes rm_eval.json and plots into --out.",
    )
    evaluate.add_argument(
        "--rm", required=True, help="reward-model checkpoint or `chatforge rm` run directory"
    )
    evaluate.add_argument("--comparisons", required=True, help="comparisons JSONL")
    evaluate.add_argument("--out", required=True, help="directory for rm_eval.json and the plots")
    evaluate.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    evaluate.add_argument(
        "--plots", action=argparse.BooleanOptionalAction, default=True, help="write PNG plots"
    )
    evaluate.add_argument(
        "--skip-bad-records", action="store_true", help="skip malformed lines instead of stopping"
    )
    evaluate.add_argument("--threads", type=int, default=None, help="torch threads")
    evaluate.set_defaults(func=run_eval_command)


def main(argv: Sequence[str] | None = None) -> int:
    """``chatforge rm`` on its own, same flags (for torchrun: ``-m chatforge.train rm`` once registered there)."""
    parser = argparse.ArgumentParser(
        prog="chatforge rm", description="Train a reward model on ranked comparisons."
    )
    add_arguments(parser)
    return run_command(parser.parse_args(argv))
