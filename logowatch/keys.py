"""API keys of `logowatch serve`, and `logowatch keys add | list | revoke`.

The keys file holds names and SHA-256 digests, never a key: a key is 32 random bytes, shown
once when it is made, so a digest of it is as good as a slow password hash and costs nothing
per request. Several keys may be active; a revoked one stays listed (with when) and stops
working at the server's next request, no restart needed. Containers may instead pass keys in
``LOGOWATCH_API_KEYS`` (comma-separated); they are hashed when read and never logged.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workers import config
from workers.errors import WorkerError

PREFIX = "lw_"


def default_file() -> Path:
    return Path(config.env("LOGOWATCH_KEYS_FILE", ".logowatch/api-keys.json") or "")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def _read(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {"keys": []}
    except (OSError, ValueError) as exc:
        raise WorkerError(f"cannot read the keys file {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise WorkerError(f"{path} is not a logowatch keys file")
    return doc


def _write(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def add(path: Path, name: str) -> str:
    """Makes a key named ``name``, stores its digest and returns the key (shown once)."""
    doc = _read(path)
    if any(k["name"] == name and not k.get("revoked_at") for k in doc["keys"]):
        raise WorkerError(f"an active key named {name!r} exists; revoke it or pick another name")
    key = PREFIX + secrets.token_urlsafe(32)
    doc["keys"].append({"name": name, "sha256": digest(key),
                        "created_at": datetime.now(UTC).isoformat(timespec="seconds")})
    _write(path, doc)
    return key


def revoke(path: Path, name: str) -> int:
    doc = _read(path)
    hits = [k for k in doc["keys"] if k["name"] == name and not k.get("revoked_at")]
    if not hits:
        raise WorkerError(f"no active key named {name!r} in {path}")
    for k in hits:
        k["revoked_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    _write(path, doc)
    return len(hits)


class KeyStore:
    """Who a presented key belongs to; rereads the file when it changes."""

    def __init__(self, path: Path | None, env_keys: str | None = None) -> None:
        self.path = path
        self._env = {digest(k.strip()): f"env-{i}" for i, k in
                     enumerate((env_keys or "").split(","), 1) if k.strip()}
        self._stamp: tuple[int, int] | None = None
        self._file: dict[str, str] = {}
        self._reload()

    def _reload(self) -> None:
        if self.path is None:
            return
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            doc = _read(self.path)
            self._file = {k["sha256"]: k["name"] for k in doc["keys"] if not k.get("revoked_at")}
            self._stamp = stamp

    def __len__(self) -> int:
        return len(self._file) + len(self._env)

    def owner(self, key: str) -> str | None:
        """The key's name, or None for an unknown or revoked key."""
        with contextlib.suppress(WorkerError):  # a broken file: keep the last good keys
            self._reload()
        h = digest(key)
        return self._file.get(h) or self._env.get(h)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help="manage the API keys of `logowatch serve`",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["add", "list", "revoke"])
    p.add_argument("name", nargs="?", help="the key's name (add, revoke)")
    p.add_argument("--keys-file", type=Path, default=default_file(),
                   help="env LOGOWATCH_KEYS_FILE; default .logowatch/api-keys.json")
    p.set_defaults(func=run_keys)


def run_keys(args: argparse.Namespace) -> int:
    if args.action != "list" and not args.name:
        raise WorkerError(f"keys {args.action} needs a NAME")
    if args.action == "add":
        key = add(args.keys_file, args.name)
        print(f"key {args.name!r} added to {args.keys_file}; it is shown only now:")
        print(key)
    elif args.action == "revoke":
        revoke(args.keys_file, args.name)
        print(f"key {args.name!r} revoked")
    else:
        for k in _read(args.keys_file)["keys"]:
            state = f"revoked {k['revoked_at']}" if k.get("revoked_at") else "active"
            print(f"{k['name']}\tcreated {k['created_at']}\t{state}")
    return 0
