"""GGUF export without llama.cpp: what is refused before any work, what the file holds (read back with the gguf
library and loaded by transformers' own GGUF reader), atomic writing, and the Ollama Modelfile. The tests that run
the file in llama.cpp are in test_llamacpp.py."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from chatforge import chat, models
from chatforge.cli import main as cli_main
from chatforge.gguf_export import (
    ExportError,
    bpe_pre_tokenizer,
    check_request,
    export_gguf,
    find_checkpoint,
    ollama_template,
)

gguf = pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny, tmp_path_factory):
    model, tokenizer = tiny
    return models.save_checkpoint(model, tokenizer, tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def tiny_f16(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    return export_gguf(tiny_checkpoint, out, quant="f16")


def _fields(path):
    reader = gguf.GGUFReader(path)
    return reader, {k: f.contents() for k, f in reader.fields.items()}


# ---- refused before any work ---------------------------------------------------------------------------------


def test_missing_checkpoint_is_refused_by_name(tmp_path):
    with pytest.raises(ExportError, match="nowhere.*does not exist"):
        export_gguf(tmp_path / "nowhere", tmp_path / "x.gguf", quant="f16")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match="holds no checkpoint"):
        export_gguf(empty, tmp_path / "x.gguf", quant="f16")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_unsupported_architecture_is_refused_by_name(tmp_path):
    other = tmp_path / "gpt2"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(ExportError, match="GPT2LMHeadModel.*supports LlamaForCausalLM, Gemma3ForCausalLM"):
        export_gguf(other, tmp_path / "x.gguf", quant="f16")
    assert not (tmp_path / "x.gguf").exists()


def test_unknown_quant_is_refused_by_name(tiny_checkpoint, tmp_path):
    with pytest.raises(ExportError, match="unknown quantization 'q3_x'"):
        export_gguf(tiny_checkpoint, tmp_path / "x.gguf", quant="q3_x")
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_kept_without_force(tiny_checkpoint, tmp_path):
    out = tmp_path / "model.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(ExportError, match="model.gguf already exists; pass --force"):
        export_gguf(tiny_checkpoint, out, quant="f16")
    assert out.read_bytes() == b"precious"
    modelfile = tmp_path / "other.Modelfile"
    modelfile.write_text("mine")
    with pytest.raises(ExportError, match="other.Modelfile already exists"):
        export_gguf(tiny_checkpoint, tmp_path / "other.gguf", quant="f16")
    assert modelfile.read_text() == "mine" and not (tmp_path / "other.gguf").exists()


def test_run_and_trainer_directories_resolve_to_their_model(tiny_checkpoint, tmp_path):
    run, trainer = tmp_path / "run", tmp_path / "sft"
    shutil.copytree(tiny_checkpoint, run / "chat")
    shutil.copytree(tiny_checkpoint, trainer / "final")
    assert find_checkpoint(run) == run / "chat"
    assert find_checkpoint(trainer) == trainer / "final"
    assert find_checkpoint(tiny_checkpoint) == tiny_checkpoint


def test_cli_refusal_exits_2_naming_the_problem(tmp_path, capsys):
    code = cli_main(["export-model", str(tmp_path / "missing-run"), "--gguf", str(tmp_path / "o.gguf"),
                     "--quant", "f16"])
    assert code == 2
    assert "missing-run does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---- what the file holds -------------------------------------------------------------------------------------


def test_f16_file_carries_hyperparameters_tokenizer_and_template(tiny, tiny_f16):
    model, tokenizer = tiny
    reader, fields = _fields(tiny_f16.gguf)
    config = model.config
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == config.num_hidden_layers
    assert fields["llama.embedding_length"] == config.hidden_size
    assert fields["llama.attention.head_count_kv"] == config.num_key_value_heads
    assert fields["llama.rope.dimension_count"] == config.hidden_size // config.num_attention_heads
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    vocab = tokenizer.get_vocab()
    assert fields["tokenizer.ggml.tokens"] == sorted(vocab, key=vocab.__getitem__)
    assert fields["tokenizer.ggml.merges"][:2] == ["Ġ t", "Ġ a"]
    types = fields["tokenizer.ggml.token_type"]
    assert types[vocab["<|im_end|>"]] == gguf.TokenType.CONTROL and types[vocab["Hello"]] == gguf.TokenType.NORMAL
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert fields["tokenizer.ggml.eot_token_id"] == vocab["<|im_end|>"]
    assert fields["tokenizer.chat_template"] == tokenizer.chat_template
    names = {t.name: t for t in reader.tensors}
    assert "output.weight" not in names  # tied: llama.cpp reuses token_embd
    assert names["token_embd.weight"].tensor_type == gguf.GGMLQuantizationType.F16
    assert names["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_f16_file_computes_the_same_logits_as_the_checkpoint(tiny, tiny_f16):
    """transformers reads GGUF itself (undoing llama.cpp's q/k layout): its logits must match the checkpoint's."""
    from transformers import AutoModelForCausalLM

    model, tokenizer = tiny
    loaded = AutoModelForCausalLM.from_pretrained(str(tiny_f16.gguf.parent), gguf_file=tiny_f16.gguf.name,
                                                  dtype=torch.float32)
    ids = torch.tensor([chat.encode_prompt(tokenizer, [{"role": "user", "content": "What is a GGUF file?"}])])
    with torch.no_grad():
        want, got = model(ids).logits, loaded(ids).logits
    assert (want - got).abs().max() < 0.05  # float16 weights
    assert torch.equal(want.argmax(-1), got.argmax(-1))


def test_an_interrupted_export_leaves_nothing(tiny_checkpoint, tmp_path, monkeypatch):
    from chatforge import gguf_export

    real = gguf_export.write_f16

    def write_then_fail(checkpoint, arch, path, *, name):
        real(checkpoint, arch, path, name=name)
        assert path.stat().st_size > 0
        raise KeyboardInterrupt  # killed after the weights were written, before the rename

    monkeypatch.setattr(gguf_export, "write_f16", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        export_gguf(tiny_checkpoint, tmp_path / "model.gguf", quant="f16")
    assert list(tmp_path.iterdir()) == []


def test_bpe_pre_tokenizers_are_named_or_refused():
    assert bpe_pre_tokenizer({"pre_tokenizer": {"type": "ByteLevel", "use_regex": True}}) == "gpt-2"
    smollm = {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                                    {"type": "ByteLevel", "use_regex": True}]}
    assert bpe_pre_tokenizer({"pre_tokenizer": smollm}) == "smollm"
    with pytest.raises(ExportError, match="unsupported BPE pre-tokenizer.*Whitespace"):
        bpe_pre_tokenizer({"pre_tokenizer": {"type": "Whitespace"}})


# ---- the Ollama Modelfile ------------------------------------------------------------------------------------


def test_modelfile_beside_the_gguf(tiny_f16):
    text = tiny_f16.modelfile.read_text()
    assert tiny_f16.modelfile == tiny_f16.gguf.with_name("tiny.Modelfile")
    assert "FROM ./tiny.gguf\n" in text
    assert 'PARAMETER stop "<|im_end|>"' in text and "PARAMETER temperature 0.7" in text
    # SmolLM2's template adds its default system prompt when a conversation has none: so does the Go template
    assert "You are a helpful AI assistant named SmolLM, trained by Hugging Face" in text
    assert '(ne (index .Messages 0).Role "system")' in text


def test_ollama_template_follows_the_chat_template(tiny, gemma_tokenizer):
    _, tokenizer = tiny
    smol, note = ollama_template(tokenizer)
    assert smol is not None and note is None and "SmolLM" in smol
    gemma, _ = ollama_template(gemma_tokenizer)
    assert gemma is not None and "<start_of_turn>" in gemma and "<bos>" not in gemma  # Ollama adds BOS itself
    plain = models.load_tokenizer("smollm2-135m-instruct")
    plain.chat_template = chat.CHATML_TEMPLATE
    chatml, _ = ollama_template(plain)
    assert chatml is not None and "SmolLM" not in chatml and "index .Messages" not in chatml
    odd = models.load_tokenizer("smollm2-135m-instruct")
    odd.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:"
    none, why = ollama_template(odd)
    assert none is None and "neither ChatML nor Gemma" in why


def test_request_checks_name_the_output_problem(tiny_checkpoint, tmp_path):
    with pytest.raises(ExportError, match=r"should end in \.gguf"):
        check_request(tiny_checkpoint, tmp_path / "model.bin", "f16")
    with pytest.raises(ExportError, match="directory .*does not exist"):
        check_request(tiny_checkpoint, tmp_path / "no" / "model.gguf", "f16")
