"""SFT batch layout and loss math: assistant-only targets, packing isolation, head-only-at-targets == full logits."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from chatforge import chat
from chatforge.train import packing, token_loss


def conversation(user: str, reply: str, *more: str) -> chat.Conversation:
    contents = [user, reply, *more]
    return chat.Conversation.from_messages(
        [{"role": ("user", "assistant")[i % 2], "content": c} for i, c in enumerate(contents)]
    )


def full_logits_loss(model, batch: packing.PackedBatch) -> torch.Tensor:
    """The reference: the model's own forward over every position, then CE at the target positions."""
    logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False).logits
    picked = logits.reshape(-1, logits.shape[-1]).index_select(0, batch.target_index).float()
    return F.cross_entropy(picked, batch.targets, reduction="sum")


def tiny_gemma(softcap: float | None = 3.0):
    """A random two-layer Gemma 3 with a sliding window shorter than the test sequences."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        final_logit_softcapping=softcap,
        max_position_embeddings=128,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Gemma3ForCausalLM(config).eval()


def random_examples(lengths: list[int], vocab: int) -> list[packing.Example]:
    g = torch.Generator().manual_seed(0)
    return [
        packing.Example(
            torch.randint(0, vocab, (n,), generator=g).tolist(), [0] * (n // 2) + [1] * (n - n // 2)
        )
        for n in lengths
    ]


# ------------------------------------------------------------------------------------------------------------------
# Targets: the assistant's tokens and nothing else
# ------------------------------------------------------------------------------------------------------------------


def test_targets_are_exactly_the_assistant_tokens(tiny):
    _, tokenizer = tiny
    conv = conversation("Name a colour.", "Blue.", "Another one?", "Green, like grass.")
    examples, stats = packing.encode_examples(tokenizer, [conv], max_seq_len=1024)
    batch = packing.collate(examples, [0], row_capacity=1024, pad_id=0)
    marker = chat.end_of_turn(tokenizer)
    # Hand check: the targets, decoded, are the two replies each closed by the end-of-turn marker; no prompt text.
    assert tokenizer.decode(batch.targets.tolist()) == f"Blue.{marker}Green, like grass.{marker}"
    assert stats.loss_tokens == batch.num_targets == sum(examples[0].assistant_mask)
    # Each target is the token right after the position it is predicted from.
    ids = batch.input_ids.reshape(-1)
    assert torch.equal(ids[batch.target_index + 1], batch.targets)


def test_hand_built_example_targets():
    example = packing.Example([11, 12, 13, 14, 15, 16], [0, 0, 1, 1, 0, 0])
    batch = packing.collate([example], [0], row_capacity=8, pad_id=0)
    # 13 is predicted at position 1, 14 at position 2; the user tokens 15 and 16 are nobody's target.
    assert batch.target_index.tolist() == [1, 2]
    assert batch.targets.tolist() == [13, 14]
    assert example.num_targets == 2


def test_user_tokens_as_labels_do_not_change_the_loss(tiny):
    model, tokenizer = tiny
    parts = token_loss.lm_parts(model)
    conv = conversation("What is 2+2?", "It is 4.")
    examples, _ = packing.encode_examples(tokenizer, [conv], max_seq_len=1024)
    # The template's text after the reply's end-of-turn marker belongs to the next prompt, not to the assistant;
    # add a few user tokens after it so that there is more than a newline to change.
    rendered = examples[0]
    example = packing.Example([*rendered.input_ids, 100, 200, 300], [*rendered.assistant_mask, 0, 0, 0])
    assert example.assistant_mask[-4:] == [0, 0, 0, 0]

    def loss_of(ex: packing.Example) -> torch.Tensor:
        b = packing.collate([ex], [0], row_capacity=1024, pad_id=0)
        with torch.no_grad():
            return token_loss.packed_lm_loss(parts, b.input_ids, b.position_ids, b.target_index, b.targets)

    # Change the user's trailing tokens (labels of the positions after the reply): the loss does not move.
    last_reply = max(i for i, m in enumerate(example.assistant_mask) if m)
    changed_user = list(example.input_ids)
    for i in range(last_reply + 1, len(changed_user)):
        changed_user[i] = (changed_user[i] + 7) % len(tokenizer)
    assert loss_of(packing.Example(changed_user, example.assistant_mask)) == loss_of(example)
    # Change one assistant token: the loss does change.
    changed_reply = list(example.input_ids)
    changed_reply[last_reply - 1] = (changed_reply[last_reply - 1] + 7) % len(tokenizer)
    assert loss_of(packing.Example(changed_reply, example.assistant_mask)) != loss_of(example)


def test_loss_matches_hand_computed_cross_entropy(tiny):
    model, tokenizer = tiny
    conv = conversation("Say hi.", "Hi there!")
    examples, _ = packing.encode_examples(tokenizer, [conv], max_seq_len=1024)
    ids, mask = examples[0].input_ids, examples[0].assistant_mask
    batch = packing.collate(examples, [0], row_capacity=1024, pad_id=0)
    with torch.no_grad():
        ours = token_loss.packed_lm_loss(
            token_loss.lm_parts(model), batch.input_ids, batch.position_ids, batch.target_index, batch.targets
        )
        log_probs = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float().log_softmax(-1)
    by_hand = -sum(log_probs[t - 1, ids[t]] for t in range(1, len(ids)) if mask[t])
    everything = -sum(log_probs[t - 1, ids[t]] for t in range(1, len(ids)))
    assert ours.item() == pytest.approx(float(by_hand), rel=1e-5)
    assert ours.item() < float(everything)  # the prompt tokens are not in it


def test_truncation_and_dropping_are_counted(tiny):
    _, tokenizer = tiny
    short = conversation("Hi.", "Hello!")
    long = conversation("Tell me a story. " * 5, "Once upon a time " * 40)
    examples, _ = packing.encode_examples(tokenizer, [short], max_seq_len=1024)
    prompt_len = examples[0].assistant_mask.index(1)
    # Cut just after the long one's prompt: no assistant token survives for it, so it is dropped.
    long_examples, _ = packing.encode_examples(tokenizer, [long], max_seq_len=1024)
    long_prompt = long_examples[0].assistant_mask.index(1)
    _, stats = packing.encode_examples(tokenizer, [short, long], max_seq_len=long_prompt)
    assert (stats.truncated, stats.dropped) == (1, 1)
    kept, stats = packing.encode_examples(tokenizer, [short, long], max_seq_len=long_prompt + 10)
    assert (stats.truncated, stats.dropped, len(kept)) == (1, 0, 2)
    assert max(len(e) for e in kept) == long_prompt + 10
    assert prompt_len < len(examples[0])


def test_a_conversation_must_end_with_the_assistant(tiny):
    _, tokenizer = tiny
    with pytest.raises(chat.ConversationError, match=r"conversation 1 .*ends with a user message"):
        packing.encode_examples(tokenizer, [conversation("a", "b"), conversation("a", "b", "c")], 64)


# ------------------------------------------------------------------------------------------------------------------
# Packing: no attention across conversations
# ------------------------------------------------------------------------------------------------------------------


def test_packed_conversation_equals_it_alone_llama(tiny):
    model, tokenizer = tiny
    convs = [
        conversation(f"What is {i} times {i + 3}?", f"{i} times {i + 3} is {i * (i + 3)}." * (1 + i % 3))
        for i in range(5)
    ]
    examples, _ = packing.encode_examples(tokenizer, convs, max_seq_len=1024)
    parts = token_loss.lm_parts(model)
    packed = packing.collate(examples, range(5), row_capacity=1024, pad_id=0)
    assert packed.input_ids.shape[0] == 1  # all five share one row
    with torch.no_grad():
        together = token_loss.packed_lm_loss(
            parts, packed.input_ids, packed.position_ids, packed.target_index, packed.targets
        )
        alone = [
            token_loss.packed_lm_loss(parts, b.input_ids, b.position_ids, b.target_index, b.targets)
            for b in (packing.collate(examples, [i], row_capacity=1024, pad_id=0) for i in range(5))
        ]
        # Logits too, position by position: the third conversation's logits in the pack equal its logits alone.
        full = model(input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False).logits[0]
        starts = [*(packed.position_ids[0] == 0).nonzero().flatten().tolist(), packed.input_ids.shape[1]]
        start, end = starts[2], starts[3]  # the third conversation in the row
        single = model(input_ids=packed.input_ids[:, start:end], use_cache=False).logits[0]
    assert together.item() == pytest.approx(sum(a.item() for a in alone), rel=1e-5)
    torch.testing.assert_close(full[start:end], single, atol=1e-4, rtol=1e-4)
    # Without the position-id restarts (one long causal sequence) the result differs: the test can fail.
    with torch.no_grad():
        leaky = model(input_ids=packed.input_ids, use_cache=False).logits[0]
    assert not torch.allclose(leaky[start:end], single, atol=1e-3)


def test_packed_conversation_equals_it_alone_gemma_sliding_window_and_padding():
    model = tiny_gemma()
    examples = random_examples([9, 13, 7, 11], vocab=300)
    parts = token_loss.lm_parts(model)
    # Two rows of at most 24 tokens: packing plus padding of the shorter row.
    packed = packing.collate(examples, range(4), row_capacity=24, pad_id=0)
    assert packed.input_ids.shape[0] == 2 and packed.num_tokens < packed.input_ids.numel()
    with torch.no_grad():
        together = token_loss.packed_lm_loss(
            parts, packed.input_ids, packed.position_ids, packed.target_index, packed.targets
        )
        alone = sum(
            token_loss.packed_lm_loss(parts, b.input_ids, b.position_ids, b.target_index, b.targets).item()
            for b in (packing.collate(examples, [i], row_capacity=24, pad_id=0) for i in range(4))
        )
    assert together.item() == pytest.approx(alone, rel=1e-5)


def test_packed_targets_point_into_their_own_rows():
    examples = random_examples([5, 6, 7, 3], vocab=50)
    batch = packing.collate(examples, range(4), row_capacity=12, pad_id=0)
    flat = batch.input_ids.reshape(-1)
    assert torch.equal(flat[batch.target_index + 1], batch.targets)
    assert batch.num_tokens == 21 and batch.num_targets == sum(e.num_targets for e in examples)


# ------------------------------------------------------------------------------------------------------------------
# Output head only at the targets
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["llama", "gemma-softcap"])
def test_head_at_targets_equals_full_logits_loss_and_gradients(tiny, which):
    if which == "llama":
        model = copy.deepcopy(tiny[0])
        examples = random_examples([30, 17, 25], vocab=model.config.vocab_size)
    else:
        model = tiny_gemma(softcap=3.0)
        examples = random_examples([9, 13, 7], vocab=300)
    batch = packing.collate(examples, range(3), row_capacity=64, pad_id=0)
    parts = token_loss.lm_parts(model)

    ours = token_loss.packed_lm_loss(
        parts, batch.input_ids, batch.position_ids, batch.target_index, batch.targets
    )
    ours.backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    reference = full_logits_loss(model, batch)
    reference.backward()
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)
    for name, p in model.named_parameters():
        torch.testing.assert_close(ours_grads[name], p.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_head_chunks_and_generic_path_agree():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 40, bias=False)
    hidden = torch.randn(10, 8, requires_grad=True)
    targets = torch.randint(0, 40, (10,))
    results = []
    for module, chunk in ((head, 3), (head, 100), (torch.nn.Sequential(head), 4)):  # Sequential: generic path
        hidden.grad = None
        head.weight.grad = None
        loss = token_loss.head_cross_entropy(module, hidden, targets, softcap=2.0, chunk_rows=chunk)
        loss.backward()
        results.append((loss.detach(), hidden.grad.clone(), head.weight.grad.clone()))
    reference = F.cross_entropy(torch.tanh(head(hidden) / 2.0) * 2.0, targets, reduction="sum")
    for loss, grad_hidden, grad_weight in results:
        torch.testing.assert_close(loss, reference.detach())
        torch.testing.assert_close(grad_hidden, results[0][1])
        torch.testing.assert_close(grad_weight, results[0][2])
    with torch.no_grad():
        torch.testing.assert_close(
            token_loss.head_cross_entropy(head, hidden, targets, softcap=2.0), reference.detach()
        )


def test_bf16_head_is_close_to_float32(tiny):
    model, _ = tiny
    parts = token_loss.lm_parts(model)
    examples = random_examples([40, 30], vocab=model.config.vocab_size)
    batch = packing.collate(examples, range(2), row_capacity=128, pad_id=0)
    args = (parts, batch.input_ids, batch.position_ids, batch.target_index, batch.targets)
    with torch.no_grad():
        exact = token_loss.packed_lm_loss(*args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = token_loss.packed_lm_loss(*args, compute_dtype=torch.bfloat16)
    assert fast.dtype == torch.float32
    assert fast.item() == pytest.approx(exact.item(), rel=2e-2)


# ------------------------------------------------------------------------------------------------------------------
# Plans
# ------------------------------------------------------------------------------------------------------------------


def test_plans_are_deterministic_and_respect_budgets():
    lengths = [5, 9, 3, 12, 7, 8, 2, 10]
    order = packing.epoch_order(len(lengths), seed=3, epoch=1)
    assert order == packing.epoch_order(len(lengths), seed=3, epoch=1)
    assert order != packing.epoch_order(len(lengths), seed=3, epoch=2)
    by_tokens = packing.plan_micro_batches(lengths, order, batch_tokens=16)
    assert sorted(i for mb in by_tokens for i in mb) == list(range(8))
    assert all(sum(lengths[i] for i in mb) <= 16 for mb in by_tokens)
    by_count = packing.plan_micro_batches(lengths, order, batch_sequences=3)
    assert [len(mb) for mb in by_count] == [3, 3, 2]
    rows = packing.pack_rows(lengths, range(8), capacity=16)
    assert all(sum(lengths[i] for i in row) <= 16 for row in rows)
    assert len(rows) == 4  # 56 tokens in rows of 16: first-fit-decreasing reaches the minimum
