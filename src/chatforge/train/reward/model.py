"""The reward model the later stages score with, and the model a reward-model run starts from.

* ``RewardModel``: ``RewardModel.load(dir).score(items)`` gives one float per (context, reply), shifted by the
  offset stored in the checkpoint's config so that reference replies average 0;
* ``load_reward_base`` / ``reward_model_from_causal_lm``: a one-label ``AutoModelForSequenceClassification``
  with the SFT model's weights and a new, seeded ``score`` head, to train.
"""

from __future__ import annotations

import os
import tempfile
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from chatforge import chat, models
from chatforge.decoder import base_model
from chatforge.quiet import transformers_quietly
from chatforge.train import starting_point
from chatforge.train.reward.config import RewardConfigError
from chatforge.train.reward.encoding import encode_for_reward, prepare_tokenizer

# Keys chatforge adds to the saved Hugging Face config of a reward model.
OFFSET_KEY = "chatforge_reward_offset"  # mean raw score of the reference responses; RewardModel subtracts it
OFFSET_STD_KEY = "chatforge_reward_reference_std"  # spread of those raw scores (the reward's natural scale)
REFERENCE_KEY = "chatforge_reward_reference"  # what the references were
REFERENCE_COUNT_KEY = "chatforge_reward_reference_count"
MAX_LEN_KEY = "chatforge_reward_max_seq_len"  # longer inputs are cut from the left, in training and scoring


# --------------------------------------------------------------------------------------------------------------
# The model a reward-model run trains
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


def check_reward_model(model: Any) -> None:
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


def normalisation_keys(
    offset: float, spread: float, reference_name: str, reference_count: int, max_seq_len: int
) -> dict[str, Any]:
    """What a trained reward model's saved config records about its normalisation (and its input length)."""
    return {
        OFFSET_KEY: offset,
        OFFSET_STD_KEY: spread,
        REFERENCE_KEY: reference_name,
        REFERENCE_COUNT_KEY: reference_count,
        MAX_LEN_KEY: max_seq_len,
    }


def base_config(model: Any) -> Any:
    """The transformers config under any peft wrapper."""
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


# --------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------


def right_padded(
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


def head_scores(module: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One float32 reward per row, read by the model's own head at the rightmost non-pad token."""
    output = module(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return output.logits[:, 0].float()


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

    def lean_trunk(self) -> Any:
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

    def lean_scores(self, lean: Any, sequences: Sequence[Sequence[int]]) -> torch.Tensor:
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
        check_reward_model(model)
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
            lean = self.lean_trunk() if sequences else None
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                if lean is not None:
                    values = self.lean_scores(lean, [sequences[i] for i in chunk]).tolist()
                else:
                    input_ids, attention_mask = right_padded([sequences[i] for i in chunk], self.pad_id, self.device)
                    values = head_scores(self.model, input_ids, attention_mask).tolist()
                for i, value in zip(chunk, values, strict=True):
                    out[i] = value - self.offset if normalize else value
        finally:
            self.model.train(was_training)
        return out
