"""The OpenAPI document matches what the node serves, and schemathesis finds nothing."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
import schemathesis
from live import PREFIX, LiveNode

from bench import api_fuzz
from resolver import openapi
from resolver.http_server import served_routes

ROOT = Path(__file__).resolve().parent.parent


def test_every_served_route_is_documented_and_every_documented_one_served() -> None:
    served, documented = served_routes(), openapi.operations()
    assert served - documented == set(), "served but not in resolver/openapi.py"
    assert documented - served == set(), "documented but not served"


def test_document_loads_as_openapi() -> None:
    schema = schemathesis.openapi.from_dict(openapi.document())
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert labels == {f"{m} {p}" for m, p in openapi.operations()}


def test_readme_endpoint_table_is_rendered_from_the_document() -> None:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"<!-- openapi:begin -->\n(.*?)<!-- openapi:end -->", readme, re.S)
    assert found, "README.md lost its openapi markers"
    assert found.group(1) == openapi.endpoint_table(), "run: python -m resolver.openapi"


async def test_served_at_api_openapi_json(live_node: LiveNode) -> None:
    r = await live_node.session.get(f"{live_node.url}/api/openapi.json")
    assert r.status == 200 and r.content_type == "application/json"
    assert orjson.loads(await r.read()) == openapi.document()


def _concrete(path: str) -> str:
    return path.replace("{handle}", f"{PREFIX}/probe").replace("{id}", "1")


async def test_each_documented_operation_reaches_a_handler(live_node: LiveNode) -> None:
    """Not the dispatcher's fall-through answers (unknown endpoint, method not allowed)."""
    for method, path in sorted(openapi.operations()):
        r = await live_node.session.request(
            method, live_node.url + _concrete(path), allow_redirects=False
        )
        body = await r.text()
        assert r.status not in (405, 501), (method, path, r.status, body)
        assert "Unknown HTTP API endpoint" not in body, (method, path)
        assert not body.startswith('{"message":"Not found'), (method, path)


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/api/prefixes", "GET, HEAD"),
        ("TRACE", "/api/handles", "GET, HEAD, POST, PUT, DELETE"),
        ("PATCH", "/identityv2/data", "DELETE, POST, PUT"),
        ("POST", "/identityv2/data/detail", "GET"),
        ("TRACE", "/api/admin/applications", "GET, HEAD, POST"),
        ("DELETE", "/api/admin/applications/7/approve", "POST"),
        ("GET", "/api/stats/reports", "POST"),
    ],
)
async def test_undocumented_method_on_a_documented_path_is_405_with_allow(
    live_node: LiveNode, method: str, path: str, allow: str
) -> None:
    """Found by schemathesis (unsupported_method): these answered 404 or 400 before."""
    r = await live_node.session.request(method, live_node.url + path)
    assert r.status == 405
    assert r.headers["Allow"] == allow


@pytest.mark.slow
def test_schemathesis_short_run_finds_nothing(tmp_path: Path) -> None:
    """Every operation, positive and negative inputs, with credentials; seed fixed."""
    result = api_fuzz.run(max_examples=5, seed=1, workers=1, workdir=tmp_path, timeout=300)
    assert result.returncode == 0, result.output[-6000:]
    assert result.requests is not None and result.requests > 500


@pytest.mark.parametrize(
    "path",
    [
        "/api/handles?prefix=88.100.1&page=404095076551&pageSize=214274866",
        "/api/prefixes?pageSize=-68539972833115963169701888&page=4906",
        "/api/stats?intervals=&since=-9006139416546840493948928&prefix=88.100.1",
    ],
)
async def test_out_of_range_numbers_are_a_bad_request_not_a_500(
    live_node: LiveNode, path: str
) -> None:
    """Found by schemathesis' long run: these overflowed SQLite or orjson (500)."""
    r = await live_node.session.get(live_node.url + path, headers=live_node.auth())
    assert r.status == 400
    assert (await r.json())["responseCode"] == 4
