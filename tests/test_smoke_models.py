"""The real packaged models load offline from their PyPI packages and answer a chat message."""

from __future__ import annotations

import pytest

from chatforge import chat, models
from chatforge.generation import SamplingParams, TorchEngine

pytestmark = pytest.mark.smoke


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_packaged_model_answers_a_chat_message(name):
    model, tokenizer = models.load_model(name)
    assert models.resolve(name, convert=False).path is not None
    engine = TorchEngine(model, tokenizer)
    prompt = engine.encode_chat([{"role": "user", "content": "What is the capital of France?"}])
    reply = engine.generate([prompt], SamplingParams(max_new_tokens=24, temperature=0))[0]
    assert reply.text.strip(), reply
    if name == "smollm2-135m-instruct":
        assert "Paris" in reply.text
        assert reply.finish_reason == "stop"  # an instruct model ends its turn by itself
    # the checkpoint dir is a plain HF directory with the chat template, loadable by any tool
    path = models.resolve(name, convert=False).path
    assert path is not None and (path / "model.safetensors").is_file() and (path / "chat_template.jinja").is_file()
    assert chat.render(tokenizer, [{"role": "user", "content": "hi"}])
