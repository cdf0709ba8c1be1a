"""The session signing key: a configured key must be strong; without one, a random key is
generated once and kept in the data dir (the dev/demo path).

A weak key lets anyone forge a session cookie (``{"_user_id": "1"}`` signed with it) and log in as
any account, so :func:`check_secret_key` makes the app refuse to start with a placeholder such as
``change-me`` or a key shorter than :data:`MIN_SECRET_LENGTH` characters.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

MIN_SECRET_LENGTH = 32  # characters; secrets.token_hex(32) gives 64
# Placeholders seen in examples and compose files (compared without case, digits and punctuation).
_PLACEHOLDERS = frozenset({
    "changeme", "change", "secret", "secretkey", "dev", "development", "devsecret", "test", "testing", "testsecret",
    "default", "password", "camlabel", "flask", "key", "insecure", "notsecret", "replaceme", "yoursecretkey",
    "please", "pleasechangeme", "example", "todo", "xxx",
})
GENERATE_HINT = "python -c 'import secrets; print(secrets.token_hex(32))'"


class WeakSecretError(RuntimeError):
    """A configured ``CAMLABEL_SECRET_KEY`` that must not be used (the app refuses to start)."""


def check_secret_key(value: str) -> None:
    """Raise :class:`WeakSecretError` unless ``value`` is a usable signing key.

    Refused: placeholders (``change-me``, ``secret``, ... in any case, with any digits or
    punctuation), keys shorter than ``MIN_SECRET_LENGTH`` characters, and keys with fewer
    than 8 distinct characters (``aaaa...``)."""
    folded = re.sub(r"[^a-z]", "", value.lower())
    advice = (f"set CAMLABEL_SECRET_KEY to at least {MIN_SECRET_LENGTH} random characters (for example the output of "
              f"{GENERATE_HINT}), or unset it to have one generated and kept in the data dir")
    if folded in _PLACEHOLDERS or any(folded.startswith(p) and len(folded) <= len(p) + 4 for p in ("changeme", "secret", "replaceme")):
        raise WeakSecretError(f"CAMLABEL_SECRET_KEY is a placeholder ({value[:12]!r}...): anyone could sign session cookies with it; {advice}")
    if len(value) < MIN_SECRET_LENGTH:
        raise WeakSecretError(f"CAMLABEL_SECRET_KEY has {len(value)} characters, fewer than {MIN_SECRET_LENGTH}; {advice}")
    if len(set(value)) < 8:
        raise WeakSecretError(f"CAMLABEL_SECRET_KEY repeats too few characters to be random; {advice}")


def persistent_secret(data_dir: Path) -> str:
    """A random key stored in ``data_dir/secret_key`` (mode 0600) so sessions survive restarts.

    The first process to start writes it (``O_EXCL``); the others read the same file."""
    path = Path(data_dir) / "secret_key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another worker process wrote it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value
