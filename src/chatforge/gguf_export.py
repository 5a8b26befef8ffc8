"""Export a chatforge checkpoint as one GGUF file (llama.cpp, Ollama, LM Studio) plus an Ollama Modelfile.

``chatforge export-model RUN_OR_CHECKPOINT --gguf OUT.gguf [--quant f16|q8_0|q4_k_m]``

What goes into the file (names and conventions as llama.cpp's own converter writes them, through the ``gguf``
library's writer and its tensor-name map):

* the architecture's hyperparameters (``llama`` for Llama-family models such as SmolLM2, ``gemma3`` for Gemma 3);
* the weights in float16 (1-D norms in float32). Llama's q/k projections are permuted from the Hugging Face
  rotate-half layout to the interleaved layout llama.cpp's rope expects; Gemma's norms store ``w`` where the model
  computes ``1 + w``, llama.cpp wants the sum;
* the tokenizer: byte-level BPE (vocabulary, token types, merges, the pre-tokenizer's name) for Llama-family
  models, SentencePiece-style BPE (vocabulary, scores from the merge order, token types) for Gemma; the special
  token ids, whether a BOS is added, the end-of-turn token;
* the chat template (Jinja), so llama.cpp, Ollama and LM Studio format conversations as chatforge does.

Quantization is llama.cpp's own (``llama_model_quantize`` from llama-cpp-python, the ``llamacpp`` extra): the
float16 file is written first, then quantized. Everything is written under a temporary name in the output's
directory and renamed into place at the end, so an interrupted export never leaves a half-written file.
Every check on the input (a checkpoint that exists, a supported architecture, a known quantization, an output that
is not already there) runs before any work.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chatforge import chat, models

# --quant name -> llama.cpp's llama_ftype (include/llama.h: LLAMA_FTYPE_MOSTLY_F16 = 1, _Q8_0 = 7, _Q4_K_M = 15)
QUANTS: dict[str, int] = {"f16": 1, "q8_0": 7, "q4_k_m": 15}

# HF architectures -> the llama.cpp architecture they are written as
ARCHITECTURES: dict[str, str] = {"LlamaForCausalLM": "llama", "Gemma3ForCausalLM": "gemma3"}


class ExportError(ValueError):
    """Input the export refuses; the message names the problem."""


@dataclass(frozen=True)
class ExportResult:
    gguf: Path
    modelfile: Path
    quant: str
    architecture: str
    size_bytes: int
    seconds: float
    template_note: str | None  # why the Modelfile has no TEMPLATE, when it has none


# --------------------------------------------------------------------------------------------------------------
# Checks that run before any work
# --------------------------------------------------------------------------------------------------------------


def find_checkpoint(source: str | os.PathLike[str]) -> Path:
    """The Hugging Face checkpoint a name points at: a checkpoint directory itself, a run directory's ``chat/``, a
    trainer output directory's ``final/``, or a packaged model (converted into the cache once)."""
    name = str(source)
    if name in models.PACKAGED:
        resolved = models.resolve(name)
        assert resolved.path is not None
        return resolved.path
    path = Path(name).expanduser()
    if not path.exists():
        raise ExportError(f"{path} does not exist (expected a run directory, a trainer output directory or a "
                          f"checkpoint directory, or one of the packaged models: {', '.join(models.PACKAGED)})")
    if not path.is_dir():
        raise ExportError(f"{path} is a file; pass a checkpoint directory (with config.json), a run directory "
                          "(its chat/ is exported) or a trainer output directory (its final/ is exported)")
    for candidate in (path, path / "chat", path / "final"):
        if (candidate / "config.json").is_file():
            return candidate
    raise ExportError(f"{path} holds no checkpoint: no config.json in it, in {path / 'chat'} (a run directory's "
                      f"model) or in {path / 'final'} (a trainer's final model)")


