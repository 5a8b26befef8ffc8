"""The lean decoder against the model's own forward pass: logits, weight refresh, LoRA, and its KV cache."""

from __future__ import annotations

import pytest
import torch

from chatforge.decoder import LeanDecoder, unsupported_reason
from chatforge.generation import SamplingParams, TorchEngine


def _left_padded(tokenizer, lengths, seed=0):
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(10, 2000, (len(lengths), width), generator=gen)
    valid = torch.zeros((len(lengths), width), dtype=torch.long)
    for i, n in enumerate(lengths):
        valid[i, width - n :] = 1
    ids[valid == 0] = tokenizer.pad_token_id
    return ids, valid, (valid.cumsum(-1) - 1).clamp(min=0)


def _reference_steps(model, ids, valid, positions, steps):
    """Last-position logits of the prefill and of `steps` greedy decode steps, by the model's own forward."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=valid, position_ids=positions, past_key_values=cache).logits[:, -1]
        out, mask, pos = [logits], valid, positions[:, -1:]
        for _ in range(steps):
            mask, pos = torch.cat([mask, torch.ones_like(mask[:, :1])], 1), pos + 1
            token = out[-1].argmax(-1, keepdim=True)
            out.append(model(input_ids=token, attention_mask=mask, position_ids=pos, past_key_values=cache).logits[:, -1])
    return out


def _lean_steps(decoder, ids, valid, positions, steps, reference):
    """The same, by the lean decoder, feeding the reference's greedy tokens so both see identical inputs."""
    cache = decoder.new_cache(ids.shape[0], 4)  # deliberately small: the cache must grow
    out = [decoder.forward(ids, positions, cache, valid.bool())]
    pos = positions[:, -1:]
    for step in range(steps):
        pos = pos + 1
        out.append(decoder.forward(reference[step].argmax(-1, keepdim=True), pos, cache))
    return out


def _tiny_qwen2(tokenizer):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.2, tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(1)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # Qwen2's q/k/v biases start at zero: make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("architecture", ["llama", "qwen2-with-biases"])
def test_float32_logits_equal_the_model_forward(tiny, architecture):
    model, tokenizer = tiny
    if architecture != "llama":
        model = _tiny_qwen2(tokenizer)
    ids, valid, positions = _left_padded(tokenizer, [9, 3, 6])
    reference = _reference_steps(model, ids, valid, positions, steps=6)
    ours = _lean_steps(LeanDecoder(model, dtype=torch.float32), ids, valid, positions, 6, reference)
    for want, got in zip(reference, ours, strict=True):
        torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4)


def test_bfloat16_logits_stay_close_to_the_model_forward(tiny):
    model, tokenizer = tiny
    ids, valid, positions = _left_padded(tokenizer, [9, 3, 6])
    reference = _reference_steps(model, ids, valid, positions, steps=4)
    ours = _lean_steps(LeanDecoder(model, dtype=torch.bfloat16), ids, valid, positions, 4, reference)
    for want, got in zip(reference, ours, strict=True):
        assert got.dtype == torch.float32
        # bf16 weights keep ~3 significant digits: the logits move by a small fraction of their spread
        assert (got - want).abs().max() < 0.05 * (want.max() - want.min())


@pytest.mark.parametrize("optimizer", ["sgd", "fused-adamw"])
def test_engine_follows_the_weights_as_they_train(tiny, optimizer):
    """An engine built once must sample from the current weights after each optimizer step (PPO relies on it).
    Fused AdamW writes the weights without bumping their version counters: the step hook must catch it."""
    _, tokenizer = tiny
    from chatforge import models

    model, _ = models.build_tiny(seed=3)
    engine = TorchEngine(model, tokenizer, decoder="lean", decode_dtype="float32")
    greedy = SamplingParams(max_new_tokens=6, temperature=0)
    prompt = engine.encode_chat([{"role": "user", "content": "Hello there"}])
    before = engine.generate([prompt], greedy)[0]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=5.0)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=0.5, fused=True)
    loss = model(torch.tensor([prompt + before.token_ids]), labels=torch.tensor([prompt + before.token_ids])).loss
    (-loss).backward()  # push away from what it said
    opt.step()
    after = engine.generate([prompt], greedy)[0]
    fresh = TorchEngine(model, tokenizer, decoder="transformers").generate([prompt], greedy)[0]
    assert after.token_ids == fresh.token_ids
    assert after.token_ids != before.token_ids


def test_lora_adapters_are_merged_and_can_be_disabled(tiny):
    from peft import LoraConfig, get_peft_model

    from chatforge import models

    base, tokenizer = models.build_tiny(seed=4)
    ids, valid, positions = _left_padded(tokenizer, [7, 5])
    plain = _reference_steps(base, ids, valid, positions, steps=2)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    model = get_peft_model(base, config).eval()
    decoder = LeanDecoder(model, dtype=torch.float32)
    with_adapters = _reference_steps(model, ids, valid, positions, steps=2)
    ours = _lean_steps(decoder, ids, valid, positions, 2, with_adapters)
    for want, got in zip(with_adapters, ours, strict=True):
        torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4)
    assert (with_adapters[0] - plain[0]).abs().max() > 0.1  # the adapters really change the model
    with model.disable_adapter():
        decoder.refresh()
        ours = _lean_steps(decoder, ids, valid, positions, 2, plain)
    for want, got in zip(plain, ours, strict=True):
        torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4)


def test_cache_rows_can_leave_join_and_be_trimmed(tiny):
    """What the server's continuous batching does: rows leave, a new prefill joins right-aligned, padding-only
    columns are trimmed; every row's logits stay those of decoding it alone."""
    model, tokenizer = tiny
    decoder = LeanDecoder(model, dtype=torch.float32)
    ids, valid, positions = _left_padded(tokenizer, [3, 8, 5], seed=1)
    alone = []
    for b in range(3):
        n = int(valid[b].sum())
        cache = decoder.new_cache(1, 16)
        row = [decoder.forward(ids[b : b + 1, -n:], positions[b : b + 1, -n:], cache)]
        row.append(decoder.forward(row[-1].argmax(-1, keepdim=True), positions[b : b + 1, -1:] + 1, cache))
        alone.append(row)

    first = decoder.new_cache(2, 8)  # rows 0 and 1 together
    both = decoder.forward(ids[:2], positions[:2], first, valid[:2].bool())
    torch.testing.assert_close(both, torch.cat([alone[0][0], alone[1][0]]), atol=1e-4, rtol=1e-4)
    first.select(torch.tensor([0]))  # row 1 leaves: only row 0's three real columns remain in use
    first.trim()
    assert first.width == 3
    joining = decoder.new_cache(1, 8)  # row 2 is prefilled alone, then joins
    decoder.forward(ids[2:, -5:], positions[2:, -5:], joining)
    first.extend(joining)
    assert first.batch == 2 and first.width == 5
    tokens = torch.cat([alone[0][0].argmax(-1, keepdim=True), alone[2][0].argmax(-1, keepdim=True)])
    pos = torch.cat([positions[0:1, -1:], positions[2:3, -1:]]) + 1
    got = decoder.forward(tokens, pos, first)
    torch.testing.assert_close(got, torch.cat([alone[0][1], alone[2][1]]), atol=1e-4, rtol=1e-4)


def test_unsupported_models_say_why(tiny):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    _, tokenizer = tiny
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                               head_dim=16))
    assert "gemma3_text" in (unsupported_reason(gemma) or "")
    with pytest.raises(ValueError, match="cannot run this model"):
        LeanDecoder(gemma)
