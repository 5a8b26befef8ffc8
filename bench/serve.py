"""Serving throughput: aggregate tokens/s and time to first token (p50/p95) for 1, 8 and 32 concurrent streaming
clients, chatforge's server as shipped (continuous batching on the default decoder) vs a baseline that serves one
request at a time through the model's own transformers forward pass (what plain `generate()` runs; chatforge's
decode loop around it measured as fast as `generate()` at batch 1, bench/generation.py), and the same model
exported to GGUF (Q8_0 and Q4_K_M, `chatforge export-model`) served by chatforge with llama.cpp doing the decoding
(`--backend llama.cpp`), all measured in the same run on the same model, through the real HTTP server and the
official `openai` client.

    python bench/serve.py [--model smollm2-135m-instruct] [--clients 1 8 32] [--max-tokens 64] [--threads N]
                          [--in-process] [--baseline-decoder transformers] [--decoder auto] [--no-llamacpp]

Each server runs as deployed: `chatforge serve` in a process of its own, so the load generator's 32 client threads
(the `openai` client parses every streamed chunk in Python) do not compete with the decode loop for the server's
interpreter lock. `--in-process` runs the torch servers in this process instead, as earlier versions of this script
did (the llama.cpp servers always run in their own process). The llama.cpp servers need llama-cpp-python (the
`llamacpp` extra); without it, or with `--no-llamacpp`, they are left out.

Every request is greedy (temperature 0) with a fixed max_tokens and prompts of similar length, so every server
generates the same work; the table prints each server's ratio over the one-at-a-time baseline.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path


def run_clients(url: str, key: str, model: str, n: int, max_tokens: int) -> dict[str, float]:
    import openai

    prompts = [f"Write a short story about a robot named R{i} who learns to paint." for i in range(n)]
    ttfts: list[float] = []
    tokens = [0] * n
    errors: list[BaseException] = []
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=600)
        barrier.wait()
        start = time.perf_counter()
        try:
            stream = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompts[i]}], max_tokens=max_tokens,
                temperature=0, stream=True, stream_options={"include_usage": True})
            first = None
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].delta.content:
                    first = time.perf_counter() - start
                if chunk.usage is not None:
                    tokens[i] = chunk.usage.completion_tokens
            ttfts.append(first if first is not None else time.perf_counter() - start)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} requests failed: {errors[0]!r}")
    q = statistics.quantiles(ttfts, n=20, method="inclusive") if len(ttfts) > 1 else [ttfts[0]] * 19
    return {"tok_s": sum(tokens) / wall, "ttft_p50": statistics.median(ttfts), "ttft_p95": q[18], "wall": wall,
            "tokens": sum(tokens)}


@contextlib.contextmanager
def server_process(db: str, mode: str, decoder: str, args: argparse.Namespace, *, model: str | None = None,
                   backend: str = "torch") -> Iterator[str]:
    """`chatforge serve` in its own process on a free port; yields its URL once it answers."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "chatforge.cli", "serve", "--model", model or args.model, "--served-name",
               "bench", "--db", db, "--port", str(port), "--batching", mode, "--max-batch", str(max(args.clients)),
               "--rate-limit", "0", "--max-new-tokens", str(args.max_tokens), "--log-level", "warning"]
    command += ["--decoder", decoder] if backend == "torch" else ["--backend", backend]
    if args.threads:
        command += ["--threads", str(args.threads)]
    process = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"chatforge serve exited with {process.returncode}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chatforge serve did not start within 10 minutes")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def export_ggufs(model: str, directory: Path) -> dict[str, Path]:
    """The model as GGUF files, Q8_0 and Q4_K_M, quantized by llama.cpp (`chatforge export-model`)."""
    from chatforge.gguf_export import export_gguf

    files = {}
    for quant in ("q8_0", "q4_k_m"):
        result = export_gguf(model, directory / f"bench-{quant}.gguf", quant=quant)
        print(f"exported {result.gguf.name}: {result.size_bytes / 1e6:.1f} MB in {result.seconds:.1f}s", file=sys.stderr)
        files[quant] = result.gguf
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--in-process", action="store_true", help="run the torch servers in this process (threads)")
    parser.add_argument("--decoder", default="auto", help="chatforge's decoder (auto = lean where supported)")
    parser.add_argument("--baseline-decoder", default="transformers", help="the one-at-a-time baseline's decoder")
    parser.add_argument("--no-llamacpp", action="store_true", help="leave out the llama.cpp servers")
    args = parser.parse_args()

    from chatforge import models
    from chatforge.gguf_export import llama_cpp_available
    from chatforge.store import Store

    with_llamacpp = not args.no_llamacpp and llama_cpp_available()
    if not args.no_llamacpp and not with_llamacpp:
        print("llama-cpp-python is not installed (pip install -e '.[llamacpp]'): the llama.cpp servers are left out",
              file=sys.stderr)
    results: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        db = f"sqlite:///{Path(tmp) / 'bench.db'}"
        store = Store(db)
        key = store.create_api_key(store.create_user("bench").id)
        ggufs = export_ggufs(args.model, Path(tmp)) if with_llamacpp else {}
        if args.in_process:
            from chatforge.serve.app import ServeConfig, create_app
            from chatforge.serve.testing import running_server

            models.set_threads(args.threads)
            model, tokenizer = models.load_model(args.model)
        servers = ["serial", "continuous"] + [f"llama.cpp {q.upper()}" for q in ggufs]
        for name in servers:
            if name.startswith("llama.cpp"):
                path = ggufs[name.split()[1].lower()]
                server = server_process(db, "continuous", "", args, model=str(path), backend="llama.cpp")
            else:
                decoder = args.baseline_decoder if name == "serial" else args.decoder
                if args.in_process:
                    config = ServeConfig(model_name="bench", batching=name, max_batch=max(args.clients),
                                         rate_limit_per_minute=0, max_new_tokens=args.max_tokens, decoder=decoder)
                    server = running_server(create_app(model, tokenizer, store, config))
                else:
                    server = server_process(db, name, decoder, args)
            with server as url:
                run_clients(url, key, "bench", 1, 4)  # warm-up
                results[name] = {}
                for n in args.clients:
                    results[name][n] = r = run_clients(url, key, "bench", n, args.max_tokens)
                    print(f"{name:>15} clients={n:<3} {r['tok_s']:8.1f} tok/s  TTFT p50 {1000 * r['ttft_p50']:8.0f} ms"
                          f"  p95 {1000 * r['ttft_p95']:8.0f} ms  ({r['tokens']} tokens in {r['wall']:.1f}s)",
                          file=sys.stderr)
    where = "in this process" if args.in_process else "each in its own process"
    print(f"\nmodel {args.model}, max_tokens {args.max_tokens}, greedy, servers {where}; serial = one at a time on "
          f"the {args.baseline_decoder} decoder, continuous = batched on the {args.decoder} decoder"
          + (", llama.cpp = the exported GGUF, batched, decoded by llama.cpp" if ggufs else ""))
    print(f"{'clients':>7} | " + " | ".join(f"{name + ' tok/s':>20} {'TTFT p50/p95 ms':>17} {'x serial':>8}"
                                           for name in servers))
    for n in args.clients:
        base = results["serial"][n]["tok_s"]
        cells = []
        for name in servers:
            r = results[name][n]
            cells.append(f"{r['tok_s']:20.1f} {1000 * r['ttft_p50']:8.0f}/{1000 * r['ttft_p95']:<8.0f} "
                         f"{r['tok_s'] / base:7.2f}x")
        print(f"{n:>7} | " + " | ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
