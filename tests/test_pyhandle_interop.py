"""pyhandle 1.5 (PyPI, unmodified) against a real ``idnode serve`` process.

pyhandle is synchronous (requests), so these tests are plain functions; the
node runs in its own process, started on a store made by ``idnode init``.
What pyhandle sends and relies on (read from its source, checked here):

- GET  ``/api/handles/<handle>`` with ``Accept: application/json`` and never
  credentials, also ``?auth=true`` before a modification; it needs 200 with
  ``responseCode`` 1 and ``handle`` equal to the string it asked for, or 404
  with ``responseCode`` 100 for "no such handle" (anything else raises).
- PUT  ``...?overwrite=true|false`` (whole record) or ``...?index=i&index=j&
  overwrite=true`` (values), ``Content-Type: application/json``, body
  ``{"values": [...]}``; success is 200/201 with ``responseCode`` 1 and a
  ``handle`` key in the body.
- DELETE ``...`` or ``...?index=i``; it reads ``handle`` from the body of every
  reply, a 404 included.
- Credentials: ``Authorization: Basic base64("300%3A<prefix>/ADMIN:<secret>")``
  on PUT and DELETE only; 401 or ``responseCode`` 402 means "not authenticated".
- ``register_handle*(overwrite=False)`` checks existence itself with a GET and
  raises ``HandleAlreadyExistsException`` without sending a PUT.
- New records get ``HS_ADMIN`` at index 100 naming ``handleowner``, by default
  ``200:0.NA/<prefix>`` (index sent as the *string* "200"), with permissions
  ``011111110011``.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import requests
from processes import ServerProcess, init_store
from pyhandle.handleclient import PyHandleClient
from pyhandle.handleexceptions import (
    GenericHandleError,
    HandleAlreadyExistsException,
    HandleAuthenticationError,
    HandleNotFoundException,
)

pytestmark = pytest.mark.slow

PREFIX = "88.100.1"
SECRET = "pyhandle-interop-secret"
USERNAME = f"300:{PREFIX}/ADMIN"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    store = tmp_path_factory.mktemp("pyhandle") / "node.db"
    init_store(store, PREFIX, SECRET)
    with ServerProcess(store) as server:
        yield server


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[requests.PreparedRequest]:
    """Every request pyhandle sends (observed below requests' Session, pyhandle untouched)."""
    seen: list[requests.PreparedRequest] = []
    original = requests.Session.send

    def recording_send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(request)
        return original(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", recording_send)
    return seen


def writer(node: ServerProcess, **config):  # type: ignore[no-untyped-def]
    return PyHandleClient("rest").instantiate_with_username_and_password(
        node.url, USERNAME, SECRET, **config
    )


def raw(node: ServerProcess, handle: str) -> tuple[int, dict]:
    """The record as a plain HTTP client sees it."""
    r = requests.get(f"{node.url}/api/handles/{handle}", timeout=10)
    return r.status_code, r.json()


def by_index(body: dict) -> dict[int, tuple[str, object]]:
    return {v["index"]: (v["type"], v["data"]) for v in body["values"]}


def s(text: str) -> dict[str, str]:
    return {"format": "string", "value": text}


def admin(handle: str, index: int, perms: str = "011111110011") -> dict:
    return {"format": "admin", "value": {"handle": handle, "index": index, "permissions": perms}}


def test_pyhandle_write_read_cycle(node: ServerProcess, sent: list[requests.PreparedRequest]):
    # Login: pyhandle checks the username handle exists (anonymous GET) and
    # keeps Basic credentials for writes. handleowner makes it name the
    # logged-in admin in new records' HS_ADMIN (see the default-owner test).
    client = writer(node, handleowner=USERNAME)
    login = sent[-1]
    assert login.method == "GET" and login.url == f"{node.url}/api/handles/{PREFIX}/ADMIN"
    assert "Authorization" not in login.headers

    # register_handle: one PUT ?overwrite=false after a GET that answered 404.
    h = f"{PREFIX}/pyhandle-1"
    sent.clear()
    assert client.register_handle(h, "https://example.com/1", checksum="c0ffee",
                                  EMAIL="a@example.com") == h
    assert [(r.method, r.url) for r in sent] == [
        ("GET", f"{node.url}/api/handles/{h}"),
        ("PUT", f"{node.url}/api/handles/{h}?overwrite=false"),
    ]
    put = sent[-1]
    assert put.headers["Content-Type"] == "application/json"
    scheme, _, token = put.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(token).decode() == f"300%3A{PREFIX}/ADMIN:{SECRET}"
    status, body = raw(node, h)
    assert status == 200 and body["handle"] == h
    assert by_index(body) == {
        100: ("HS_ADMIN", admin(f"{PREFIX}/ADMIN", 300)),
        1: ("URL", s("https://example.com/1")),
        2: ("EMAIL", s("a@example.com")),
        3: ("CHECKSUM", s("c0ffee")),
    }
    assert all(v["timestamp"].endswith("Z") for v in body["values"])

    # Registering again without overwrite: "exists" (pyhandle decides from its GET).
    sent.clear()
    with pytest.raises(HandleAlreadyExistsException):
        client.register_handle(h, "https://example.com/other", overwrite=False)
    assert [r.method for r in sent] == ["GET"]
    # The node refuses the same PUT on its own too, and nothing changed.
    r = requests.put(f"{node.url}/api/handles/{h}?overwrite=false", data=put.body,
                     headers={k: put.headers[k] for k in ("Content-Type", "Authorization")},
                     timeout=10)
    assert r.status_code == 409 and r.json() == {"responseCode": 101, "handle": h}
    assert raw(node, h)[1]["values"] == body["values"]

    # Reads.
    assert client.retrieve_handle_record(h) == {
        "HS_ADMIN": str({"handle": f"{PREFIX}/ADMIN", "index": 300,
                         "permissions": "011111110011"}),
        "URL": "https://example.com/1",
        "EMAIL": "a@example.com",
        "CHECKSUM": "c0ffee",
    }
    assert client.get_value_from_handle(h, "URL") == "https://example.com/1"
    assert client.get_value_from_handle(h, "NOPE") is None

    # modify_handle_value: GET ?auth=true, then PUT of just the changed/added indexes.
    sent.clear()
    assert client.modify_handle_value(h, URL="https://example.com/2", DESC="second") == h
    assert [(r.method, r.url) for r in sent] == [
        ("GET", f"{node.url}/api/handles/{h}?auth=true"),
        ("PUT", f"{node.url}/api/handles/{h}?index=1&index=4&overwrite=true"),
    ]
    assert by_index(raw(node, h)[1]) == {
        100: ("HS_ADMIN", admin(f"{PREFIX}/ADMIN", 300)),
        1: ("URL", s("https://example.com/2")),
        2: ("EMAIL", s("a@example.com")),
        3: ("CHECKSUM", s("c0ffee")),
        4: ("DESC", s("second")),
    }

    # delete_handle_value: DELETE ?index=<the CHECKSUM index>.
    sent.clear()
    assert client.delete_handle_value(h, "CHECKSUM") == h
    assert (sent[-1].method, sent[-1].url) == ("DELETE", f"{node.url}/api/handles/{h}?index=3")
    assert sorted(by_index(raw(node, h)[1])) == [1, 2, 4, 100]
    assert client.delete_handle_value(h, "CHECKSUM") is None  # nothing left to delete
    assert client.get_value_from_handle(h, "CHECKSUM") is None

    # generate_and_register_handle: a UUID suffix chosen by pyhandle.
    minted = client.generate_and_register_handle(PREFIX, "https://example.com/minted",
                                                 checksum="abc123")
    assert minted.startswith(f"{PREFIX}/") and len(minted) == len(PREFIX) + 1 + 36
    status, body = raw(node, minted)
    assert status == 200 and by_index(body) == {
        100: ("HS_ADMIN", admin(f"{PREFIX}/ADMIN", 300)),
        1: ("URL", s("https://example.com/minted")),
        2: ("CHECKSUM", s("abc123")),
    }

    # register_handle_json: the caller's indexes and formats; HS_ADMIN added by pyhandle.
    hj = f"{PREFIX}/pyhandle-json"
    entries = [
        {"index": 1, "type": "URL", "data": s("https://example.com/json")},
        {"index": 7, "type": "EMAIL", "data": "j@example.com", "ttl": 600},
        {"index": 8, "type": "BLOB", "data": {"format": "hex", "value": "00ff10"}},
    ]
    assert client.register_handle_json(hj, entries) == hj
    status, body = raw(node, hj)
    assert status == 200 and by_index(body) == {
        1: ("URL", s("https://example.com/json")),
        7: ("EMAIL", s("j@example.com")),
        8: ("BLOB", {"format": "base64", "value": "AP8Q"}),
        100: ("HS_ADMIN", admin(f"{PREFIX}/ADMIN", 300)),
    }
    assert {v["index"]: v["ttl"] for v in body["values"]}[7] == 600
    with pytest.raises(HandleAlreadyExistsException):
        client.register_handle_json(hj, entries)

    # overwrite=True replaces the whole record (PUT ?overwrite=true, 200).
    sent.clear()
    assert client.register_handle_json(hj, entries[:1], overwrite=True) == hj
    assert [(r.method, r.url) for r in sent] == [
        ("PUT", f"{node.url}/api/handles/{hj}?overwrite=true")
    ]
    assert sorted(by_index(raw(node, hj)[1])) == [1, 100]

    # A read-only client: anonymous GETs only.
    reader = PyHandleClient("rest").instantiate_for_read_access(handle_server_url=node.url)
    sent.clear()
    assert reader.retrieve_handle_record(h) == {
        "HS_ADMIN": str({"handle": f"{PREFIX}/ADMIN", "index": 300,
                         "permissions": "011111110011"}),
        "URL": "https://example.com/2",
        "EMAIL": "a@example.com",
        "DESC": "second",
    }
    assert reader.get_value_from_handle(minted, "URL") == "https://example.com/minted"
    assert reader.retrieve_handle_record(f"{PREFIX}/never-registered") is None
    assert all(r.method == "GET" and "Authorization" not in r.headers for r in sent)
    # ADMIN's secret (HS_SECKEY, index 300) is not shown to anyone anonymous.
    assert reader.retrieve_handle_record(f"{PREFIX}/ADMIN") == {
        "HS_ADMIN": str({"handle": f"{PREFIX}/ADMIN", "index": 300,
                         "permissions": "111111111111"}),
    }

    # delete_handle, then it is gone for every client.
    for handle in (h, hj, minted):
        assert client.delete_handle(handle) == handle
        assert raw(node, handle) == (404, {"responseCode": 100, "handle": handle})
    assert reader.retrieve_handle_record(h) is None
    with pytest.raises(HandleNotFoundException):
        client.get_value_from_handle(h, "URL")
    with pytest.raises(HandleNotFoundException):
        client.delete_handle(h)


def test_pyhandle_wrong_secret_is_refused(node: ServerProcess):
    client = PyHandleClient("rest").instantiate_with_username_and_password(
        node.url, USERNAME, "not-the-secret")
    h = f"{PREFIX}/pyhandle-refused"
    with pytest.raises(HandleAuthenticationError) as caught:
        client.register_handle(h, "https://example.com/x")
    assert caught.value.response.status_code == 401
    assert raw(node, h)[0] == 404


def test_pyhandle_default_handleowner(node: ServerProcess):
    """Without ``handleowner`` pyhandle names ``200:0.NA/<prefix>`` as the admin.

    As on Handle.Net, pyhandle names the prefix's admin group (``200:0.NA/<prefix>``)
    as the owner; ``idnode init`` creates that group with the prefix admin in it,
    so the admin may change the handle afterwards.
    """
    client = writer(node)
    h = f"{PREFIX}/pyhandle-default-owner"
    assert client.register_handle(h, "https://example.com/d") == h
    status, body = raw(node, h)
    assert status == 200
    # pyhandle sent the admin index as the string "200"; it is stored as the integer.
    assert by_index(body)[100] == ("HS_ADMIN", admin(f"0.NA/{PREFIX}", 200))
    assert client.modify_handle_value(h, URL="https://example.com/changed") == h
    assert by_index(raw(node, h)[1])[1] == ("URL", s("https://example.com/changed"))


def test_admin_group_membership_is_what_grants(node: ServerProcess):
    """Take the admin out of the group at ``0.NA/<prefix>`` index 200: pyhandle's
    default-owned handles are then refused to it, and allowed again once restored."""
    prefix_url = f"{node.url}/api/handles/0.NA/{PREFIX}"
    auth = (f"300%3A{PREFIX}/ADMIN", SECRET)

    def group(members):
        return {"values": [{"index": 200, "type": "HS_VLIST",
                            "data": {"format": "vlist", "value": members}}]}

    client = writer(node)
    h = f"{PREFIX}/pyhandle-group-owner"
    client.register_handle(h, "https://example.com/g")
    r = requests.put(f"{prefix_url}?index=200", json=group([{"handle": "88.999/X", "index": 1}]),
                     auth=auth, timeout=10)
    assert r.status_code == 200
    try:
        with pytest.raises(GenericHandleError) as caught:
            client.modify_handle_value(h, URL="https://example.com/g2")
        assert caught.value.response.status_code == 403
        assert caught.value.response.json()["responseCode"] == 400  # INVALID_ADMIN
    finally:
        r = requests.put(f"{prefix_url}?index=200",
                         json=group([{"handle": f"{PREFIX}/ADMIN", "index": 300}]),
                         auth=auth, timeout=10)
        assert r.status_code == 200
    assert client.modify_handle_value(h, URL="https://example.com/g2") == h
    assert client.get_value_from_handle(h, "URL") == "https://example.com/g2"
