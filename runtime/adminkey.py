"""The installation's admin key: the password of the SQL endpoint (user ``pingstream``).

Generated at first start and kept in the data directory, readable by its owner only (0600). It is
not a project key: project API keys never open the SQL endpoint, and this key opens no project's API.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

FILE_NAME = "admin-key"
USER = "pingstream"


def path(data_dir: Path) -> Path:
    return Path(data_dir) / FILE_NAME


def read(data_dir: Path) -> str | None:
    """The stored key, or None before the first start."""
    try:
        key = path(data_dir).read_text().strip()
    except FileNotFoundError:
        return None
    return key or None


def load_or_create(data_dir: Path) -> tuple[str, bool]:
    """``(key, created)``: the stored key, or a new one written with mode 0600 (never readable by others,
    not even for an instant: the file is created with that mode)."""
    existing = read(data_dir)
    if existing is not None:
        return existing, False
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    target = path(data_dir)
    tmp = target.with_name(f".{FILE_NAME}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (key + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    created = True
    try:
        os.link(tmp, target)  # fails if another process made one first: then that one is the key
    except FileExistsError:
        created = False
    finally:
        tmp.unlink()
    return read(data_dir), created


def matches(key: str, given: str | None) -> bool:
    """Whether ``given`` is the key, compared in constant time."""
    return given is not None and hmac.compare_digest(key.encode(), given.encode())
