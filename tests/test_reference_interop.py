"""Interop with the reference Handle.Net 9.3.1 binaries, both ways, on loopback only.

1. The reference client (``hdl-qresolver`` = ``net.handle.apps.simple.HDLTrace``,
   ``hdl-getsiteinfo``, and a small secret-key create helper) against
   ``idnode serve --handle-port Q``, over UDP and over TCP.
2. idnode's client (``idnode resolve --udp|--tcp HANDLE --server 127.0.0.1:PORT``
   and ``resolver.handle_client``) against the reference server.

The harness itself is checked first (reference client against reference
server), so a failure on the idnode side is idnode's. Skipped, with the reason,
when Java or the distribution (``$IDNODE_HANDLE_REF``, default
``/opt/handle-ref/handle-9.3.1``) is missing; see ``reference_handle.py``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from processes import ROOT, ServerProcess, _env, init_store
from reference_handle import (
    ReferenceServer,
    TraceResult,
    compile_helpers,
    free_udp_tcp_port,
    helpers_missing_reason,
    missing_reason,
    ref_admin_create,
    ref_get_site_info,
    ref_resolve,
    wait_tcp,
    write_client_config,
)

REASON = missing_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(REASON is not None, reason=REASON or "")]

PROTOCOLS = ("UDP", "TCP")

# idnode under test
PREFIX = "88.100.1"
SECRET = "reference-interop-secret"
ADMIN = f"300:{PREFIX}/ADMIN"
ITEM = f"{PREFIX}/interop-1"
ITEM_URL = "https://example.com/interop"
ITEM_EMAIL = "interop@example.org"
BIG = f"{PREFIX}/interop-big"
BIG_TEXT = "0123456789abcdef" * 80  # 1280 bytes: the UDP reply is split into fragments

# reference server
REF_PREFIX = "88.900.1"
REF_SECRET = "reference-server-secret"
REF_ADMIN = f"300:{REF_PREFIX}/ADMIN"
REF_ITEM = f"{REF_PREFIX}/item1"
REF_URL = "https://example.com/x"
REF_EMAIL = "a@example.org"
REF_BIG = f"{REF_PREFIX}/big"


# --- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def helpers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = helpers_missing_reason()
    if reason:
        pytest.skip(reason)
    return compile_helpers(tmp_path_factory.mktemp("ref-helpers"))


@pytest.fixture(scope="module")
def reference_server(tmp_path_factory: pytest.TempPathFactory,
                     helpers: Path) -> Iterator[ReferenceServer]:
    server = ReferenceServer(tmp_path_factory.mktemp("ref-server"), helpers, REF_PREFIX,
                             REF_SECRET)
    server.prepare(seed=(
        (REF_ITEM, "URL", REF_URL),
        (REF_ITEM, "EMAIL", REF_EMAIL),
        (REF_BIG, "DESC", BIG_TEXT),
    ))
    with server:
        yield server


@pytest.fixture(scope="module")
def ref_clients(tmp_path_factory: pytest.TempPathFactory,
                reference_server: ReferenceServer) -> dict[str, Path]:
    """Reference-client config folders aimed at the reference server, one per protocol."""
    base = tmp_path_factory.mktemp("ref-client-ref")
    return {p: write_client_config(base / p.lower(), reference_server.port, p,
                                   pubkey=reference_server.pubkey) for p in PROTOCOLS}


@dataclass
class Idnode:
    server: ServerProcess
    handle_port: int

    def put(self, handle: str, values: list[dict[str, object]]) -> int:
        login = ADMIN.replace(":", "%3A", 1)
        token = base64.b64encode(f"{login}:{SECRET}".encode()).decode()
        request = urllib.request.Request(
            f"{self.server.url}/api/handles/{handle}", method="PUT",
            data=json.dumps({"values": values}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status

    def get(self, handle: str) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.server.url}/api/handles/{handle}",
                                    timeout=10) as reply:
            return json.loads(reply.read())


def _value(index: int, type_: str, data: str, **extra: object) -> dict[str, object]:
    return {"index": index, "type": type_, "data": {"format": "string", "value": data}, **extra}


HS_ADMIN = {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
    "handle": f"{PREFIX}/ADMIN", "index": 300, "permissions": "111111111111"}}}


@pytest.fixture(scope="module")
def idnode(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Idnode]:
    store = tmp_path_factory.mktemp("idnode") / "node.db"
    init_store(store, PREFIX, SECRET)
    handle_port = free_udp_tcp_port()
    with ServerProcess(store, "--handle-port", str(handle_port)) as server:
        wait_tcp(handle_port, 20)
        node = Idnode(server, handle_port)
        assert node.put(ITEM, [
            _value(1, "URL", ITEM_URL),
            _value(2, "EMAIL", ITEM_EMAIL),
            _value(3, "SECRETNOTE", "admins only", permissions="1100"),
            HS_ADMIN,
        ]) in (200, 201)
        assert node.put(BIG, [_value(1, "DESC", BIG_TEXT), HS_ADMIN]) in (200, 201)
        yield node


@pytest.fixture(scope="module")
def idnode_clients(tmp_path_factory: pytest.TempPathFactory, idnode: Idnode) -> dict[str, Path]:
    """Reference-client config folders aimed at idnode's binary port, one per protocol."""
    base = tmp_path_factory.mktemp("ref-client-idnode")
    return {p: write_client_config(base / p.lower(), idnode.handle_port, p) for p in PROTOCOLS}