def read_architecture(checkpoint: Path) -> str:
    """The llama.cpp architecture name for this checkpoint, or ExportError naming the unsupported one."""
    try:
        config = json.loads((checkpoint / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ExportError(f"cannot read {checkpoint / 'config.json'}: {err}") from None
    names = config.get("architectures") or []
    for name in names:
        if name in ARCHITECTURES:
            return ARCHITECTURES[name]
    shown = ", ".join(names) or f"model_type {config.get('model_type')!r}"
    raise ExportError(f"{checkpoint} is a {shown} model; GGUF export supports {', '.join(ARCHITECTURES)} "
                      "(Llama-family models such as SmolLM2, and Gemma 3)")


def modelfile_path(out: Path) -> Path:
    """The Ollama Modelfile written beside ``out`` (one per GGUF, so a Q4 and a Q8 can share a directory)."""
    return out.with_name(out.stem + ".Modelfile")


def check_request(source: str | os.PathLike[str], out: str | os.PathLike[str], quant: str, *,
                  force: bool = False) -> tuple[Path, str, Path]:
    """Validate everything before any work: (checkpoint, architecture, output path)."""
    if quant not in QUANTS:
        raise ExportError(f"unknown quantization {quant!r}; choose one of {', '.join(QUANTS)}")
    out_path = Path(out).expanduser()
    if out_path.suffix.lower() != ".gguf":
        raise ExportError(f"the output {out_path} should end in .gguf")
    if out_path.is_dir():
        raise ExportError(f"the output {out_path} is a directory; name the .gguf file to write")
    for existing in (out_path, modelfile_path(out_path)):
        if existing.exists() and not force:
            raise ExportError(f"{existing} already exists; pass --force to replace it")
    if not out_path.parent.is_dir():
        raise ExportError(f"the output's directory {out_path.parent} does not exist")
    if quant != "f16" and not llama_cpp_available():
        raise ExportError(f"--quant {quant} uses llama.cpp's quantizer, which needs llama-cpp-python: "
                          'pip install -e ".[llamacpp]" (or export --quant f16)')
    checkpoint = find_checkpoint(source)
    return checkpoint, read_architecture(checkpoint), out_path


def llama_cpp_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


# --------------------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------------------

# The GPT-2 split (HF ByteLevel with use_regex) and Llama 3's, as tokenizer.json spells them.
_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def bpe_pre_tokenizer(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name (``tokenizer.ggml.pre``) for the way this byte-level BPE tokenizer splits text first.

    llama.cpp's converter recognises a tokenizer by hashing its output on a probe text; here the split is read from
    tokenizer.json itself, for the splits chatforge's models use. Others are refused by name rather than written
    with a split that would tokenize differently from the checkpoint."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if (kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
            and steps[1].get("use_regex", True)):
        return "smollm"  # each digit alone, then the GPT-2 split: SmolLM's own tokenizer.json
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern == _LLAMA3_SPLIT:
            return "llama-bpe"
        if pattern == _GPT2_SPLIT:
            return "gpt-2"
    raise ExportError(f"unsupported BPE pre-tokenizer {json.dumps(pre)[:200]}; GGUF export knows the GPT-2, "
                      "SmolLM and Llama 3 splits")


def _token_types(tokenizer: Any, size: int) -> tuple[list[str], list[int]]:
    """Token strings by id (``[PADn]`` where an id has none, as llama.cpp's converter writes) and their types."""
    import gguf

    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    tokens: list[str] = []
    types: list[int] = []
    for index in range(size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        tokens.append(token)
        if index in added:
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        elif token == tokenizer.unk_token:
            types.append(gguf.TokenType.UNKNOWN)
        elif re.fullmatch(r"<0x[0-9A-F]{2}>", token):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def _merges(tokenizer_json: dict[str, Any]) -> list[str]:
    merges = tokenizer_json["model"].get("merges") or []
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


def _adds_bos(tokenizer: Any) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer.encode("x", add_special_tokens=True)
    return bool(ids) and ids[0] == bos


def write_tokenizer(writer: Any, tokenizer: Any, tokenizer_json: dict[str, Any], vocab_size: int, arch: str) -> None:
    """Vocabulary, merges or scores, special tokens and the chat template."""
    import gguf

    model = tokenizer_json.get("model") or {}
    if model.get("type") != "BPE":
        raise ExportError(f"unsupported tokenizer model {model.get('type')!r}; GGUF export writes BPE tokenizers")
    tokens, types = _token_types(tokenizer, vocab_size)
    merges = _merges(tokenizer_json)
    if model.get("byte_fallback"):
        # SentencePiece-style BPE (Gemma): llama.cpp's "llama" tokenizer merges the adjacent pair whose result has
        # the highest score, so the scores carry the merge order. A token's score is minus the rank of the first
        # merge that makes it; tokens no merge makes (characters, bytes, control tokens) rank below them all.
        rank: dict[str, int] = {}
        for i, merge in enumerate(merges):
            left, _, right = merge.partition(" ")
            rank.setdefault(left + right, i)
        floor = len(merges) + 1
        scores = [float(-rank.get(t, floor)) if k == gguf.TokenType.NORMAL else -1000.0
                  for t, k in zip(tokens, types, strict=True)]
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_add_space_prefix(False)  # Gemma's normalizer only turns spaces into "▁"; it prepends none
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(bpe_pre_tokenizer(tokenizer_json))
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
    for add, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                          (writer.add_eos_token_id, tokenizer.eos_token_id),
                          (writer.add_unk_token_id, tokenizer.unk_token_id),
                          (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            add(int(token_id))
    end = tokenizer.encode(chat.end_of_turn(tokenizer), add_special_tokens=False)
    if len(end) == 1:
        writer.add_eot_token_id(int(end[0]))  # llama.cpp stops at it as at eos
    writer.add_add_bos_token(_adds_bos(tokenizer))
    writer.add_add_eos_token(False)
    writer.add_chat_template(chat.ensure_chat_template(tokenizer))


# --------------------------------------------------------------------------------------------------------------
# Hyperparameters and weights
# --------------------------------------------------------------------------------------------------------------


def _permute_for_rope(weight: np.ndarray, heads: int) -> np.ndarray:
    """HF Llama keeps each head's rotary pairs as (first half, second half); llama.cpp's "normal" rope rotates
    adjacent pairs. Interleave the halves of every head's rows."""
    rows, cols = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _rope_theta(config: Any, kind: str = "full_attention") -> float | None:
    params = getattr(config, "rope_parameters", None) or {}
    params = params.get(kind, params) if isinstance(params, dict) else {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta) if theta is not None else getattr(config, "rope_theta", None)


def write_hyperparameters(writer: Any, config: Any, arch: str) -> None:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(config.num_attention_heads))
    writer.add_head_count_kv(int(config.num_key_value_heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    if (theta := _rope_theta(config)) is not None:
        writer.add_rope_freq_base(theta)
    if arch == "llama":
        writer.add_rope_dimension_count(int(head_dim))
        scaling = getattr(config, "rope_parameters", None) or {}
        if scaling.get("rope_type", "default") not in ("default", None):
            raise ExportError(f"rope scaling {scaling.get('rope_type')!r} is not supported by the GGUF export")
    else:  # gemma3
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))
        if getattr(config, "final_logit_softcapping", None):
            writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
        layer_types = list(getattr(config, "layer_types", None) or [])
        if getattr(config, "sliding_window", None) and "sliding_attention" in layer_types:
            writer.add_sliding_window(int(config.sliding_window))
            writer.add_sliding_window_pattern([t == "sliding_attention" for t in layer_types])
            if (local := _rope_theta(config, "sliding_attention")) is not None:
                writer.add_rope_freq_base_swa(local)
        # llama.cpp scales queries by 1/sqrt(head_dim) for every Gemma 3 but the 27B
        scalar = getattr(config, "query_pre_attn_scalar", head_dim)
        if scalar != head_dim:
            raise ExportError(f"query_pre_attn_scalar {scalar} differs from head_dim {head_dim}; llama.cpp's "
                              "gemma3 would scale queries differently")


def _gguf_tensors(state: dict[str, Any], config: Any, arch: str) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, array) for every weight: matrices in float16, vectors in float32."""
    import gguf

    arch_enum = {"llama": gguf.MODEL_ARCH.LLAMA, "gemma3": gguf.MODEL_ARCH.GEMMA3}[arch]
    names = gguf.get_tensor_name_map(arch_enum, int(config.num_hidden_layers))
    tied = bool(getattr(config, "tie_word_embeddings", False))
    out: list[tuple[str, np.ndarray]] = []
    for hf_name, tensor in state.items():
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp reuses token_embd when output.weight is absent
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ExportError(f"no GGUF name for the tensor {hf_name!r} of this {arch} checkpoint")
        data = tensor.detach().float().cpu().numpy()
        if arch == "llama" and hf_name.endswith("self_attn.q_proj.weight"):
            data = _permute_for_rope(data, int(config.num_attention_heads))
        elif arch == "llama" and hf_name.endswith("self_attn.k_proj.weight"):
            data = _permute_for_rope(data, int(config.num_key_value_heads))
        if arch == "gemma3" and hf_name.endswith("norm.weight"):
            data = data + 1.0  # Gemma3RMSNorm computes x * (1 + w)
        out.append((name, data.astype(np.float16 if data.ndim >= 2 else np.float32)))
    return out


# --------------------------------------------------------------------------------------------------------------
# Writing, quantizing, the Modelfile
# --------------------------------------------------------------------------------------------------------------


def write_f16(checkpoint: Path, arch: str, path: Path, *, name: str) -> Any:
    """Write ``checkpoint`` as a float16 GGUF at ``path``; return the tokenizer (for the Modelfile)."""
    import gguf
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    tokenizer_file = checkpoint / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise ExportError(f"{checkpoint} has no tokenizer.json (a fast tokenizer is needed for its vocabulary)")
    tokenizer_json = json.loads(tokenizer_file.read_text(encoding="utf-8"))
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    state = model.state_dict()
    vocab_rows = int(state["model.embed_tokens.weight"].shape[0])

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[{"llama": gguf.MODEL_ARCH.LLAMA,
                                                          "gemma3": gguf.MODEL_ARCH.GEMMA3}[arch]])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(QUANTS["f16"])
    write_hyperparameters(writer, config, arch)
    write_tokenizer(writer, tokenizer, tokenizer_json, vocab_rows, arch)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for tensor_name, data in _gguf_tensors(state, config, arch):
        writer.add_tensor(tensor_name, data)
    del model, state
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    chat.ensure_chat_template(tokenizer)
    return tokenizer


def quantize(source: Path, target: Path, quant: str, *, threads: int | None = None) -> None:
    """llama.cpp's quantizer (``llama_model_quantize``), float16 GGUF -> ``quant``."""
    import ctypes

    from chatforge.llamacpp import init_llama_cpp

    llama_cpp = init_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANTS[quant]
    params.nthread = threads or 0  # 0: llama.cpp uses every core
    code = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
    if code != 0:
        raise RuntimeError(f"llama.cpp's quantizer failed on {source} (code {code})")


def _chatml(messages: list[dict[str, str]]) -> str:
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def _gemma(messages: list[dict[str, str]]) -> str:
    system = messages[0]["content"] + "\n\n" if messages[0]["role"] == "system" else ""
    turns = [m for m in messages if m["role"] != "system"]
    text = ""
    for i, m in enumerate(turns):
        role = "model" if m["role"] == "assistant" else m["role"]
        text += f"<start_of_turn>{role}\n{system if i == 0 else ''}{m['content']}<end_of_turn>\n"
    return text + "<start_of_turn>model\n"


_PROBES = (
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Why?"}],
    [{"role": "system", "content": "S"}, {"role": "user", "content": "A"}, {"role": "assistant", "content": "B"},
     {"role": "user", "content": "C"}],
)

# Ollama's templates are Go templates over .Messages (each .Role, .Content); Ollama adds the BOS token itself
# when the GGUF says so (tokenizer.ggml.add_bos_token), so no template writes it.
_OLLAMA_CHATML = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
_OLLAMA_CHATML_DEFAULT_SYSTEM = """{{- if or (not .Messages) (ne (index .Messages 0).Role "system") }}<|im_start|>system
%s<|im_end|>
{{ end }}""" + _OLLAMA_CHATML
_OLLAMA_GEMMA = """{{- $system := "" }}
{{- range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}{{ end }}{{ end }}
{{- $first := true }}
{{- range .Messages }}{{ if ne .Role "system" }}<start_of_turn>{{ if eq .Role "assistant" }}model{{ else }}{{ .Role }}{{ end }}
{{ if and $first $system }}{{ $system }}

{{ end }}{{ .Content }}<end_of_turn>
{{ $first = false }}{{ end }}{{ end }}<start_of_turn>model
"""


def ollama_template(tokenizer: Any) -> tuple[str | None, str | None]:
    """(Go template, None) matching the checkpoint's chat template, or (None, why not).

    The Jinja template is rendered on probe conversations and compared with the formats the Go templates above
    produce (ChatML, ChatML with a default system prompt, Gemma's turns); a template that matches none gets no
    TEMPLATE line, and Ollama falls back to reading the GGUF's own template."""
    bos = tokenizer.bos_token if _adds_bos(tokenizer) else None

    def render(messages: list[dict[str, str]]) -> str:
        text = chat.render(tokenizer, messages, add_generation_prompt=True)
        if bos and text.startswith(bos):
            text = text[len(bos):]  # the tokenizer adds it (as Ollama will)
        return text

    rendered = [render(list(p)) for p in _PROBES]
    if rendered == [_chatml(list(p)) for p in _PROBES]:
        return _OLLAMA_CHATML, None
    if rendered == [_gemma(list(p)) for p in _PROBES]:
        return _OLLAMA_GEMMA, None
    match = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", rendered[0], re.S)
    if match and "{{" not in match.group(1):
        default = [{"role": "system", "content": match.group(1)}]
        expected = [_chatml(list(p) if p[0]["role"] == "system" else default + list(p)) for p in _PROBES]
        if rendered == expected:
            return _OLLAMA_CHATML_DEFAULT_SYSTEM % match.group(1), None
    return None, ("the chat template is neither ChatML nor Gemma's turn format, so no Go TEMPLATE was written; "
                  "Ollama reads the template inside the GGUF instead")


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def modelfile_text(gguf_name: str, tokenizer: Any, context_length: int) -> tuple[str, str | None]:
    template, note = ollama_template(tokenizer)
    stops = [chat.end_of_turn(tokenizer)]
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines = [
        "# Ollama model definition written by `chatforge export-model`.",
        f"# Use:  ollama create NAME -f {gguf_name.removesuffix('.gguf')}.Modelfile && ollama run NAME",
        f"FROM ./{gguf_name}",
    ]
    if template is not None:
        lines.append(f'TEMPLATE """{template}"""')
    else:
        lines.append(f"# {note}")
    lines += [f"PARAMETER stop {_quoted(s)}" for s in stops]
    lines += [
        "PARAMETER temperature 0.7",  # chatforge's web UI samples at 0.7 with top-p 0.95
        "PARAMETER top_p 0.95",
        f"PARAMETER num_ctx {min(context_length, 8192)}",
    ]
    return "\n".join(lines) + "\n", note


def export_gguf(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    quant: str = "q8_0",
    force: bool = False,
    threads: int | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> ExportResult:
    """Export ``source`` (a run, trainer output or checkpoint directory, or a packaged model) to ``out``."""
    start = time.perf_counter()
    checkpoint, arch, out_path = check_request(source, out, quant, force=force)
    modelfile = modelfile_path(out_path)
    tmp_f16 = out_path.with_name(f".{out_path.name}.f16.tmp-{os.getpid()}")
    tmp_out = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    tmp_modelfile = modelfile.with_name(f".{modelfile.name}.tmp-{os.getpid()}")
    try:
        log(f"writing {arch} weights and tokenizer from {checkpoint} (float16)")
        tokenizer = write_f16(checkpoint, arch, tmp_f16, name=out_path.stem)
        if quant == "f16":
            os.replace(tmp_f16, tmp_out)
        else:
            log(f"quantizing to {quant} with llama.cpp's quantizer")
            quantize(tmp_f16, tmp_out, quant, threads=threads)
            tmp_f16.unlink()
        from transformers import AutoConfig

        context = int(AutoConfig.from_pretrained(checkpoint).max_position_embeddings)
        text, note = modelfile_text(out_path.name, tokenizer, context)
        tmp_modelfile.write_text(text, encoding="utf-8")
        for path in (tmp_out, tmp_modelfile):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp_out, out_path)
        os.replace(tmp_modelfile, modelfile)
    finally:
        for leftover in (tmp_f16, tmp_out, tmp_modelfile):
            leftover.unlink(missing_ok=True)
    return ExportResult(out_path, modelfile, quant, arch, out_path.stat().st_size, time.perf_counter() - start, note)


# --------------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------------


def cmd_export_model(args: argparse.Namespace) -> int:
    from chatforge.quiet import quiet_transformers

    quiet_transformers()
    try:
        result = export_gguf(args.source, args.gguf, quant=args.quant, force=args.force, threads=args.threads,
                             log=lambda message: print(f"[{message}]", file=sys.stderr))
    except (ExportError, models.ModelNotFoundError) as err:
        print(f"chatforge export-model: {err}", file=sys.stderr)
        return 2
    print(f"wrote {result.gguf} ({result.architecture}, {result.quant}, {result.size_bytes / 1e6:.1f} MB) and "
          f"{result.modelfile} in {result.seconds:.1f} s")
    if result.template_note:
        print(f"note: {result.template_note}")
    print(f"serve it:  chatforge serve --model {result.gguf} --backend llama.cpp")
    print(f"Ollama:    ollama create {result.gguf.stem} -f {result.modelfile}")
    return 0


def register_cli(sub: Any) -> None:
    p = sub.add_parser("export-model", help="export a model as GGUF for llama.cpp / Ollama / LM Studio")
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT",
                   help="a run directory (exports its chat/), a trainer output directory (its final/), a "
                        "checkpoint directory or a packaged model name")
    p.add_argument("--gguf", required=True, metavar="OUT.gguf", help="the GGUF file to write")
    p.add_argument("--quant", choices=tuple(QUANTS), default="q8_0",
                   help="weights: f16, q8_0 (default) or q4_k_m (llama.cpp's quantizer)")
    p.add_argument("--force", action="store_true", help="replace an existing output file and Modelfile")
    p.add_argument("--threads", type=int, default=None, help="quantizer threads (default: all cores)")
    p.set_defaults(func=cmd_export_model)
