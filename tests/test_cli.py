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


def _lines(*records: tuple[str, str]) -> bytes:
    return b"".join(
        orjson.dumps({"handle": h, "values": [{"index": 1, "type": "URL", "data": d}]}) + b"\n"
        for h, d in records
    )


@pytest.mark.parametrize("jobs", ["0", "2"])
def test_import_batches_sort_and_the_last_line_for_a_handle_wins(tmp_path: Path, jobs: str):
    store = str(tmp_path / "s.db")
    idnode("init", "--store", store, "--prefix", "88.100.1", "--admin-secret", "x")
    source = _lines(("88.100.1/c", "1"), ("88.100.1/a", "1"), ("88.100.1/b", "1"),
                    ("88.100.1/A", "2"), ("88.100.1/c", "2"))
    result = idnode("import", "--store", store, "--batch", "2", "--jobs", jobs, "-",
                    stdin=source)
    assert result.returncode == 0, result.stderr
    assert b"imported 5 handles" in result.stderr
    for key, data in (("88.100.1/A", b"2"), ("88.100.1/B", b"1"), ("88.100.1/C", b"2")):
        assert stored(Path(store), key)[0].data == data


def test_import_skip_errors_reports_lines_and_imports_the_rest(tmp_path: Path):
    store = str(tmp_path / "s.db")
    idnode("init", "--store", store, "--prefix", "88.100.1", "--admin-secret", "x")
    source = _lines(("88.100.1/a", "1")) + b"{bad\n" + _lines(("99.9/x", "1"), ("88.100.1/b", "1"))
    stopped = idnode("import", "--store", store, "-", stdin=source)
    assert stopped.returncode == 2 and b"-:2: malformed JSON" in stopped.stderr
    assert stored(Path(store), "88.100.1/B") is None
    result = idnode("import", "--store", store, "--skip-errors", "-", stdin=source)
    assert result.returncode == 0, result.stderr
    assert b"-:2: malformed JSON" in result.stderr
    assert b"-:3: prefix 99.9 is not homed" in result.stderr
    assert b"imported 2 handles" in result.stderr and b"2 bad lines skipped" in result.stderr
    assert stored(Path(store), "88.100.1/B") is not None


def test_csv_import_and_export(tmp_path: Path):
    store = str(tmp_path / "s.db")
    idnode("init", "--store", store, "--prefix", "88.100.1", "--admin-secret", "x")
    csv_file = tmp_path / "ids.csv"
    csv_file.write_bytes(b"handle,index,type,data,format,ttl\r\n"
                         b'88.100.1/a,1,URL,"https://a.example/x,y",,60\r\n'
                         b"88.100.1/a,2,BIN,00ff,hex,\r\n"
                         b"88.100.1/b,1,URL,https://b.example,,\r\n")
    result = idnode("import", "--store", store, str(csv_file))
    assert result.returncode == 0, result.stderr
    out = idnode("export", "--store", store, "--prefix", "88.100.1", "--format", "csv")
    rows = out.stdout.decode().splitlines()
    assert rows[0] == "handle,index,type,data,format,ttl"
    assert '88.100.1/A,1,URL,"https://a.example/x,y",string,60' in rows
    assert "88.100.1/A,2,BIN,00ff,hex,86400" in rows
    assert b"CSV does not carry" in out.stderr  # the ADMIN handle's secret has permissions
    # An exported CSV imports again, to the same records.
    second = str(tmp_path / "t.db")
    idnode("init", "--store", second, "--prefix", "88.100.1", "--admin-secret", "y")
    again = tmp_path / "again.csv"
    again.write_bytes(b"\n".join(r.encode() for r in rows if "/ADMIN," not in r) + b"\n")
    assert idnode("import", "--store", second, str(again)).returncode == 0
    for key in ("88.100.1/A", "88.100.1/B"):
        assert stored(Path(second), key) == stored(Path(store), key)


def test_csv_import_refuses_a_bad_header(tmp_path: Path):
    store = str(tmp_path / "s.db")
    result = idnode("import", "--store", store, "--format", "csv", "-",
                    stdin=b"handle,value\n88.100.1/a,x\n")
    assert result.returncode == 2 and b"-:1: CSV header must name" in result.stderr


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
