"""`logowatch keys`: keys are shown once, stored as digests only, several active, revocable."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from logowatch.cli import main
from logowatch.keys import KeyStore


def test_keys_are_stored_as_digests_and_revoking_one_leaves_the_others(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.json"
    made = {}
    for name in ("alice", "bob"):
        assert main(["keys", "add", name, "--keys-file", str(path)]) == 0
        made[name] = capsys.readouterr().out.splitlines()[-1]
    text = path.read_text()
    assert all(key not in text for key in made.values())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store = KeyStore(path)
    assert {store.owner(k) for k in made.values()} == {"alice", "bob"}

    assert main(["keys", "revoke", "alice", "--keys-file", str(path)]) == 0
    assert store.owner(made["alice"]) is None and store.owner(made["bob"]) == "bob"
    capsys.readouterr()
    assert main(["keys", "list", "--keys-file", str(path)]) == 0
    listing = capsys.readouterr().out
    assert "alice" in listing and "revoked" in listing and made["bob"] not in listing
    assert main(["keys", "revoke", "alice", "--keys-file", str(path)]) == 1
    assert KeyStore(None, f" {made['bob']} ,x").owner(made["bob"]) == "env-1"


def test_serve_without_a_key_or_with_its_port_taken_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    monkeypatch.delenv("LOGOWATCH_API_KEYS", raising=False)
    none = str(tmp_path / "none.json")
    assert main(["serve", "--model", "unused", "--keys-file", none]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no API keys" in err
    monkeypatch.setenv("LOGOWATCH_API_KEYS", "lw_secret-for-this-test")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        assert main(["serve", "--model", "unused", "--keys-file", none, "--port", port]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot serve on" in err
    assert "lw_secret-for-this-test" not in err
