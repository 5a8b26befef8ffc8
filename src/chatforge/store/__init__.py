"""The product's database: users, API keys, conversations, messages, feedback, comparisons, edits, moderation
flags and a request log (SQLAlchemy models + Alembic migrations). SQLite in WAL mode by default, PostgreSQL by URL."""

from chatforge.store import models
from chatforge.store.db import (
    Store,
    StoreError,
    check_password,
    default_url,
    hash_password,
    migrate,
    open_store,
)

__all__ = ["Store", "StoreError", "check_password", "default_url", "hash_password", "migrate", "models", "open_store"]
