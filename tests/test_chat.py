"""Chat format: validation, templates, round trips and assistant masks."""

from __future__ import annotations

import re

import pytest

from chatforge import chat
from chatforge.chat import Conversation, ConversationError, Message

TWO_TURNS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there! ¿Qué tal? 你好 🙂"},
    {"role": "assistant", "content": "Hello. I am an AI assistant."},
    {"role": "user", "content": "What is 2+2?\n\nThink step by step."},
    {"role": "assistant", "content": "2+2 = 4.\nDone."},
]


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([], "empty"),
        ([{"role": "user", "content": "   "}], "message 0 (user) is empty"),
        ([{"role": "robot", "content": "hi"}], "unknown role 'robot'"),
        ([{"role": "user"}], "missing 'content'"),
        ([{"content": "hi"}], "missing 'role'"),
        ([{"role": "user", "content": 5}], "content must be a string"),
        ([{"role": "assistant", "content": "hi"}], "must start with a user message"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "user follows user"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "system message may only come first"),
        ([{"role": "system", "content": "be nice"}], "only a system message"),
        ([{"role": "user", "content": "bad \ud800 surrogate"}], "invalid text"),
        ([{"role": "user", "content": "nul\x00"}], "NUL"),
        ("hello", "must be a list"),
        (["hello"], "expected an object"),
    ],
)
def test_bad_conversations_are_rejected_by_name(messages, problem):
    with pytest.raises(ConversationError, match=re.escape(problem)):
        Conversation.from_messages(messages)


def test_size_limit_and_last_role():
    msgs = chat.parse_messages([{"role": "user", "content": "x" * 50}])
    with pytest.raises(ConversationError, match="too long: 50 characters, the limit is 10"):
        chat.validate_messages(msgs, max_chars=10)
    with pytest.raises(ConversationError, match="last message must be from the assistant"):
        chat.validate_messages(msgs, last="assistant")


def test_conversation_keeps_source_and_id():
    conv = Conversation.from_messages(TWO_TURNS, id="abc", source="unit")
    assert conv.system == "You are terse."
    assert conv.to_dicts() == TWO_TURNS
    assert (conv.id, conv.source, len(conv)) == ("abc", "unit", 5)


@pytest.mark.parametrize("fixture", ["smol_tokenizer", "gemma_tokenizer"])
def test_template_round_trip(fixture, request):
    tokenizer = request.getfixturevalue(fixture)
    encoded = chat.encode_conversation(tokenizer, TWO_TURNS)
    text = chat.render(tokenizer, TWO_TURNS)
    # tokens decode back to exactly the rendered text, and turn-by-turn tokenization equals the template's own
    assert tokenizer.decode(encoded.input_ids) == text
    assert encoded.input_ids == tokenizer.apply_chat_template(TWO_TURNS, tokenize=True, return_dict=False)
    # the prompt for the next turn is a prefix of the full conversation's tokens
    prompt = chat.encode_prompt(tokenizer, TWO_TURNS[:-1])
    assert encoded.input_ids[: len(prompt)] == prompt


@pytest.mark.parametrize("fixture", ["smol_tokenizer", "gemma_tokenizer"])
def test_assistant_mask_is_exact_to_the_token(fixture, request):
    tokenizer = request.getfixturevalue(fixture)
    encoded = chat.encode_conversation(tokenizer, TWO_TURNS)
    eot = chat.end_of_turn(tokenizer)
    # the masked tokens are the replies and their end-of-turn markers, nothing else
    spans: list[list[int]] = []
    previous = 0
    for token, bit in zip(encoded.input_ids, encoded.assistant_mask, strict=True):
        if bit and not previous:
            spans.append([])
        if bit:
            spans[-1].append(token)
        previous = bit
    assert [tokenizer.decode(s) for s in spans] == [
        "Hello. I am an AI assistant." + eot,
        "2+2 = 4.\nDone." + eot,
    ]
    # and each reply span starts right after the generation prompt the model sees at inference
    prompt = chat.encode_prompt(tokenizer, TWO_TURNS[:1] + TWO_TURNS[1:2])
    assert encoded.assistant_mask[len(prompt) - 1] == 0
    assert encoded.assistant_mask[len(prompt)] == 1