def _went_over(result: TraceResult, protocol: str, port: int) -> None:
    """The trace shows the request went to 127.0.0.1:port over that protocol, and nothing else."""
    assert f"sending HDL-{protocol} request" in result.stderr, result.stderr
    assert f"to 127.0.0.1:{port}" in result.stderr, result.stderr
    other = "TCP" if protocol == "UDP" else "UDP"
    assert f"sending HDL-{other} request" not in result.stderr, result.stderr


# --- 0. the harness: reference client against reference server ----------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_harness_reference_client_resolves_from_reference_server(
    protocol: str, ref_clients: dict[str, Path], reference_server: ReferenceServer
) -> None:
    result = ref_resolve(ref_clients[protocol], REF_ITEM)
    assert result.rc == 1, result.stdout + result.stderr
    assert result.value(1) == (1, "URL", "rwr-", REF_URL)
    assert result.value(2) == (2, "EMAIL", "rwr-", REF_EMAIL)
    _went_over(result, protocol, reference_server.port)
    missing = ref_resolve(ref_clients[protocol], f"{REF_PREFIX}/nothere")
    assert missing.rc == 100, missing.stdout + missing.stderr


def test_harness_secret_key_create_on_reference_server_over_tcp(
    ref_clients: dict[str, Path], helpers: Path
) -> None:
    handle = f"{REF_PREFIX}/created-by-java"
    done = ref_admin_create(ref_clients["TCP"], helpers, REF_ADMIN, REF_SECRET, handle,
                            "URL=http://example.org/w")
    assert done.returncode == 0 and "RESULT rc=1 " in done.stdout, done.stdout + done.stderr
    assert "oc=200" in done.stderr  # it went through the 402 challenge and an HS_SECKEY answer
    assert ref_resolve(ref_clients["UDP"], handle).value(1) == (
        1, "URL", "rwr-", "http://example.org/w")
    wrong = ref_admin_create(ref_clients["TCP"], helpers, REF_ADMIN, "wrong", f"{handle}-2",
                             "URL=http://example.org/w")
    assert "RESULT rc=403 " in wrong.stdout, wrong.stdout + wrong.stderr


# --- 1. reference client against idnode ---------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reference_client_resolves_from_idnode(
    protocol: str, idnode_clients: dict[str, Path], idnode: Idnode
) -> None:
    result = ref_resolve(idnode_clients[protocol], ITEM)
    assert result.rc == 1, result.stdout + result.stderr
    _went_over(result, protocol, idnode.handle_port)
    assert f"received HDL-{protocol} response" in result.stderr
    assert result.value(1) == (1, "URL", "rwr-", ITEM_URL)
    assert result.value(2) == (2, "EMAIL", "rwr-", ITEM_EMAIL)
    # HS_ADMIN, shown as hex: perms 0FFF, "88.100.1/ADMIN", index 300 (0x12C)
    admin = result.value(100)
    assert admin is not None and admin[1] == "HS_ADMIN"
    assert admin[3] == ("0FFF" + f"{len(PREFIX) + 6:08X}" + f"{PREFIX}/ADMIN".encode().hex().upper()
                        + "0000012C")
    # HDLTrace asks for public values only (PUBL): the 1100 value is left out, no challenge
    assert result.value(3) is None


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reference_client_resolves_other_case_from_idnode(
    protocol: str, idnode_clients: dict[str, Path]
) -> None:
    result = ref_resolve(idnode_clients[protocol], ITEM.upper())
    assert result.rc == 1, result.stdout + result.stderr
    assert result.value(1) == (1, "URL", "rwr-", ITEM_URL)
    assert ITEM.upper() in result.stdout  # the reply echoes the spelling asked for


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reference_client_reads_a_large_record_from_idnode(
    protocol: str, idnode_clients: dict[str, Path]
) -> None:
    """Over UDP the reply is larger than one 512-byte datagram: fragments, reassembled by Java."""
    result = ref_resolve(idnode_clients[protocol], BIG)
    assert result.rc == 1, result.stdout + result.stderr
    assert result.value(1) == (1, "DESC", "rwr-", BIG_TEXT)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reference_client_not_found_on_idnode(
    protocol: str, idnode_clients: dict[str, Path]
) -> None:
    result = ref_resolve(idnode_clients[protocol], f"{PREFIX}/no-such-handle")
    assert result.rc == 100, result.stdout + result.stderr
    assert result.error == "HANDLE NOT FOUND"


