"""The chat product: `chatforge serve` (OpenAI-compatible API + web chat UI + monitoring, one FastAPI app with a
continuously batched decode loop) and `chatforge export` (feedback -> training data)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["ServeConfig", "create_app", "export", "register_cli"]


def __getattr__(name: str) -> Any:  # keep `import chatforge.serve` (the CLI) light
    if name in ("create_app", "ServeConfig"):
        from chatforge.serve import app

        return getattr(app, name)
    if name == "export":
        from chatforge.serve.export import export

        return export
    raise AttributeError(name)


def cmd_serve(args: argparse.Namespace) -> int:
    from chatforge.store import Store, StoreError

    try:
        store = Store(args.db)
    except Exception as err:
        print(f"chatforge serve: cannot open the database: {err}", file=sys.stderr)
        return 2
    if args.add_user:
        try:
            user = store.create_user(args.add_user, args.password, admin=args.admin)
        except StoreError as err:
            existing = store.get_user(args.add_user)  # an existing user gets another key
            if existing is None or args.password:
                print(f"chatforge serve: {err}", file=sys.stderr)
                return 2
            user = existing
        print(store.create_api_key(user.id))  # the only time the key is shown
        return 0
    from chatforge import models
    from chatforge.quiet import quiet_transformers
    from chatforge.serve.app import ServeConfig, create_app
    from chatforge.serve.moderation import Moderator

    quiet_transformers()
    models.set_threads(args.threads)
    backend = None
    try:
        moderator = Moderator.from_file(args.moderation) if args.moderation else Moderator()
        if args.backend == "llama.cpp":
            model, (tokenizer, backend) = None, _llama_cpp_backend(args)
        else:
            model, tokenizer = models.load_model(args.model, dtype=models.inference_dtype(args.dtype))
    except (OSError, ValueError, RuntimeError, models.ModelNotFoundError) as err:
        print(f"chatforge serve: {err}", file=sys.stderr)
        return 2
    config = ServeConfig(
        model_name=args.served_name or str(args.model).rstrip("/").split("/")[-1],
        max_new_tokens=args.max_new_tokens, default_max_tokens=min(args.default_max_tokens, args.max_new_tokens),
        rate_limit_per_minute=args.rate_limit, max_batch=args.max_batch, batching=args.batching,
        decoder=args.decoder,
        moderation=moderator, max_body_bytes=args.max_body_bytes, secure_cookies=args.secure_cookies,
    )
    import uvicorn

    app = create_app(model, tokenizer, store, config, backend=backend)
    print(f"chatforge: serving {config.model_name} on http://{args.host}:{args.port} (db: {store.url.split('@')[-1]})",
          file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _llama_cpp_backend(args: argparse.Namespace) -> tuple[Any, Any]:
    """(tokenizer, backend) for ``--backend llama.cpp``: the GGUF decoded by llama.cpp. Torch only samples then, on
    one thread (its idle workers would spin against llama.cpp's); llama.cpp gets --threads (default: all cores)."""
    import os
    from pathlib import Path

    import torch

    from chatforge import models
    from chatforge.llamacpp import LlamaCppEngine
    from chatforge.serve.backend import LlamaCppBackend

    path = Path(args.model).expanduser()
    if path.suffix.lower() != ".gguf" or not path.is_file():
        raise ValueError(f"--backend llama.cpp serves a .gguf file and {path} is not one; export the model first: "
                         f"chatforge export-model {args.model} --gguf MODEL.gguf")
    threads = args.threads or int(os.environ.get("CHATFORGE_THREADS") or 0) or os.cpu_count() or 1
    torch.set_num_threads(1)
    tokenizer = models.load_tokenizer(path)
    engine = LlamaCppEngine(path, tokenizer, context_tokens=args.llama_context, max_sequences=args.max_batch,
                            threads=threads)
    return tokenizer, LlamaCppBackend(engine, batching=args.batching, max_batch=args.max_batch)


def cmd_export(args: argparse.Namespace) -> int:
    from chatforge.serve.export import export, parse_since
    from chatforge.store import Store

    try:
        since = parse_since(args.since)
        store = Store(args.db)
    except Exception as err:
        print(f"chatforge export: {err}", file=sys.stderr)
        return 2
    counts = export(store, args.to, since)
    print("exported " + ", ".join(f"{v} {k}" for k, v in counts.items()) + f" to {args.to}")
    return 0


def register_cli(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a model: OpenAI-compatible API, web chat UI, monitoring")
    p.add_argument("--model", default="smollm2-135m-instruct", help="packaged name, checkpoint dir, .gguf or hub id")
    p.add_argument("--served-name", default=None, help="the model id clients use (default: the model's name)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--db", default=None, help="database URL (default: SQLite under CHATFORGE_HOME); postgresql://...")
    p.add_argument("--batching", choices=("continuous", "serial"), default="continuous",
                   help="continuous batching (default) or one request at a time (the baseline)")
    p.add_argument("--decoder", choices=("auto", "lean", "transformers"), default="auto",
                   help="forward pass: lean (Llama-family models, bf16 on AVX512-BF16 CPUs), the model's own "
                        "(transformers), or auto = lean where supported (default)")
    p.add_argument("--backend", choices=("torch", "llama.cpp"), default="torch",
                   help="torch: chatforge's own engine (default); llama.cpp: a .gguf file decoded by llama.cpp "
                        "(pip install -e '.[llamacpp]'; chatforge export-model writes the file)")
    p.add_argument("--llama-context", type=int, default=16384,
                   help="llama.cpp backend: KV cache tokens shared by all running requests (default %(default)s)")
    p.add_argument("--max-batch", type=int, default=32, help="most requests decoded together (default %(default)s)")
    p.add_argument("--max-new-tokens", type=int, default=512, help="the most tokens a request may ask for")
    p.add_argument("--default-max-tokens", type=int, default=256, help="reply length when a request sets none")
    p.add_argument("--rate-limit", type=int, default=120, help="requests per minute per API key/user; 0 = off")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000)
    p.add_argument("--moderation", default=None, help="moderation rules (JSON), see chatforge.serve.moderation")
    p.add_argument("--secure-cookies", action="store_true", help="mark session cookies Secure (behind HTTPS)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--add-user", metavar="NAME", default=None,
                   help="create user NAME (or add a key to an existing one), print a new API key and exit")
    p.add_argument("--password", default=None, help="with --add-user: the password for the web UI")
    p.add_argument("--admin", action="store_true", help="with --add-user: may see the monitoring page")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16"), default="auto")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("export", help="export feedback as training data (SFT edits, comparisons, red-team flags)")
    p.add_argument("--to", required=True, help="output directory")
    p.add_argument("--since", default=None, help="ISO 8601 time or an age (7d, 12h); default: everything")
    p.add_argument("--db", default=None, help="database URL (default: SQLite under CHATFORGE_HOME)")
    p.set_defaults(func=cmd_export)
