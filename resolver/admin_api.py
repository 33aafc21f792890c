"""The secondary node's administration API: /api/admin/applications and /api/admin/accounts.

Authentication: SNMS API tokens (``POST /identity/token`` with the account's
username and password, see ``resolver.snms_tokens``) sent as
``Authorization: Bearer <token>``; every call re-reads the account, so a
role change or ``idnode account revoke`` applies at once. Replies and errors
are Handle-style JSON like the rest of ``/api``: ``{"responseCode": 1, ...}``
or ``{"responseCode": rc, "message": ...}`` with the HTTP status below.

    POST /api/admin/applications                  applicant: apply
    GET  /api/admin/applications[?state=&applicant=]  auditor, node-admin: all;
                                                  others: their own
    GET  /api/admin/applications/{id}
    POST /api/admin/applications/{id}/approve     auditor   {"reason"?}
    POST /api/admin/applications/{id}/reject      auditor   {"reason"}
    POST /api/admin/applications/{id}/credentials the applicant, once approved: the
                                                  prefix admin's identity and secret, once
    POST /api/admin/accounts                      node-admin: create an applicant or
                                                  auditor account {"username", "role",
                                                  "password"?}
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

import orjson
from aiohttp import web

from protocol import rest_json, snms
from protocol.codes import RC
from protocol.errors import HandleError, InvalidValue, MalformedMessage
from registry.credentials import generate_secret
from registry.store import Account, ApplicationConflict, PrefixTaken
from resolver.applications import (
    APPLICANT,
    AUDITOR,
    NODE_ADMIN,
    ApplicationDesk,
    application_json,
)
from resolver.auth import AuthenticationNeeded
from resolver.authz import PermissionDenied
from resolver.http_common import JSON_HEADERS, json_bytes
from resolver.snms_tokens import InvalidToken, bearer, verify
from resolver.throttle import LoginThrottle, TooManyAttempts

log = logging.getLogger(__name__)

ADMIN_PATH: Final = "/api/admin/"
_APPLICATIONS: Final = "/api/admin/applications"
_SEE_ALL: Final = frozenset({AUDITOR, NODE_ADMIN})
_CREATABLE_ROLES: Final = (APPLICANT, AUDITOR)
_STATUS: Final = {
    RC.AUTHENTICATION_NEEDED: 401,
    RC.INSUFFICIENT_PERMISSIONS: 403,
    RC.HANDLE_NOT_FOUND: 404,
    RC.OPERATION_NOT_SUPPORTED: 501,
    RC.INVALID_VALUE: 400,
    RC.PROTOCOL_ERROR: 400,
}


# (method, path template) -> handler; HEAD is answered as GET. The OpenAPI drift
# test (tests/test_openapi.py) reads this table.
ROUTES: Final[dict[tuple[str, str], str]] = {
    ("POST", "/api/admin/accounts"): "create_account",
    ("POST", _APPLICATIONS): "apply",
    ("GET", _APPLICATIONS): "list_applications",
    ("GET", f"{_APPLICATIONS}/{{id}}"): "show",
    ("POST", f"{_APPLICATIONS}/{{id}}/approve"): "approve",
    ("POST", f"{_APPLICATIONS}/{{id}}/reject"): "reject",
    ("POST", f"{_APPLICATIONS}/{{id}}/credentials"): "credentials",
}

_ALLOWED: Final = {
    template: ", ".join(sorted({m for m, t in ROUTES if t == template}
                               | ({"HEAD"} if ("GET", template) in ROUTES else set())))
    for _, template in ROUTES
}


class AdminApi:
    def __init__(
        self,
        desk: ApplicationDesk,
        token_key: bytes,
        seal: Callable[[bytes], bytes],
        clock: Callable[[], float],
        throttle: LoginThrottle,
    ) -> None:
        self.desk = desk
        self.store = desk.store
        self._token_key = token_key
        self._seal = seal
        self._clock = clock
        self._throttle = throttle

    async def handle(self, request: web.BaseRequest, path: str, method: str) -> web.Response:
        """Route and run; the one error mapper of this API (nothing escapes as a 500
        except a bug, which the front end logs)."""
        try:
            return await self._route(request, path, method)
        except HandleError as exc:
            return _error(exc)

    async def _route(self, request: web.BaseRequest, path: str, method: str) -> web.Response:
        application_id: int | None = None
        template = path
        if path.startswith(_APPLICATIONS + "/"):
            id_text, _, action = path[len(_APPLICATIONS) + 1:].partition("/")
            if not id_text.isdigit() or len(id_text) > 18:
                raise MalformedMessage(f"Invalid application id {id_text!r}")
            application_id = int(id_text)
            template = f"{_APPLICATIONS}/{{id}}" + (f"/{action}" if action else "")
        name = ROUTES.get(("GET" if method == "HEAD" else method, template))
        if name is None and template in _ALLOWED:
            message = f"Method {method} not allowed on {path}"
            return web.Response(
                body=rest_json.error_reply(RC.PROTOCOL_ERROR, None, message), status=405,
                headers={**JSON_HEADERS, "Allow": _ALLOWED[template]},
            )
        if name is None:
            return json_bytes(
                rest_json.error_reply(
                    RC.PROTOCOL_ERROR, None, f"Unknown endpoint {method} {path}"
                ),
                404,
            )
        handler = getattr(self, name)
        if application_id is None:
            return await handler(request)  # type: ignore[no-any-return]
        return await handler(request, application_id)  # type: ignore[no-any-return]

    # -- authentication ---------------------------------------------------------

    async def _account(self, request: web.BaseRequest, *roles: str) -> Account:
        token = bearer(request.headers.get("Authorization"))
        if token is None:
            raise AuthenticationNeeded("A bearer token is needed (POST /identity/token)")
        # Forged or stale tokens are counted per address, as the SNMS API does.
        throttle_key = (f"admin-token@{request.remote}", request.remote or "")
        self._throttle.check(*throttle_key)  # TooManyAttempts: 429
        try:
            claims = verify(self._token_key, token, self._clock())
        except InvalidToken as exc:
            self._throttle.failed(*throttle_key)
            raise AuthenticationNeeded(f"Invalid token: {exc}") from None
        account = await self.store.get_account(claims.username)
        if account is None or account.generation != claims.generation:
            raise AuthenticationNeeded("Token revoked")
        if roles and account.role not in roles:
            raise PermissionDenied(
                f"Account {account.username} ({account.role}) may not do this;"
                f" needs {' or '.join(roles)}"
            )
        return account

    # -- applications ------------------------------------------------------------

    async def apply(self, request: web.BaseRequest) -> web.Response:
        account = await self._account(request, APPLICANT)
        body = await _json_object(request)
        app = await self.desk.apply(
            account,
            _text(body, "enterprise", required=True) or "",
            _text(body, "prefix"),
            _text(body, "detail") or "",
        )
        log.info("Application %d by %s for %s", app.id, app.applicant, app.enterprise)
        return _reply({"application": application_json(app)}, 201)

    async def list_applications(self, request: web.BaseRequest) -> web.Response:
        account = await self._account(request)
        state = request.query.get("state")  # "state=" too is not one of the three
        if state is not None and state not in ("pending", "approved", "rejected"):
            raise InvalidValue("state must be pending, approved or rejected")
        applicant = request.query.get("applicant") or None
        if account.role not in _SEE_ALL:
            if applicant not in (None, account.username):
                raise PermissionDenied("Only auditors and node admins see others' applications")
            applicant = account.username
        apps = await self.store.list_applications(state=state, applicant=applicant)
        return _reply({"applications": [application_json(a) for a in apps]})

    async def show(self, request: web.BaseRequest, application_id: int) -> web.Response:
        account = await self._account(request)
        app = await self.desk.get(application_id)
        if account.role not in _SEE_ALL and app.applicant != account.username:
            raise PermissionDenied("Only auditors and node admins see others' applications")
        return _reply({"application": application_json(app)})

    async def approve(self, request: web.BaseRequest, application_id: int) -> web.Response:
        account = await self._account(request, AUDITOR)
        body = await _json_object(request, optional=True)
        app = await self.desk.approve(application_id, account.username, _text(body, "reason"))
        log.info("Application %d approved by %s: prefix %s", app.id, account.username, app.prefix)
        return _reply({"application": application_json(app)})

    async def reject(self, request: web.BaseRequest, application_id: int) -> web.Response:
        account = await self._account(request, AUDITOR)
        body = await _json_object(request)
        reason = _text(body, "reason", required=True) or ""
        app = await self.desk.reject(application_id, account.username, reason)
        log.info("Application %d rejected by %s", app.id, account.username)
        return _reply({"application": application_json(app)})

    async def credentials(self, request: web.BaseRequest, application_id: int) -> web.Response:
        account = await self._account(request)
        identity, secret = await self.desk.collect_credentials(account, application_id)
        return _reply({"identity": identity, "secret": secret})

    # -- accounts -----------------------------------------------------------------

    async def create_account(self, request: web.BaseRequest) -> web.Response:
        await self._account(request, NODE_ADMIN)
        body = await _json_object(request)
        username = _text(body, "username", required=True) or ""
        role = _text(body, "role", required=True)
        if role not in _CREATABLE_ROLES:
            raise InvalidValue(f"role must be one of {', '.join(_CREATABLE_ROLES)}")
        if len(username) > snms.MAX_USERNAME:
            raise InvalidValue(f"username must be 1 to {snms.MAX_USERNAME} characters")
        password = _text(body, "password") or generate_secret()
        if len(password) > snms.MAX_PASSWORD:
            raise InvalidValue(f"password must be at most {snms.MAX_PASSWORD} characters")
        if await self.store.get_account(username) is not None:
            raise ApplicationConflict(f"Account {username} exists already")
        loop = asyncio.get_running_loop()
        sealed = await loop.run_in_executor(
            None, self._seal, snms.sha256_hex(password).encode()
        )
        await self.store.put_account(Account(username, "", role, sealed))
        return _reply({"username": username, "role": role, "password": password}, 201)


def _reply(fields: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps({"responseCode": 1, **fields}), status=status,
                        headers=JSON_HEADERS)


def _error(exc: HandleError) -> web.Response:
    rc = int(exc.rc)
    if isinstance(exc, ApplicationConflict | PrefixTaken):
        status = 409
    else:
        status = _STATUS.get(exc.rc, rest_json.http_status(rc))
    body = rest_json.error_reply(rc, None, exc.message or None)
    if isinstance(exc, TooManyAttempts):
        return web.Response(body=body, status=429,
                            headers={**JSON_HEADERS, "Retry-After": str(exc.retry_after)})
    if status == 401:
        return web.Response(body=body, status=401,
                            headers={**JSON_HEADERS, "WWW-Authenticate": "Bearer"})
    return json_bytes(body, status)


async def _json_object(request: web.BaseRequest, *, optional: bool = False) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip() and optional:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"Malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedMessage("The body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidValue(f"Missing {name}")
        return None
    if not isinstance(value, str):
        raise InvalidValue(f"{name} must be a string")
    if required and not value.strip():
        raise InvalidValue(f"Missing {name}")
    return value