def test_reference_get_site_info_from_idnode(tmp_path: Path, idnode: Idnode) -> None:
    site = ref_get_site_info("127.0.0.1", idnode.handle_port, tmp_path)
    assert site["primarySite"] is True
    (server,) = site["servers"]  # type: ignore[misc]
    assert server["address"] == "127.0.0.1"
    interfaces = {(i["protocol"], i["port"]): (i["query"], i["admin"])
                  for i in server["interfaces"]}
    assert interfaces[("TCP", idnode.handle_port)] == (True, True)
    assert interfaces[("UDP", idnode.handle_port)] == (True, False)


def test_reference_secret_key_create_on_idnode_over_tcp(
    idnode_clients: dict[str, Path], helpers: Path, idnode: Idnode
) -> None:
    """OC 100 → 402 challenge → OC 200 HS_SECKEY answer (PBKDF2, 0x22) on a new connection."""
    handle = f"{PREFIX}/created-by-java"
    done = ref_admin_create(idnode_clients["TCP"], helpers, ADMIN, SECRET, handle,
                            "URL=http://example.org/j")
    assert done.returncode == 0 and "RESULT rc=1 " in done.stdout, done.stdout + done.stderr
    record = idnode.get(handle)
    urls = [v for v in record["values"] if v["type"] == "URL"]  # type: ignore[union-attr]
    assert urls and urls[0]["data"]["value"] == "http://example.org/j"
    wrong = ref_admin_create(idnode_clients["TCP"], helpers, ADMIN, "wrong", f"{handle}-2",
                             "URL=http://example.org/j")
    assert "RESULT rc=403 " in wrong.stdout, wrong.stdout + wrong.stderr


# --- 2. idnode's client against the reference server --------------------------------------

def _idnode_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "resolver.cli", *args], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=60, check=False)


def _printed_values(stdout: str) -> dict[int, tuple[str, str]]:
    """index → (type, string data) from ``idnode resolve`` output (Handle REST JSON)."""
    body = json.loads(stdout)
    out = {}
    for v in body["values"]:
        data = v["data"]
        out[v["index"]] = (v["type"], data["value"] if isinstance(data, dict) else data)
    return out


@pytest.mark.parametrize("flag", ["--udp", "--tcp"])
def test_idnode_cli_resolves_from_reference_server(
    flag: str, reference_server: ReferenceServer
) -> None:
    server = f"127.0.0.1:{reference_server.port}"
    done = _idnode_cli("resolve", flag, REF_ITEM, "--server", server)
    assert done.returncode == 0, done.stdout + done.stderr
    assert REF_URL in done.stdout and REF_EMAIL in done.stdout
    values = _printed_values(done.stdout)
    assert values[1] == ("URL", REF_URL)
    assert values[2] == ("EMAIL", REF_EMAIL)
    assert values[100][0] == "HS_ADMIN"

    big = _idnode_cli("resolve", flag, REF_BIG, "--server", server)
    assert big.returncode == 0, big.stdout + big.stderr
    assert _printed_values(big.stdout)[1] == ("DESC", BIG_TEXT)

    missing = _idnode_cli("resolve", flag, f"{REF_PREFIX}/nothere", "--server", server)
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert json.loads(missing.stdout)["responseCode"] == 100


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_idnode_client_library_against_reference_server(
    transport: str, reference_server: ReferenceServer
) -> None:
    from resolver import handle_client

    resolve = handle_client.resolve_udp if transport == "udp" else handle_client.resolve_tcp
    port = reference_server.port

    async def run() -> None:
        item = await resolve("127.0.0.1", port, REF_ITEM)
        assert item.rc == 1 and item.transport == transport
        assert item.handle == REF_ITEM
        got = {v.index: (v.type, bytes(v.data)) for v in item.values}
        assert got[1] == ("URL", REF_URL.encode())
        assert got[2] == ("EMAIL", REF_EMAIL.encode())
        assert got[100][0] == "HS_ADMIN"

        only_url = await resolve("127.0.0.1", port, REF_ITEM.upper(), types=("url",))
        assert [v.index for v in only_url.values] == [1]
        assert only_url.handle == REF_ITEM.upper()

        big = await resolve("127.0.0.1", port, REF_BIG)  # UDP: a fragmented reply
        assert big.rc == 1 and big.transport == transport
        assert {v.index: bytes(v.data) for v in big.values}[1] == BIG_TEXT.encode()

        missing = await resolve("127.0.0.1", port, f"{REF_PREFIX}/nothere")
        assert missing.rc == 100

    asyncio.run(run())
