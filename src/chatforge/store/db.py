"""Opening the store: SQLite (WAL, synchronous=FULL) under CHATFORGE_HOME by default, or any SQLAlchemy URL
(``postgresql://...``). The schema is brought to the newest Alembic revision on open."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

from chatforge.store import models as m

MIGRATIONS = Path(__file__).parent / "migrations"
SESSION_DAYS = 14
_migrate_lock = threading.Lock()


class StoreError(RuntimeError):
    pass


def default_url() -> str:
    from chatforge.models import chatforge_home

    home = chatforge_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'chatforge.db'}"


def normalize_url(url: str) -> str:
    """Accept plain ``postgresql://`` (psycopg 3 is the driver we install) and bare file paths for SQLite."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers do not block the writer. synchronous=FULL: a commit is on disk before it returns, so nothing
    # acknowledged is lost even on power failure (a killed process loses nothing even at NORMAL).
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def alembic_config(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    cfg = alembic_config(engine)
    with _migrate_lock, engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)
    return f"scrypt${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt, digest = stored.split("$")
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)).split("$")[2], digest)


class Store:
    """A database handle: ``with store.session() as s:`` commits on success, rolls back on error."""

    def __init__(self, url: str | None = None, *, upgrade: bool = True) -> None:
        self.url = normalize_url(url or default_url())
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 10}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(self.url, **kwargs)
        if self.dialect == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if upgrade:
            migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[OrmSession]:
        s = self._sessions()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    # ---- users, keys, sessions -----------------------------------------------------------------------------

    def create_user(self, name: str, password: str | None = None, *, admin: bool = False) -> m.User:
        if not name or len(name) > 64:
            raise StoreError("a user name must have 1 to 64 characters")
        with self.session() as s:
            if s.scalar(select(m.User).where(m.User.name == name)) is not None:
                raise StoreError(f"user {name!r} already exists")
            user = m.User(name=name, password_hash=hash_password(password) if password else None, is_admin=admin)
            s.add(user)
        return user

    def get_user(self, name: str) -> m.User | None:
        with self.session() as s:
            return s.scalar(select(m.User).where(m.User.name == name))

    def create_api_key(self, user_id: int, name: str | None = None) -> str:
        """A new key for the user; only its hash is stored, so the returned key is shown once."""
        key = "cf-" + secrets.token_urlsafe(32)
        with self.session() as s:
            s.add(m.ApiKey(user_id=user_id, key_hash=hash_secret(key), prefix=key[:10], name=name))
        return key

    def user_for_key(self, key: str) -> tuple[m.User, int] | None:
        with self.session() as s:
            row = s.scalar(select(m.ApiKey).where(m.ApiKey.key_hash == hash_secret(key), m.ApiKey.revoked.is_(False)))
            if row is None:
                return None
            return s.get(m.User, row.user_id), row.id  # type: ignore[return-value]

    def login(self, name: str, password: str) -> str | None:
        with self.session() as s:
            user = s.scalar(select(m.User).where(m.User.name == name))
            if user is None or not check_password(password, user.password_hash):
                return None
            token = secrets.token_urlsafe(32)
            s.add(m.Session(user_id=user.id, token_hash=hash_secret(token),
                            expires_at=datetime.now(UTC) + timedelta(days=SESSION_DAYS)))
            return token

    def user_for_session(self, token: str) -> m.User | None:
        with self.session() as s:
            row = s.scalar(select(m.Session).where(m.Session.token_hash == hash_secret(token)))
            if row is None:
                return None
            expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
            if expires < datetime.now(UTC):
                return None
            return s.get(m.User, row.user_id)

    def logout(self, token: str) -> None:
        with self.session() as s:
            row = s.scalar(select(m.Session).where(m.Session.token_hash == hash_secret(token)))
            if row is not None:
                s.delete(row)


def open_store(url: str | None = None) -> Store:
    return Store(url or os.environ.get("CHATFORGE_DB") or None)
