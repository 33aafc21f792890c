"""The OpenAPI 3 document of every HTTP API the node serves (``GET /api/openapi.json``).

Written by hand, next to the code, and held to it twice: ``tests/test_openapi.py``
checks that its operations are exactly the dispatcher's route tables
(``resolver.http_server.served_routes``), and schemathesis
(``bench/api_fuzz.py``, short run in ``make test``) checks live replies against
its schemas. To add a route: add it to its dispatcher table and an entry to
``_paths()`` below; the drift test names whichever side is missing.

Bodies follow Handle.Net's REST JSON (shared/reference/handle-rest.md) and
Teleinfo SNMS v5 (shared/reference/snms-v5.md). Error replies are documented
with their status codes; a 500 is never documented: it is always a bug.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from protocol.rest_json import BATCH_LIMIT
from protocol.snms import BATCH_LIMIT as SNMS_BATCH_LIMIT

JSON = "application/json"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> dict[str, Any]:
    return {JSON: {"schema": schema}}


def _reply(description: str, schema: str | Schema, **extra: Any) -> dict[str, Any]:
    body = _ref(schema) if isinstance(schema, str) else schema
    return {"description": description, "content": _json(body), **extra}



# Every Handle REST error, by status; operations pick the ones they can give.
_ERRORS: dict[str, dict[str, Any]] = {
    "400": {
        "description": "Malformed request (RC 4), invalid handle (102) or value (202), prefix "
        "not homed here (301), or value not found on a delete (200); text/plain when the "
        "HTTP parser itself refuses the request (e.g. a request line over 8190 bytes)",
        "content": {JSON: {"schema": _ref("ErrorReply")},
                    "text/plain": {"schema": {"type": "string"}}},
    },
    "401": _reply("Credentials needed (RC 402) or wrong (RC 403)", "ErrorReply"),
    "403": _reply(
        "Not allowed (RC 400/401/404), or credentials sent where they are ignored (RC 402)",
        "ErrorReply",
    ),
    "404": _reply("Handle not found (RC 100), or no such endpoint (RC 4)", "ErrorReply"),
    "409": _reply("Handle (RC 101) or value index (RC 201) already exists", "ErrorReply"),
    "413": _reply("Request body over the node's limit (RC 4)", "ErrorReply"),
    "429": _reply(
        "Too many failed logins (RC 403, Retry-After) or a prefix quota exceeded (RC 601-603)",
        "ErrorReply",
    ),
    "501": _reply("Unknown method (RC 4) or unsupported operation (RC 5)", "ErrorReply"),
    "503": _reply("Server too busy (RC 3): shed under overload; retry later", "ErrorReply",
                  headers={"Retry-After": {"schema": {"type": "string"}}}),
}
_READ_ERRORS = ("400", "401", "403", "404", "429", "501", "503")
_WRITE_ERRORS = ("400", "401", "403", "404", "409", "413", "429", "501", "503")


def _errors(codes: tuple[str, ...]) -> dict[str, Any]:
    return {code: _ERRORS[code] for code in codes}


def _query(name: str, schema: Schema, description: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description, **extra}


_HANDLE_PARAM = {
    "name": "handle",
    "in": "path",
    "required": True,
    "description": "The handle, e.g. 88.100.1/item1 (a '/' may be sent as is or as %2F)",
    "schema": {"type": "string", "pattern": "^[^/]+/.*$"},
}
_INDEX = _query(
    "index",
    {"type": "array", "items": {"type": "integer"}},
    "Only values with these indexes (union with type)",
    style="form",
    explode=True,
)
_PAGING = [
    _query("page", {"type": "integer", "minimum": 0}, "Zero-based page (with pageSize)"),
    _query("pageSize", {"type": "integer"}, "Page size (with page); <= 0 gives no names"),
]
# Handle.Net's reading of a flag: "false", "0" or "no" (any case) is false, all else true.
_BOOL = {"type": "string"}
_BASIC: list[dict[str, list[str]]] = [{"handleBasic": []}]
_SNMS: list[dict[str, list[str]]] = [{"snmsToken": []}]

_RESOLVE_PARAMS = [
    _HANDLE_PARAM,
    _INDEX,
    _query(
        "type",
        {"type": "array", "items": {"type": "string"}},
        "Only values of these types (case-insensitive; 'URL.' also matches 'URL.alt')",
        style="form",
        explode=True,
    ),
    _query("publicOnly", _BOOL, "Only public values (default: true unless authenticated)"),
    _query("pretty", {"type": "string"}, "Indent the JSON reply"),
    _query(
        "callback",
        {"type": "string", "pattern": "^[A-Za-z_$][A-Za-z0-9_$.]{0,63}$"},
        "JSONP: reply application/javascript 'callback({...});'",
    ),
]

_RESOLVED = {
    "description": "The handle's values (RC 1), or none that match (RC 200)",
    "content": {
        JSON: {"schema": _ref("HandleReply")},
        "application/javascript": {"schema": {"type": "string"}},
    },
}


def _handle_operations() -> dict[str, Any]:
    resolve = {
        "tags": ["Handle REST"],
        "summary": "Resolve a handle",
        "parameters": _RESOLVE_PARAMS,
        "security": [{}, *_BASIC],
        "responses": {"200": _RESOLVED, **_errors(_READ_ERRORS)},
    }
    return {
        "parameters": [_HANDLE_PARAM],
        "get": {**resolve, "operationId": "resolveHandle"},
        "head": {
            **resolve,
            "operationId": "resolveHandleHead",
            "summary": "Resolve a handle, headers only",
            "responses": {"200": {"description": "As GET, without a body"},
                          **_errors(_READ_ERRORS)},
        },
        "post": {
            **resolve,
            "operationId": "resolveHandlePost",
            "summary": "Resolve a handle; JSON body keys act as query parameters",
            "requestBody": {"required": False, "content": _json({"type": "object"})},
            "responses": {"200": _RESOLVED, **_errors((*_READ_ERRORS, "413"))},
        },
        "put": {
            "tags": ["Handle REST"],
            "operationId": "putHandle",
            "summary": "Create or replace a handle, or add/replace some values (?index=)",
            "security": _BASIC,
            "parameters": [
                _query("overwrite", _BOOL, "false: fail (409) if the handle or index exists"),
                _query(
                    "index",
                    {"type": "array", "items": {"type": "string"}},
                    "Add or replace only these indexes ('various': any in the body)",
                    style="form",
                    explode=True,
                ),
                _query("mintNewSuffix", _BOOL, "On PREFIX/: create PREFIX/<uuid>"),
            ],
            "requestBody": {"required": True, "content": _json(_ref("PutBody"))},
            "responses": {
                "200": _reply("Replaced", "OkReply"),
                "201": _reply("Created", "OkReply"),
                **_errors(_WRITE_ERRORS),
            },
        },
        "delete": {
            "tags": ["Handle REST"],
            "operationId": "deleteHandle",
            "summary": "Delete a handle, or only some of its values (?index=)",
            "security": _BASIC,
            "parameters": [_INDEX],
            "responses": {"200": _reply("Deleted", "OkReply"), **_errors(_WRITE_ERRORS)},
        },
        "options": {
            "tags": ["Handle REST"],
            "operationId": "handleOptions",
            "summary": "The methods this path allows (the handle is not read)",
            "parameters": [{**_HANDLE_PARAM, "schema": {"type": "string"}}],
            "responses": {
                "200": {
                    "description": "Allow header",
                    "headers": {"Allow": {"schema": {"type": "string"}, "required": True}},
                },
                **_errors(("400", "503")),
            },
        },
    }


def _collection_operations() -> dict[str, Any]:
    return {
        "get": {
            "tags": ["Handle REST"],
            "operationId": "listHandles",
            "summary": "List a homed prefix's handles (LIST_HANDLES permission)",
            "security": _BASIC,
            "parameters": [
                _query("prefix", {"type": "string", "minLength": 1}, "e.g. 88.100.1",
                       required=True),
                *_PAGING,
            ],
            "responses": {
                "200": _reply("Handle names, stored (upper-case) form, sorted", "HandleList"),
                **_errors(_READ_ERRORS),
            },
        },
        "post": {
            "tags": ["Handle REST"],
            "operationId": "batchRegister",
            "summary": f"Register up to {BATCH_LIMIT} records; each all or nothing",
            "description": "idnode's extension (Handle.Net has none). Results in input order.",
            "security": _BASIC,
            "parameters": [
                _query("overwrite", _BOOL, "false: only create (RC 101 per existing handle)"),
            ],
            "requestBody": {
                "required": True,
                "content": {
                    JSON: {"schema": {"type": "array", "maxItems": BATCH_LIMIT,
                                      "items": _ref("BatchItem")}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "200": _reply("One result per item", "BatchReply"),
                **_errors(("400", "401", "403", "413", "429", "503")),
            },
        },
        "put": {
            "tags": ["Handle REST"],
            "operationId": "putEmptyHandle",
            "summary": "The reference's answer to PUT of an empty handle: RC 301",
            "responses": _errors(("400", "503")),
        },
        "delete": {
            "tags": ["Handle REST"],
            "operationId": "deleteEmptyHandle",
            "summary": "The reference's answer to DELETE of an empty handle: RC 100",
            "responses": _errors(("404", "503")),
        },
    }


def _plain_get(op_id: str, tag: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    return {"get": {"tags": [tag], "operationId": op_id, "summary": summary,
                    "responses": responses}}


def _snms(op_id: str, summary: str, *, body: Schema | None = None,
          query: list[dict[str, Any]] | None = None, token: bool = True,
          data: Schema | None = None) -> dict[str, Any]:
    """An SNMS v5 operation: every outcome an envelope with HTTP 200 (status in the body)."""
    op: dict[str, Any] = {
        "tags": ["SNMS v5"],
        "operationId": op_id,
        "summary": summary,
        "responses": {
            "200": _reply(
                "Envelope: status 1 success; -1 not logged in; -2 business failure "
                "(message says why); -3 no permission; -4 internal error",
                {"allOf": [_ref("SnmsEnvelope")]} if data is None else _envelope(data),
            ),
            "503": _reply("Server too busy (shed under overload)", "ErrorReply"),
        },
    }
    if token:
        op["security"] = _SNMS
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if query:
        op["parameters"] = query
    return op


def _envelope(data: Schema) -> Schema:
    return {"allOf": [_ref("SnmsEnvelope"), {"properties": {"data": data}}]}


def _admin(op_id: str, summary: str, ok: str, *, status: str = "200",
           body: Schema | None = None, query: list[dict[str, Any]] | None = None,
           errors: tuple[str, ...] = ("400", "401", "403", "404", "429", "503")
           ) -> dict[str, Any]:
    """An /api/admin operation: Handle-style JSON, a bearer token from /identity/token."""
    op: dict[str, Any] = {
        "tags": ["Admin"], "operationId": op_id, "summary": summary, "security": _SNMS,
        "responses": {status: _reply("Done (RC 1)", ok), **_errors(errors)},
    }
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if query:
        op["parameters"] = query
    return op


_APPLICATION_ID = {"name": "id", "in": "path", "required": True,
                   "schema": {"type": "integer", "minimum": 0}}


def _admin_paths() -> dict[str, Any]:
    string = {"type": "string"}
    reason = {"type": "object", "properties": {"reason": string}}
    return {
        "/api/admin/accounts": {"post": _admin(
            "createAccount", "Node admin: create an applicant or auditor account",
            "AccountCreated", status="201", errors=("400", "401", "403", "409", "429", "503"),
            body={"type": "object", "required": ["username", "role"],
                  "properties": {"username": string, "password": string,
                                 "role": {"type": "string", "enum": ["applicant", "auditor"]}}},
        )},
        "/api/admin/applications": {
            "post": _admin(
                "applyForPrefix", "Applicant: apply for an enterprise prefix", "ApplicationReply",
                status="201", errors=("400", "401", "403", "409", "429", "503"),
                body={"type": "object", "required": ["enterprise"],
                      "properties": {"enterprise": string, "prefix": string, "detail": string}},
            ),
            "get": _admin(
                "listApplications", "Applications: all (auditor, node admin) or one's own",
                "ApplicationList", query=[
                    _query("state", {"type": "string",
                                     "enum": ["pending", "approved", "rejected"]}, "Filter"),
                    _query("applicant", string, "Filter (auditors and node admins)"),
                ],
            ),
        },
        "/api/admin/applications/{id}": {
            "parameters": [_APPLICATION_ID],
            "get": _admin("showApplication", "One application", "ApplicationReply"),
        },
        "/api/admin/applications/{id}/approve": {
            "parameters": [_APPLICATION_ID],
            "post": _admin("approveApplication", "Auditor: approve (allocates the prefix)",
                           "ApplicationReply", body=reason,
                           errors=("400", "401", "403", "404", "409", "429", "503")),
        },
        "/api/admin/applications/{id}/reject": {
            "parameters": [_APPLICATION_ID],
            "post": _admin("rejectApplication", "Auditor: reject, with a reason",
                           "ApplicationReply", body=reason,
                           errors=("400", "401", "403", "404", "409", "429", "503")),
        },
        "/api/admin/applications/{id}/credentials": {
            "parameters": [_APPLICATION_ID],
            "post": _admin("applicationCredentials",
                           "The applicant, once approved: the prefix admin's identity and "
                           "secret (once)", "Credentials",
                           errors=("400", "401", "403", "404", "409", "429", "503")),
        },
    }


def _stats_paths() -> dict[str, Any]:
    string, integer = {"type": "string"}, {"type": "integer"}
    return {
        "/api/stats": {"get": {
            "tags": ["Statistics"], "operationId": "showStats",
            "summary": "Usage totals per node and prefix (and per interval)",
            "parameters": [
                _query("node", string, "Only this reporting node"),
                _query("prefix", string, "Only this prefix"),
                _query("since", integer, "Only intervals from this Unix time"),
                _query("intervals", _BOOL, "Also list each interval"),
            ],
            "responses": {"200": _reply("Totals", "StatsReply"), **_errors(("400", "503"))},
        }},
        "/api/stats/reports": {"post": {
            "tags": ["Statistics"], "operationId": "receiveStatsReport",
            "summary": "A lower node's usage report (msgpack, protocol/stats_report.py)",
            "security": _BASIC,
            "requestBody": {"required": True, "content": {
                "application/msgpack": {"schema": {"type": "string", "format": "binary"}}}},
            "responses": {
                "200": _reply("Counted (or counted before: duplicate)", {
                    "type": "object", "required": ["responseCode", "reportId", "duplicate"],
                    "properties": {"responseCode": {"type": "integer", "enum": [1]},
                                   "reportId": string, "duplicate": {"type": "boolean"},
                                   "refused": {"type": "array", "items": string}}}),
                **_errors(("400", "401", "403", "429", "503")),
            },
        }},
    }


def _paths() -> dict[str, Any]:
    text = {"description": "Plain text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    status = {"type": "object", "required": ["status"],
              "properties": {"status": {"type": "string"}}}
    delete_body = {"oneOf": [{"type": "array", "items": {"type": "string"}},
                             {"type": "object", "properties": {
                                 "handles": {"type": "array", "items": {"type": "string"}}}}]}
    template_key = {"type": "object", "required": ["prefix", "version"],
                    "properties": {"prefix": {"type": "string"}, "version": {"type": "string"}}}
    return {
        "/api/handles/{handle}": _handle_operations(),
        "/api/handles": _collection_operations(),
        "/api/prefixes": {"get": {
            "tags": ["Handle REST"],
            "operationId": "listPrefixes",
            "summary": "Prefixes homed on this node",
            "security": _BASIC,
            "parameters": _PAGING,
            "responses": {"200": _reply("Prefix handles", "PrefixList"),
                          **_errors(_READ_ERRORS)},
        }},
        "/api/openapi.json": _plain_get(
            "openapi", "Node", "This document",
            {"200": _reply("OpenAPI 3 document", {"type": "object"}), **_errors(("503",))}),
        "/healthz": _plain_get("healthz", "Node", "Liveness",
                               {"200": _reply("Alive", status)}),
        "/readyz": _plain_get("readyz", "Node",
                              "Readiness: the store answers and is not still warming up",
                              {"200": _reply("Ready", status), "503": _reply("Not ready", status)}),
        "/metrics": _plain_get("metrics", "Node", "Prometheus metrics", {"200": text}),
        "/": _plain_get("index", "Node", "Node summary", {"200": _reply("Role and prefixes", {
            "type": "object", "required": ["node", "role", "prefixes"],
            "properties": {"node": {"type": "string"}, "role": {"type": "string"},
                           "prefixes": {"type": "array", "items": {"type": "string"}},
                           "api": {"type": "array", "items": {"type": "string"}}}}),
            **_errors(("503",))}),
        "/{handle}": {
            "parameters": [{**_HANDLE_PARAM, "schema": {"type": "string"}}],
            "get": {
                "tags": ["Proxy"],
                "operationId": "proxyResolve",
                "summary": "hdl.handle.net-style: redirect to the handle's first public URL",
                "parameters": [
                    _query("noredirect", {"type": "string"}, "Show the values instead"),
                    {"name": "Accept", "in": "header", "schema": {"type": "string"}},
                ],
                "responses": {
                    "302": {"description": "To the first URL value",
                            "headers": {"Location": {"schema": {"type": "string"},
                                                     "required": True}}},
                    "200": {"description": "The values (HTML if Accept asks for it, else JSON)",
                            "content": {JSON: {"schema": _ref("HandleReply")},
                                        "text/html": {"schema": {"type": "string"}}}},
                    **_errors(("400", "404", "429", "503")),
                },
            },
        },
        "/identity/token": {"post": _snms(
            "snmsToken", "Log in: a token for 24 h", token=False, body=_ref("SnmsLogin"),
            data={"type": "object", "properties": {"token": {"type": "string"}},
                  "nullable": True})},
        "/identity/token/v1": {"post": _snms(
            "snmsTokenV1", "Log in, password sha256hex(sha256hex(pw) + yyyy-MM-dd)",
            token=False, body=_ref("SnmsLogin"),
            data={"type": "object", "properties": {"token": {"type": "string"}},
                  "nullable": True})},
        "/identityv2/data": {
            "post": _snms("snmsCreate", "Create a handle", body=_ref("SnmsRecord")),
            "put": _snms("snmsUpdate", "Replace a handle's values", body=_ref("SnmsRecord")),
            "delete": _snms("snmsDelete", "Delete a handle", body={
                "type": "object", "required": ["handle"],
                "properties": {"handle": {"type": "string"}}}),
        },
        "/identityv2/data/detail": {"get": _snms(
            "snmsDetail", "A handle's values",
            query=[_query("handle", {"type": "string"}, "e.g. 88.100.1/item1", required=True)])},
        "/identityv2/data/batchCreate": {"post": _snms(
            "snmsBatchCreate", "Create many handles", body=_ref("SnmsBatch"),
            data=_ref("SnmsItemResults"))},
        "/identityv2/data/batchUpdate": {"put": _snms(
            "snmsBatchUpdate", "Replace many handles", body=_ref("SnmsBatch"),
            data=_ref("SnmsItemResults"))},
        "/identityv2/data/batchDelete": {"delete": _snms(
            "snmsBatchDelete", "Delete many handles", body=delete_body,
            data=_ref("SnmsItemResults"))},
        **_admin_paths(),
        **_stats_paths(),
        "/snms/api/v5/template": {
            "get": _snms("templateGet", "A template", query=[
                _query("prefix", {"type": "string"}, "Its prefix", required=True),
                _query("version", {"type": "string"}, "Its version", required=True)]),
            "post": _snms("templateCreate", "Create a template", body=_ref("SnmsTemplate")),
            "put": _snms("templateUpdate", "Update a template", body=_ref("SnmsTemplate")),
            "delete": _snms("templateDelete", "Delete an unused template", body=template_key),
        },
    }


def _schemas() -> dict[str, Schema]:
    string = {"type": "string"}
    integer = {"type": "integer"}
    value_data = {
        "oneOf": [
            string,
            {"type": "object", "required": ["format", "value"],
             "properties": {"format": {"type": "string",
                                       "enum": ["string", "base64", "hex", "admin", "vlist",
                                                "site", "key"]},
                            "value": {}}},
        ]
    }
    value = {
        "type": "object",
        "required": ["index", "type", "data"],
        "properties": {
            "index": integer,
            "type": string,
            "data": value_data,
            "permissions": {"type": "string", "pattern": "^[01]{4}$"},
            "ttl": {"oneOf": [integer, string]},
            "timestamp": string,
            "references": {"type": "array", "items": {
                "type": "object", "required": ["handle", "index"],
                "properties": {"handle": string, "index": integer}}},
        },
    }
    snms_value = {
        "type": "object", "required": ["index", "type", "data"],
        "properties": {"index": integer, "type": string, "auth": string,
                       "data": {"type": "object", "required": ["format", "value"],
                                "properties": {"format": {"type": "string", "enum": ["string"]},
                                               "value": string}}},
    }
    snms_record = {
        "type": "object", "required": ["handle", "templateVersion", "value"],
        "properties": {"handle": string, "templateVersion": string,
                       "value": {"type": "array", "items": snms_value}},
    }
    return {
        "Value": value,
        "HandleReply": {
            "type": "object", "required": ["responseCode", "handle", "values"],
            "properties": {"responseCode": {"type": "integer", "enum": [1, 200]},
                           "handle": string,
                           "values": {"type": "array", "items": _ref("Value")}},
        },
        "ErrorReply": {
            "type": "object", "required": ["responseCode"],
            "properties": {"responseCode": integer, "message": string, "handle": string},
            "description": "A Handle response code (RC) other than 1, and why",
        },
        "OkReply": {
            "type": "object", "required": ["responseCode", "handle"],
            "properties": {"responseCode": {"type": "integer", "enum": [1]}, "handle": string},
        },
        "PutBody": {
            "oneOf": [
                {"type": "object", "required": ["values"],
                 "properties": {"handle": string,
                                "values": {"type": "array", "items": _ref("Value")}}},
                {"type": "array", "items": _ref("Value")},
                _ref("Value"),
            ]
        },
        "BatchItem": {
            "type": "object", "required": ["handle", "values"], "additionalProperties": False,
            "properties": {"handle": string,
                           "values": {"type": "array", "items": _ref("Value")}},
        },
        "BatchReply": {
            "type": "object", "required": ["responseCode", "results"],
            "properties": {
                "responseCode": {"type": "integer", "enum": [1]},
                "results": {"type": "array", "items": {
                    "type": "object", "required": ["handle", "responseCode"],
                    "properties": {"handle": {"type": "string", "nullable": True},
                                   "responseCode": integer,
                                   "created": {"type": "boolean"},
                                   "message": string}}},
            },
        },
        "HandleList": {
            "type": "object", "required": ["responseCode", "prefix", "totalCount", "handles"],
            "properties": {"responseCode": integer, "prefix": string,
                           "totalCount": {"type": "string", "pattern": "^[0-9]+$"},
                           "page": integer, "pageSize": integer,
                           "handles": {"type": "array", "items": string}},
        },
        "PrefixList": {
            "type": "object", "required": ["responseCode", "totalCount", "prefixes"],
            "properties": {"responseCode": integer,
                           "totalCount": {"type": "string", "pattern": "^[0-9]+$"},
                           "page": integer, "pageSize": integer,
                           "prefixes": {"type": "array", "items": string}},
        },
        "SnmsEnvelope": {
            "type": "object", "required": ["message", "status", "data"],
            "properties": {"message": string,
                           "status": {"type": "integer", "enum": [1, -1, -2, -3, -4]},
                           "data": {"nullable": True}},
        },
        "SnmsLogin": {
            "type": "object", "required": ["username", "password"],
            "properties": {"username": {"type": "string", "maxLength": 50},
                           "password": {"type": "string", "maxLength": 64}},
        },
        "SnmsRecord": snms_record,
        "Application": {
            "type": "object",
            "required": ["id", "applicant", "enterprise", "state", "createdAt"],
            "properties": {
                "id": integer, "applicant": string, "enterprise": string,
                "requestedPrefix": {"type": "string", "nullable": True}, "detail": string,
                "state": {"type": "string", "enum": ["pending", "approved", "rejected"]},
                "createdAt": string, "decidedBy": {"type": "string", "nullable": True},
                "decidedAt": {"type": "string", "nullable": True},
                "reason": {"type": "string", "nullable": True},
                "prefix": {"type": "string", "nullable": True}, "adminIdentity": string,
            },
        },
        "ApplicationReply": {
            "type": "object", "required": ["responseCode", "application"],
            "properties": {"responseCode": {"type": "integer", "enum": [1]},
                           "application": _ref("Application")},
        },
        "ApplicationList": {
            "type": "object", "required": ["responseCode", "applications"],
            "properties": {"responseCode": {"type": "integer", "enum": [1]},
                           "applications": {"type": "array", "items": _ref("Application")}},
        },
        "Credentials": {
            "type": "object", "required": ["responseCode", "identity", "secret"],
            "properties": {"responseCode": {"type": "integer", "enum": [1]},
                           "identity": string, "secret": string},
        },
        "AccountCreated": {
            "type": "object", "required": ["responseCode", "username", "role"],
            "properties": {"responseCode": {"type": "integer", "enum": [1]}, "username": string,
                           "role": string, "password": {"type": "string", "nullable": True}},
        },
        "StatsReply": {
            "type": "object", "required": ["responseCode", "nodes", "totals"],
            "properties": {
                "responseCode": {"type": "integer", "enum": [1]},
                "nodes": {"type": "array", "items": string},
                "totals": {"type": "array", "items": {"type": "object", "properties": {
                    "node": string, "prefix": string, "registrations": integer,
                    "resolutions": integer}}},
                "intervals": {"type": "array", "items": {"type": "object"}},
            },
        },
        "SnmsBatch": {"type": "array", "minItems": 1, "maxItems": SNMS_BATCH_LIMIT,
                      "items": snms_record},
        "SnmsItemResults": {"type": "array", "nullable": True, "items": {
            "type": "object", "required": ["handle", "msg"],
            "properties": {"handle": {"type": "string", "nullable": True},
                           "code": {"type": "integer", "enum": [1, -2]}, "msg": string}}},
        "SnmsTemplate": {
            "type": "object",
            "required": ["prefix", "version", "type", "items", "industryCategory",
                         "industrySpecific", "industryTrade", "industrySubclass"],
            "properties": {
                "prefix": string, "version": string, "type": {"type": "integer", "enum": [1, 2]},
                "industryCategory": string, "industrySpecific": string, "industryTrade": string,
                "industrySubclass": string, "description": string,
                "items": {"type": "array", "items": {
                    "type": "object", "required": ["name", "idType"],
                    "properties": {
                        "name": string, "idType": string, "idIndex": integer,
                        "required": {"type": "boolean"}, "state": integer,
                        "metadata": {"type": "object", "properties": {
                            "type": string, "minLength": integer, "maxLength": integer}}}}},
            },
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "idnode",
            "version": "0.1.0",
            "description": "Handle.Net 9 REST API, Teleinfo SNMS v5, and node operations.",
        },
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "handleBasic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Username: the percent-encoded 'index:handle' "
                    "(300%3A88.100.1/ADMIN). Honoured over TLS, from loopback, or with "
                    "--allow-insecure-auth; ignored otherwise, as Handle.Net does over HTTP.",
                },
                "snmsToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from POST /identity/token, as "
                    "'Authorization: Bearer <token>'.",
                },
            },
        },
    }


@functools.cache
def encoded() -> bytes:
    """The document as served: encoded once."""
    return orjson.dumps(document())


def operations() -> set[tuple[str, str]]:
    """(METHOD, path template) of every documented operation."""
    methods = {"get", "head", "post", "put", "delete", "options", "patch"}
    return {
        (method.upper(), path)
        for path, item in document()["paths"].items()
        for method in item
        if method in methods
    }


def endpoint_table() -> str:
    """The README's endpoint list, rendered from the document (a test keeps them equal)."""
    order = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]
    rows = ["| method | path | what |", "|---|---|---|"]
    for path, item in document()["paths"].items():
        for method in order:
            op = item.get(method.lower())
            if op is not None:
                rows.append(f"| {method} | `{path}` | {op['summary']} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(endpoint_table(), end="")
