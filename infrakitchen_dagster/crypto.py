"""Encryption at rest for the secrets the lifecycle store keeps (Fernet, `cryptography`).

Keys come from `INFRAKITCHEN_SECRET_KEY` (comma-separated Fernet keys: the first encrypts,
all decrypt, which is how a rotation runs) or else from `$INFRAKITCHEN_HOME/secret.key`
(one key a line, same rule), created owner-only on first use. Every machine sharing one
store (PostgreSQL) needs the same keys: set the variable, or copy the file.

A sealed value is stored as `{"$fernet": "<token>"}`, so a reader can tell it from a plain
one (older rows, non-sensitive values) without any schema knowledge.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from . import settings

ENV_VAR = "INFRAKITCHEN_SECRET_KEY"
KEY_FILE = "secret.key"
MARK = "$fernet"

__all__ = [
    "ENV_VAR", "KEY_FILE", "MARK", "SecretBox", "SecretKeyError", "box", "is_sealed",
    "key_file", "new_key", "write_key_file",
]


class SecretKeyError(Exception):
    """No usable key, a malformed key, or a value that none of the keys decrypts."""


def new_key() -> str:
    return Fernet.generate_key().decode()


def key_file() -> Path:
    return settings.home() / KEY_FILE


def _parse_keys(text: str, where: str) -> list[str]:
    keys = [k.strip() for k in text.replace("\n", ",").split(",") if k.strip()]
    for key in keys:
        try:
            if len(base64.urlsafe_b64decode(key.encode())) != 32:
                raise ValueError
        except ValueError:
            raise SecretKeyError(f"{where}: not a Fernet key (32 url-safe base64 bytes; make "
                                 "one with `ik rotate-key --print-new-key`)") from None
    if not keys:
        raise SecretKeyError(f"{where} holds no key")
    return keys


def write_key_file(keys: Iterable[str], path: Path | None = None) -> Path:
    """Replace the key file atomically (0600, in a 0700 home): a reader sees the old keys
    or the new ones, never a half-written file."""
    path = path or key_file()
    settings.private_home()
    settings.write_private(path, "".join(f"{k}\n" for k in keys))
    return path


def _create_key_file(path: Path) -> None:
    """First use: one new key, made visible only once complete; if another process got
    there first (os.link refuses to replace), theirs wins and ours is dropped."""
    settings.private_home()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(new_key() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process was first: theirs wins
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def configured_keys() -> tuple[list[str], str]:
    """(keys, where they came from); creates the key file on first use."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _parse_keys(env, ENV_VAR), ENV_VAR
    path = key_file()
    if not path.exists():
        _create_key_file(path)
    return _parse_keys(path.read_text(), str(path)), str(path)


class SecretBox:
    """Seals and opens single JSON values with the configured keys."""

    def __init__(self, keys: list[str], source: str = "keys"):
        self.keys = list(keys)
        self.source = source
        self._fernet = MultiFernet([Fernet(k.encode()) for k in self.keys])
        self._primary = Fernet(self.keys[0].encode())

    def encrypt_bytes(self, data: bytes) -> bytes:
        return self._fernet.encrypt(data)

    def decrypt_bytes(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken:
            raise SecretKeyError(
                f"a stored secret cannot be decrypted with the keys of {self.source}; the key "
                "it was sealed with is missing (restore it, or list it after the new one in "
                f"{ENV_VAR})") from None

    def seal(self, value: Any) -> dict[str, str]:
        """`value` (any JSON value) as `{"$fernet": token}`."""
        data = json.dumps(value, sort_keys=True).encode()
        return {MARK: self._fernet.encrypt(data).decode()}

    def open(self, value: Any) -> Any:
        """The plain value of a sealed one; anything else is returned as it is."""
        if not is_sealed(value):
            return value
        return json.loads(self.decrypt_bytes(value[MARK].encode()))

    def is_current(self, value: Any) -> bool:
        """Sealed with the first key (nothing to re-encrypt)."""
        if not is_sealed(value):
            return False
        try:
            self._primary.decrypt(value[MARK].encode())
            return True
        except InvalidToken:
            return False

    def is_current_bytes(self, token: bytes) -> bool:
        try:
            self._primary.decrypt(token)
            return True
        except InvalidToken:
            return False


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(MARK), str)


_cache: dict[tuple[str, str], SecretBox] = {}
_cache_lock = threading.Lock()


def box() -> SecretBox:
    """The box for the current keys. Cached per key text (the key file is read each
    time, it is tiny), so a long-lived process (daemon, webserver) follows a rotation."""
    with _cache_lock:
        env = os.environ.get(ENV_VAR, "").strip()
        if env:
            token = (ENV_VAR, env)
        else:
            path = key_file()
            if not path.exists():
                _create_key_file(path)
            token = (str(path), path.read_text())
        if token not in _cache:
            _cache[token] = SecretBox(_parse_keys(token[1], token[0]), token[0])
        return _cache[token]
