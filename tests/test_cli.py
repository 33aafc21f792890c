"""The idnode CLI's store commands: init, prefix, import/export round trip."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from protocol.values import HS_SECKEY
from registry.credentials import is_hashed
from registry.sqlite_store import SQLiteStore


def idnode(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "resolver.cli", *args], input=stdin,
                          capture_output=True, timeout=60)


def stored(path: Path, key: str):
    async def read():
        store = SQLiteStore(path)
        await store.open()
        try:
            return await store.get(key)
        finally:
            await store.close()
    return asyncio.run(read())


def test_init_prints_a_generated_secret_once(tmp_path: Path):
    store = tmp_path / "s.db"
    first = idnode("init", "--store", str(store), "--prefix", "88.100.1")
    assert first.returncode == 0
    assert b"300:88.100.1/ADMIN" in first.stdout and b"Admin secret:" in first.stdout
    again = idnode("init", "--store", str(store), "--prefix", "88.100.1", "--if-new")
    assert again.returncode == 0 and again.stdout == b""
    refused = idnode("init", "--store", str(store), "--prefix", "88.100.1")
    assert refused.returncode == 2 and b"already homed" in refused.stderr
    seckey = next(v for v in stored(store, "88.100.1/ADMIN") if v.type == HS_SECKEY)
    assert is_hashed(seckey.data)


def test_prefix_add_and_list(tmp_path: Path):
    store = str(tmp_path / "s.db")
    assert idnode("prefix", "add", "88.118.8", "--store", store).returncode == 0
    assert idnode("prefix", "add", "0.NA/88.118.9", "--store", store).returncode == 0
    listed = idnode("prefix", "list", "--store", store)
    assert listed.stdout.split() == [b"88.118.8", b"88.118.9"]
    assert idnode("prefix", "add", "88..1", "--store", store).returncode == 2


def test_import_export_round_trip(tmp_path: Path):
    store = str(tmp_path / "s.db")
    idnode("init", "--store", store, "--prefix", "88.100.1", "--admin-secret", "x")
    lines = [
        {"handle": "88.100.1/A", "values": [
            {"index": 1, "type": "URL", "data": "https://a", "ttl": 60,
             "timestamp": "2026-01-02T03:04:05Z"},
            {"index": 2, "type": "BIN", "data": {"format": "hex", "value": "00ff"}}]},
        {"handle": "88.100.1/b", "values": [
            {"index": 300, "type": "HS_SECKEY", "data": "plain"}]},
    ]
    source = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    result = idnode("import", "--store", store, "-", stdin=source)
    assert result.returncode == 0, result.stderr
    assert is_hashed(stored(Path(store), "88.100.1/B")[0].data)  # secrets sealed on import
    out = idnode("export", "--store", store, "--prefix", "88.100.1")
    exported = {o["handle"]: o for o in map(orjson.loads, out.stdout.splitlines())}
    assert set(exported) == {"88.100.1/A", "88.100.1/ADMIN", "88.100.1/B"}
    a = exported["88.100.1/A"]["values"]
    assert a[0] == {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://a"},
                    "ttl": 60, "timestamp": "2026-01-02T03:04:05Z"}
    assert a[1]["data"] == {"format": "base64", "value": "AP8="}
    # Exported lines import again unchanged (hashed secrets are not hashed twice).
    second = str(tmp_path / "t.db")
    idnode("init", "--store", second, "--prefix", "88.100.1", "--admin-secret", "y")
    assert idnode("import", "--store", second, "-", stdin=out.stdout).returncode == 0
    again = idnode("export", "--store", second, "--prefix", "88.100.1")
    assert again.stdout == out.stdout


@pytest.mark.parametrize(
    ("line", "message"),
    [(b"{nope\n", b"malformed JSON"),
     (b'{"handle": "99.9/x", "values": []}\n', b"not homed"),
     (b'{"handle": "88.100.1/x", "values": [{"index": -1, "type": "URL", "data": "a"}]}\n',
      b"positive")],
)
def test_import_rejects_bad_lines_with_line_numbers(tmp_path: Path, line: bytes, message: bytes):
    store = str(tmp_path / "s.db")
    idnode("init", "--store", store, "--prefix", "88.100.1", "--admin-secret", "x")
    result = idnode("import", "--store", store, "-", stdin=b"\n" + line)
    assert result.returncode == 2
    assert b"-:2:" in result.stderr and message in result.stderr


def test_account_add_prints_a_generated_password_once(tmp_path: Path):
    path = tmp_path / "s.db"
    done = idnode("account", "add", "app1", "--prefix", "88.100.1", "--store", str(path))
    assert done.returncode == 0, done.stderr
    assert b"Password: " in done.stdout
    done = idnode("account", "add", "app1", "--prefix", "88.100.1", "--password", "pw",
                  "--store", str(path))
    assert done.returncode == 0 and b"Password" not in done.stdout and b"reset" in done.stdout
    assert idnode("account", "revoke", "app1", "--store", str(path)).returncode == 0
    assert idnode("account", "revoke", "ghost", "--store", str(path)).returncode == 2