def test_gemma_base_gets_its_own_turn_tokens(gemma_tokenizer):
    text = chat.render(gemma_tokenizer, TWO_TURNS[:2], add_generation_prompt=True)
    assert text == (
        "<bos><start_of_turn>user\nYou are terse.\n\nHi there! ¿Qué tal? 你好 🙂<end_of_turn>\n<start_of_turn>model\n"
    )
    assert chat.end_of_turn(gemma_tokenizer) == "<end_of_turn>"
    assert gemma_tokenizer.convert_tokens_to_ids("<end_of_turn>") in chat.stop_token_ids(gemma_tokenizer)
    assert chat.stop_strings(gemma_tokenizer) == []


def test_smollm_keeps_its_own_template(smol_tokenizer):
    assert "<|im_start|>" in smol_tokenizer.chat_template
    assert chat.end_of_turn(smol_tokenizer) == "<|im_end|>"
    assert chat.stop_token_ids(smol_tokenizer) == [smol_tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_chatml_fallback_for_a_tokenizer_without_template(smol_tokenizer):
    import copy

    bare = copy.deepcopy(smol_tokenizer)
    bare.chat_template = None
    # pretend it lacks Gemma's tokens too: the fallback is ChatML text
    assert chat.ensure_chat_template(bare) == chat.CHATML_TEMPLATE
    encoded = chat.encode_conversation(bare, TWO_TURNS[1:3])
    assert bare.decode(encoded.input_ids) == chat.render(bare, TWO_TURNS[1:3])


def test_template_saved_with_a_checkpoint(tiny, tmp_path):
    from transformers import AutoTokenizer

    from chatforge import models

    model, tokenizer = tiny
    models.save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    assert reloaded.chat_template == tokenizer.chat_template
    assert chat.render(reloaded, TWO_TURNS) == chat.render(tokenizer, TWO_TURNS)


def test_load_conversation_json():
    conv = chat.load_conversation_json('{"messages": [{"role": "user", "content": "hi"}]}')
    assert conv.messages == (Message("user", "hi"),)
    with pytest.raises(ConversationError, match="not valid JSON"):
        chat.load_conversation_json("{nope")


@pytest.mark.parametrize("fixture", ["smol_tokenizer", "gemma_tokenizer"])
def test_mask_when_a_user_turn_contains_the_reply(fixture, request):
    tokenizer = request.getfixturevalue(fixture)
    eot = chat.end_of_turn(tokenizer)
    messages = [
        {"role": "user", "content": "Say Yes"},
        {"role": "assistant", "content": "Yes"},
        {"role": "user", "content": "Yes"},
        {"role": "assistant", "content": "Yes"},
    ]
    encoded = chat.encode_conversation(tokenizer, messages)
    masked = [t for t, bit in zip(encoded.input_ids, encoded.assistant_mask, strict=True) if bit]
    assert tokenizer.decode(masked) == ("Yes" + eot) * 2
    assert encoded.input_ids == tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)


def test_long_conversations_encode_in_linear_time(smol_tokenizer):
    import time

    messages = []
    for i in range(200):
        messages += [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"answer {i}"}]
    start = time.perf_counter()
    encoded = chat.encode_conversation(smol_tokenizer, messages)
    assert time.perf_counter() - start < 2.0  # rendering every prefix took ~40 s here
    assert sum(encoded.assistant_mask) == sum(
        len(smol_tokenizer.encode(f"answer {i}<|im_end|>", add_special_tokens=False)) for i in range(200)
    )


def test_mask_with_a_template_that_rewrites_replies(smol_tokenizer):
    """A template that trims replies cannot be searched for the reply text: the prefix-by-prefix path handles it."""
    import copy

    tokenizer = copy.deepcopy(smol_tokenizer)
    tokenizer.chat_template = (
        "{%- for message in messages -%}"
        "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] | trim) + '<|im_end|>\n' }}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}"
    )
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  Hello there.  "}]
    encoded = chat.encode_conversation(tokenizer, messages)
    masked = [t for t, bit in zip(encoded.input_ids, encoded.assistant_mask, strict=True) if bit]
    assert tokenizer.decode(masked) == "Hello there.<|im_end|>"
