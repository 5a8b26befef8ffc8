"""Messages, conversations, chat templates and assistant-token masks.

Everything that turns a conversation into tokens goes through this module, so that SFT, the reward model, PPO,
the server and the evaluators all see exactly the same text. Three rules hold throughout:

* a conversation is validated before it is rendered, and a bad one fails with a message that names the problem;
* the tokenizer's own chat template is used when it has one; base models without one get chatforge's template
  (Gemma's own turn tokens for Gemma, ChatML text markers otherwise), and that template is saved into every
  checkpoint chatforge writes, so any tool that reads chat templates can chat with it;
* training sequences are tokenized turn by turn, exactly as the prompt is tokenized at inference time, so the
  assistant mask is exact to the token and never depends on how a BPE merge falls across a turn boundary.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")

# Large enough for long real ChatGPT conversations, small enough that a pasted file cannot exhaust memory.
DEFAULT_MAX_CHARS = 200_000


class ConversationError(ValueError):
    """A conversation that cannot be used; the message says which message and why."""


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class Conversation:
    """A validated list of messages, plus where it came from (a data source tag and a stable id)."""

    messages: tuple[Message, ...]
    id: str | None = None
    source: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_messages(self.messages)

    @classmethod
    def from_messages(
        cls,
        messages: Iterable[Message | Mapping[str, Any]],
        *,
        id: str | None = None,
        source: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Conversation:
        return cls(tuple(parse_messages(messages)), id=id, source=source, meta=dict(meta or {}))

    def to_dicts(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.messages]

    @property
    def system(self) -> str | None:
        return self.messages[0].content if self.messages[0].role == "system" else None

    def __len__(self) -> int:
        return len(self.messages)


def parse_messages(raw: Iterable[Message | Mapping[str, Any]]) -> list[Message]:
    """Turn OpenAI-style dicts (or Messages) into Messages, rejecting anything malformed by name."""
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
        raise ConversationError(f"messages must be a list of {{role, content}} objects, got {type(raw).__name__}")
    out: list[Message] = []
    for i, item in enumerate(raw):
        if isinstance(item, Message):
            out.append(item)
            continue
        if not isinstance(item, Mapping):
            raise ConversationError(f"message {i}: expected an object with 'role' and 'content', got {type(item).__name__}")
        if "role" not in item:
            raise ConversationError(f"message {i}: missing 'role'")
        if "content" not in item:
            raise ConversationError(f"message {i}: missing 'content'")
        role, content = item["role"], item["content"]
        if not isinstance(role, str) or role not in ROLES:
            raise ConversationError(f"message {i}: unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise ConversationError(f"message {i} ({role}): content must be a string, got {type(content).__name__}")
        out.append(Message(role, content))  # type: ignore[arg-type]
    return out


def validate_messages(
    messages: Sequence[Message],
    *,
    last: Literal["user", "assistant"] | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
) -> None:
    """Check roles, alternation, emptiness, text validity and size. `last` demands the final role
    ("user" for a prompt to answer, "assistant" for a training example)."""
    if len(messages) == 0:
        raise ConversationError("conversation is empty: it needs at least one user message")
    total = 0
    expected: str = "user"
    for i, m in enumerate(messages):
        if m.role not in ROLES:
            raise ConversationError(f"message {i}: unknown role {m.role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(m.content, str):
            raise ConversationError(f"message {i} ({m.role}): content must be a string")
        if not m.content.strip():
            raise ConversationError(f"message {i} ({m.role}) is empty")
        try:
            m.content.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ConversationError(f"message {i} ({m.role}) contains invalid text ({err.reason})") from None
        if "\x00" in m.content:
            raise ConversationError(f"message {i} ({m.role}) contains a NUL character")
        total += len(m.content)
        if m.role == "system":
            if i != 0:
                raise ConversationError(f"message {i}: a system message may only come first")
            continue
        if m.role != expected:
            if i == 0 or (i == 1 and messages[0].role == "system"):
                raise ConversationError(f"message {i}: the conversation must start with a user message, not {m.role}")
            raise ConversationError(
                f"message {i}: {m.role} follows {messages[i - 1].role}; user and assistant turns must alternate"
            )
        expected = "assistant" if m.role == "user" else "user"
    if total > max_chars:
        raise ConversationError(f"conversation is too long: {total} characters, the limit is {max_chars}")
    if messages[-1].role == "system":
        raise ConversationError("conversation has only a system message: it needs a user message")
    if last is not None and messages[-1].role != last:
        raise ConversationError(f"the last message must be from the {last}, not the {messages[-1].role}")


# --------------------------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------------------------

# Gemma's own turn format (the instruction-tuned Gemma 3 checkpoints use it), for the Gemma base model that ships
# without a template. Gemma has no system role: the system prompt opens the first user turn, as Google's does.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + message['content'] + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# For any other model without a template: ChatML as plain text. Models that do not know these markers learn them
# in SFT; stop strings catch the end of turn even where "<|im_end|>" is several tokens.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
)

# End-of-turn markers of the templates chatforge knows, most specific first.
_END_OF_TURN_MARKERS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>")


def ensure_chat_template(tokenizer: Any) -> str:
    """Give a tokenizer a chat template if it has none and return the template in use."""
    template = getattr(tokenizer, "chat_template", None)
    if template:
        return str(template)
    vocab = tokenizer.get_vocab()
    template = GEMMA_TEMPLATE if "<start_of_turn>" in vocab and "<end_of_turn>" in vocab else CHATML_TEMPLATE
    tokenizer.chat_template = template
    return template


def end_of_turn(tokenizer: Any) -> str:
    """The text that closes an assistant turn under this tokenizer's template."""
    template = ensure_chat_template(tokenizer)
    for marker in _END_OF_TURN_MARKERS:
        if marker in template:
            return marker
    eos = tokenizer.eos_token
    if not eos:
        raise ValueError("the chat template has no known end-of-turn marker and the tokenizer has no eos token")
    return str(eos)


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end an assistant turn: the end-of-turn token (when it is a single token) and eos."""
    ids: list[int] = []
    marker = end_of_turn(tokenizer)
    marker_ids = tokenizer.encode(marker, add_special_tokens=False)
    if len(marker_ids) == 1:
        ids.append(int(marker_ids[0]))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def stop_strings(tokenizer: Any) -> list[str]:
    """End-of-turn text that is not a single token; the generation engine watches for it in the decoded text."""
    marker = end_of_turn(tokenizer)
    return [marker] if len(tokenizer.encode(marker, add_special_tokens=False)) > 1 else []


def _as_messages(messages: Conversation | Sequence[Message | Mapping[str, Any]]) -> list[Message]:
    if isinstance(messages, Conversation):
        return list(messages.messages)
    return parse_messages(messages)


def render(
    tokenizer: Any,
    messages: Conversation | Sequence[Message | Mapping[str, Any]],
    *,
    add_generation_prompt: bool = False,
) -> str:
    """The conversation as the model sees it, as text."""
    msgs = _as_messages(messages)
    validate_messages(msgs)
    ensure_chat_template(tokenizer)
    text = tokenizer.apply_chat_template(
        [m.to_dict() for m in msgs], tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return str(text)


def encode_prompt(tokenizer: Any, messages: Conversation | Sequence[Message | Mapping[str, Any]]) -> list[int]:
    """Token ids of a conversation ending in a user turn, followed by the assistant generation prompt."""
    msgs = _as_messages(messages)
    validate_messages(msgs, last="user")
    text = render(tokenizer, msgs, add_generation_prompt=True)
    return list(tokenizer.encode(text, add_special_tokens=False))


@dataclass(frozen=True)
class EncodedConversation:
    input_ids: list[int]
    assistant_mask: list[int]  # 1 where the token is part of an assistant reply (its content and end-of-turn)

    def __len__(self) -> int:
        return len(self.input_ids)


def text_segments(
    tokenizer: Any, messages: Conversation | Sequence[Message | Mapping[str, Any]]
) -> list[tuple[str, bool]]:
    """The rendered conversation cut into (text, is_assistant) pieces whose concatenation is the full rendering.

    An assistant piece is the reply and its end-of-turn marker; whatever the template puts after the marker (a
    newline) belongs to the next prompt piece, because the model stops at the marker and never generates it.
    """
    msgs = _as_messages(messages)
    validate_messages(msgs)
    full = render(tokenizer, msgs)
    marker = end_of_turn(tokenizer)
    segments: list[tuple[str, bool]] = []
    done = 0  # characters of `full` already assigned to a segment
    generation_prompt: str | None = None
    for i, m in enumerate(msgs):
        if m.role != "assistant":
            continue
        # Fast path: templates that write the generation prompt, then the reply verbatim, then the marker (ChatML,
        # Gemma) let us find the reply in the full rendering; rendering every prefix costs O(turns^2) on long chats.
        # A user turn cannot match by accident: it is not preceded by the generation prompt.
        if generation_prompt is None:
            generation_prompt = _generation_prompt(tokenizer)
        at = full.find(generation_prompt + m.content + marker, done) if generation_prompt else -1
        if at >= 0:
            start = at + len(generation_prompt)
            end = start + len(m.content) + len(marker)
            segments.append((full[done:start], False))
            segments.append((full[start:end], True))
            done = end
            continue
        prompt = render(tokenizer, msgs[:i], add_generation_prompt=True)
        upto = render(tokenizer, msgs[: i + 1])
        if not (full.startswith(upto) and upto.startswith(prompt) and len(prompt) >= done):
            raise ValueError(
                "this chat template does not render conversations prefix by prefix; chatforge cannot locate the "
                "assistant turns in it (give the tokenizer a template where each turn only appends text)"
            )
        reply = upto[len(prompt) :]
        cut = reply.rfind(marker)  # the glue after the marker never contains it; the reply text might
        end = len(prompt) + (cut + len(marker) if cut >= 0 else len(reply))
        segments.append((full[done : len(prompt)], False))
        segments.append((full[len(prompt) : end], True))
        done = end
    segments.append((full[done:], False))
    return [(text, is_assistant) for text, is_assistant in segments if text]


def _generation_prompt(tokenizer: Any) -> str:
    """The text the template adds to open an assistant turn (e.g. "<|im_start|>assistant\\n"), or "" if that
    cannot be told apart from the rest of the rendering."""
    probe = [{"role": "user", "content": "x"}]
    closed = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=False)
    opened = tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
    return str(opened)[len(closed) :] if str(opened).startswith(str(closed)) else ""


def encode_conversation(
    tokenizer: Any, messages: Conversation | Sequence[Message | Mapping[str, Any]]
) -> EncodedConversation:
    """Token ids of a whole conversation and the mask of its assistant tokens (for SFT and reward models)."""
    ids: list[int] = []
    mask: list[int] = []
    for text, is_assistant in text_segments(tokenizer, messages):
        piece = tokenizer.encode(text, add_special_tokens=False)
        ids.extend(piece)
        mask.extend([int(is_assistant)] * len(piece))
    return EncodedConversation(ids, mask)


def load_conversation_json(text: str) -> Conversation:
    """Read a conversation saved by `chatforge chat` (/save) or any OpenAI-style {"messages": [...]} JSON."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConversationError(f"not valid JSON: {err}") from None
    raw = data.get("messages") if isinstance(data, dict) else data
    if raw is None:
        raise ConversationError("JSON object has no 'messages' list")
    return Conversation.from_messages(raw)
