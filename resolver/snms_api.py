"""Teleinfo SNMS v5 management API: /identity/token*, /identityv2/data*, /snms/api/v5/template.

Thin handlers: decode (``protocol.snms``, ``protocol.templates``), check the
token, write through the node's ``Registrar`` (so a record registered here
resolves at once over the Handle REST API and the binary protocol), encode
the envelope ``{"message", "status", "data"}``.

HTTP status: every envelope is sent with HTTP 200, failures included, as real
SNMS servers do; SNMS clients read ``status`` in the body, and some of their
HTTP libraries throw away the body of a 4xx/5xx. Only an unknown path gets a
404 (still with an envelope). ``Content-Type`` is not enforced.

Accounts (``idnode account add``) belong to one enterprise prefix and may
touch handles and templates under it and its sub-prefixes only (status -3
otherwise). Role ``enterprise`` may read and write, ``readonly`` only read.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from protocol import snms, templates
from protocol.codes import RC
from protocol.errors import HandleError
from protocol.identifier import Handle
from protocol.snms import BusinessError, NoPermission, NotLoggedIn, SnmsError
from protocol.snms_batch import decode_snms_batch
from protocol.templates import Template
from protocol.values import HandleValue
from registry.credentials import hash_secret, verify_secret
from registry.store import StoreError
from resolver.applications import PREFIXLESS_ROLES
from resolver.auth import PrefixAccount
from resolver.http_common import JSON_HEADERS, read_large_body
from resolver.node import Node
from resolver.snms_tokens import TOKEN_LIFETIME, InvalidToken, TokenClaims, bearer, issue, verify
from resolver.throttle import TooManyAttempts

log = logging.getLogger(__name__)

SNMS_PATHS = ("/identity/", "/identityv2/", "/snms/api/v5/")
_WRITE_ROLES = frozenset({"enterprise"})
_TZ_CHINA = datetime.timezone(datetime.timedelta(hours=8))


MSG_TOO_LARGE = "请求体过大（最多32MB）"
MSG_BUSY = "系统繁忙，请稍后重试"  # the docs' own words for "system busy"


async def read_body(request: web.BaseRequest) -> bytes:
    body = await read_large_body(request)
    if body is None:
        raise BusinessError(MSG_TOO_LARGE)
    return body


@functools.cache
def _dummy_hash() -> bytes:
    return hash_secret(secrets.token_bytes(16))


def is_snms_path(path: str) -> bool:
    return path.startswith(SNMS_PATHS)


def reply(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers=JSON_HEADERS)


def v1_days(now: float) -> set[str]:
    """Dates a ``/identity/token/v1`` password may be computed with.

    The docs do not say which time zone the client uses (presumably UTC+8,
    China): today and yesterday in UTC+8 and in UTC are all accepted.
    """
    days = set()
    for zone in (_TZ_CHINA, datetime.UTC):
        today = datetime.datetime.fromtimestamp(now, zone).date()
        days.update({today.isoformat(), (today - datetime.timedelta(days=1)).isoformat()})
    return days


def snms_error(exc: HandleError) -> SnmsError:
    """A Handle error from the write path, in SNMS terms."""
    rc = exc.rc
    if rc in _QUOTA_MESSAGES:
        return BusinessError(_QUOTA_MESSAGES[rc])
    if rc == RC.HANDLE_ALREADY_EXISTS:
        return BusinessError(snms.MSG_EXISTS)
    if rc == RC.HANDLE_NOT_FOUND:
        return BusinessError(snms.MSG_NOT_FOUND)
    if rc in (RC.INSUFFICIENT_PERMISSIONS, RC.INVALID_ADMIN):
        return NoPermission(exc.message or "没有权限")
    if rc == RC.SERVER_NOT_RESP:
        return BusinessError(snms.MSG_NOT_SERVED.format(exc.message or ""))
    if rc == RC.SERVER_TOO_BUSY:
        return BusinessError(MSG_BUSY)
    if isinstance(exc, StoreError):
        log.warning("SNMS write failed: %s", exc.message)
        return snms.InternalError()
    return BusinessError(snms.MSG_INVALID.format(exc.message or rc.name))


_QUOTA_MESSAGES = {
    RC.QUOTA_REQUESTS_EXCEEDED: "今日请求次数已超出配额",
    RC.QUOTA_IDENTIFIERS_EXCEEDED: "标识数量已超出配额",
    RC.QUOTA_PREFIXES_EXCEEDED: "子前缀数量已超出配额",
}

Route = Callable[["SnmsApi", web.BaseRequest], Awaitable[Any]]


class SnmsApi:
    def __init__(self, node: Node, clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self._clock = clock

    async def handle(self, request: web.BaseRequest, path: str, method: str) -> web.Response:
        """Route and run; every outcome is an envelope (the one error mapper of this API)."""
        route = _ROUTES.get((method, path))
        if route is None:
            message = f"Not found: {method} {path}"
            allowed = _ALLOWED.get(path)
            if allowed is None:
                return reply(snms.envelope(snms.Status.BUSINESS, message), 404)
            body = snms.envelope(snms.Status.BUSINESS, f"Method {method} not allowed")
            return web.Response(body=body, status=405, headers={**JSON_HEADERS, "Allow": allowed})
        try:
            return reply(snms.success(await route(self, request)))
        except SnmsError as exc:
            return reply(snms.failure(exc))
        except HandleError as exc:
            return reply(snms.failure(snms_error(exc)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("SNMS %s %s failed", method, path)
            return reply(snms.failure(snms.InternalError()))

    # -- tokens ------------------------------------------------------------

    async def token(self, request: web.BaseRequest) -> dict[str, str]:
        creds = snms.parse_credentials(snms.parse_json(await read_body(request)))
        login = self._throttled(creds.username, request)
        account = await self.node.store.get_account(creds.username)
        # PBKDF2 (~50 ms) off the event loop; an unknown user costs the same
        # (a dummy hash), so timing does not tell which usernames exist.
        loop = asyncio.get_running_loop()
        digest = snms.sha256_hex(creds.password).encode()
        stored = account.secret_hash if account is not None else _dummy_hash()
        ok = await loop.run_in_executor(None, verify_secret, stored, digest)
        if not ok or account is None:
            self.node.authenticator.throttle.failed(*login)
            raise BusinessError(snms.MSG_BAD_LOGIN)
        self.node.authenticator.throttle.succeeded(*login)
        return self._issue(account.username, account.prefix, account.role, account.generation)

    async def token_v1(self, request: web.BaseRequest) -> dict[str, str]:
        creds = snms.parse_credentials(snms.parse_json(await read_body(request)))
        login = self._throttled(creds.username, request)
        account = await self.node.store.get_account(creds.username)
        inner = None if account is None else self.node.sealer.unseal(account.secret_hash)
        if account is None or inner is None:
            self.node.authenticator.throttle.failed(*login)
            raise BusinessError(snms.MSG_BAD_LOGIN)
        given = creds.password.lower().encode()
        matched = False
        for day in v1_days(self._clock()):
            expected = snms.v1_password(inner.decode(), day).encode()
            matched |= hmac.compare_digest(expected, given)
        if not matched:
            self.node.authenticator.throttle.failed(*login)
            raise BusinessError(snms.MSG_BAD_LOGIN)
        self.node.authenticator.throttle.succeeded(*login)
        return self._issue(account.username, account.prefix, account.role, account.generation)

    def _throttled(self, username: str, request: web.BaseRequest) -> tuple[str, str]:
        """The throttle key of a login; raises if it must wait (too many failures)."""
        key = (f"snms:{username}", request.remote or "")
        try:
            self.node.authenticator.throttle.check(*key)
        except TooManyAttempts as exc:
            raise BusinessError(f"登录失败次数过多，请{exc.retry_after}秒后重试") from None
        return key

    def _issue(self, username: str, prefix: str, role: str, generation: int) -> dict[str, str]:
        now = int(self._clock())
        claims = TokenClaims(username, prefix, role, generation, now, now + TOKEN_LIFETIME)
        return {"token": issue(self.node.token_key, claims)}

    async def _login(self, request: web.BaseRequest, *, write: bool) -> PrefixAccount:
        token = bearer(request.headers.get("Authorization"))
        if token is None:
            raise NotLoggedIn()
        # Forged or stale tokens are counted per address (guessing one is
        # hopeless, but a flood of them is still somebody probing).
        throttle_key = (f"snms-token@{request.remote}", request.remote or "")
        throttle = self.node.authenticator.throttle
        try:
            throttle.check(*throttle_key)
            claims = verify(self.node.token_key, token, self._clock())
        except TooManyAttempts as exc:
            raise NotLoggedIn(f"无效令牌过多，请{exc.retry_after}秒后重试") from None
        except InvalidToken:
            throttle.failed(*throttle_key)
            raise NotLoggedIn() from None
        account = await self.node.store.get_account(claims.username)
        if account is None or account.generation != claims.generation:
            raise NotLoggedIn()  # deleted, password reset, or revoked
        if account.role in PREFIXLESS_ROLES:  # applicant, auditor, node-admin: no data
            raise NoPermission(f"账号{account.username}没有企业前缀")
        if write and account.role not in _WRITE_ROLES:
            raise NoPermission(f"账号{account.username}为只读账号")
        await self.node.quotas.charge_request(account.prefix)  # rc 603 when over the day's quota
        return PrefixAccount(account.username, account.prefix.upper())

    # -- identity data -------------------------------------------------------

    def _handle(self, account: PrefixAccount, text: str) -> Handle:
        handle = self.node.parse(text)
        if handle.is_prefix_handle or not account.covers(handle.prefix):
            raise NoPermission(snms.MSG_NO_PERMISSION.format(handle.prefix))
        return handle

    async def create(self, request: web.BaseRequest) -> bool:
        account = await self._login(request, write=True)
        record = snms.parse_record(snms.parse_json(await read_body(request)))
        handle = self._handle(account, record.handle)
        await self._validate(account, handle, record, {})
        await self.node.registrar.put_record(
            account, handle, record.to_handle_values(), overwrite=False
        )
        return True

    async def update(self, request: web.BaseRequest) -> bool:
        account = await self._login(request, write=True)
        record = snms.parse_record(snms.parse_json(await read_body(request)))
        handle = self._handle(account, record.handle)
        await self._validate(account, handle, record, {})
        [result] = await self.node.registrar.put_many(
            account, [(handle, record.to_handle_values())], mode="update"
        )
        if isinstance(result, HandleError):
            raise result
        return True

    async def delete(self, request: web.BaseRequest) -> bool:
        account = await self._login(request, write=True)
        body = snms.parse_json(await read_body(request))
        handle = self._handle(account, snms.parse_handle_body(body))
        await self.node.registrar.delete(account, handle)
        return True

    async def detail(self, request: web.BaseRequest) -> dict[str, Any]:
        account = await self._login(request, write=False)
        text = request.query.get("handle")
        if not text:
            raise BusinessError(snms.MSG_MISSING_PARAM.format("handle"))
        handle = self._handle(account, text)
        entry = await self.node.resolve(handle)
        if entry.rc != RC.SUCCESS or entry.values is None:
            if entry.rc == RC.SERVER_NOT_RESP:
                raise BusinessError(snms.MSG_NOT_SERVED.format(handle.prefix))
            raise BusinessError(snms.MSG_NOT_FOUND)
        return snms.detail(handle.prefix, text, entry.values)

    async def batch_create(self, request: web.BaseRequest) -> list[dict[str, Any]]:
        return await self._batch_put(request, "create")

    async def batch_update(self, request: web.BaseRequest) -> list[dict[str, Any]]:
        return await self._batch_put(request, "update")

    async def _batch_put(self, request: web.BaseRequest, mode: str) -> list[dict[str, Any]]:
        """Each item all or nothing; results in input order, ``{handle, msg}``."""
        account = await self._login(request, write=True)
        items = decode_snms_batch(await read_body(request))
        messages: list[str | None] = [None] * len(items)
        ready: list[tuple[Handle, Sequence[HandleValue]]] = []
        positions: list[int] = []
        cache: dict[tuple[str, ...], Template | None] = {}
        stamp = self.node.registrar.timestamp()
        for i, (_, record) in enumerate(items):
            if isinstance(record, SnmsError):
                messages[i] = record.message
                continue
            try:
                handle = self._handle(account, record.handle)
                await self._validate(account, handle, record, cache)
            except SnmsError as exc:
                messages[i] = exc.message
                continue
            except HandleError as exc:
                messages[i] = snms_error(exc).message
                continue
            ready.append((handle, record.stored(stamp)))
            positions.append(i)
        if ready:
            results = await self.node.registrar.put_many(account, ready, mode=mode)
            for i, result in zip(positions, results, strict=True):
                if isinstance(result, HandleError):
                    messages[i] = snms_error(result).message
                else:
                    messages[i] = snms.SUCCESS
        return [
            snms.item_result(text, message or snms.MSG_INTERNAL)
            for (text, _), message in zip(items, messages, strict=True)
        ]

    async def batch_delete(self, request: web.BaseRequest) -> list[dict[str, Any]]:
        """Body: a bare array of handles (as the docs' example) or ``{"handles": [...]}``."""
        account = await self._login(request, write=True)
        raw_items = snms.batch_items(snms.parse_json(await read_body(request)), key="handles")
        messages: list[str | None] = [None] * len(raw_items)
        handles: list[Handle] = []
        positions: list[int] = []
        for i, raw in enumerate(raw_items):
            try:
                handles.append(self._handle(account, snms.delete_handle_item(raw)))
            except SnmsError as exc:
                messages[i] = exc.message
                continue
            except HandleError as exc:
                messages[i] = snms_error(exc).message
                continue
            positions.append(i)
        if handles:
            results = await self.node.registrar.delete_many(account, handles)
            for i, error in zip(positions, results, strict=True):
                if error is None:
                    messages[i] = snms.SUCCESS
                elif error.rc == RC.HANDLE_NOT_FOUND:
                    messages[i] = snms.MSG_NOT_EXIST
                else:
                    messages[i] = snms_error(error).message
        return [
            snms.delete_result(
                raw if isinstance(raw, str) else None, message or snms.MSG_INTERNAL
            )
            for raw, message in zip(raw_items, messages, strict=True)
        ]

    # -- templates -------------------------------------------------------------

    async def _validate(
        self,
        account: PrefixAccount,
        handle: Handle,
        record: snms.IdentityRecord,
        cache: dict[tuple[str, ...], Template | None],
    ) -> None:
        """Check ``record`` against its template: the handle's prefix's, else the account's."""
        # A batch's records share a few (prefix, version) pairs: each is resolved
        # once. (prefix, version): that prefix's template; with "chosen": the one
        # that applies to the prefix's handles.
        chosen = (handle.prefix.upper(), record.template_version, "chosen")
        template = cache.get(chosen)
        if template is None and chosen not in cache:
            for prefix in dict.fromkeys((handle.prefix.upper(), account.prefix)):
                key = (prefix, record.template_version)
                if key not in cache:
                    document = await self.node.store.get_template(*key)
                    cache[key] = None if document is None else templates.loads(document)
                template = cache[key]
                if template is not None:
                    break
            cache[chosen] = template
        if template is None:
            raise BusinessError(
                templates.MSG_TEMPLATE_MISSING.format(handle.prefix, record.template_version)
            )
        templates.validate(template, record.values)

    def _template_prefix(self, account: PrefixAccount, prefix: str) -> str:
        if not account.covers(prefix):
            raise NoPermission(snms.MSG_NO_PERMISSION.format(prefix))
        return prefix.upper()

    async def template_get(self, request: web.BaseRequest) -> dict[str, Any]:
        account = await self._login(request, write=False)
        prefix, version = request.query.get("prefix"), request.query.get("version")
        if not prefix:
            raise BusinessError(snms.MSG_MISSING_PARAM.format("prefix"))
        if not version:
            raise BusinessError(snms.MSG_MISSING_PARAM.format("version"))
        document = await self.node.store.get_template(
            self._template_prefix(account, prefix), version
        )
        if document is None:
            raise BusinessError(templates.MSG_TEMPLATE_MISSING.format(prefix, version))
        return templates.loads(document).to_json()

    async def template_create(self, request: web.BaseRequest) -> bool:
        account = await self._login(request, write=True)
        template, _ = templates.parse_template(snms.parse_json(await read_body(request)))
        prefix = self._template_prefix(account, template.prefix)
        store = self.node.store
        if await store.get_template(prefix, template.version) is not None:
            raise BusinessError(templates.MSG_TEMPLATE_EXISTS.format(prefix, template.version))
        await store.put_template(prefix, template.version, template.dumps())
        return True

    async def template_update(self, request: web.BaseRequest) -> bool:
        account = await self._login(request, write=True)
        body = snms.parse_json(await read_body(request))
        new, inputs = templates.parse_template(body, update=True)
        prefix = self._template_prefix(account, new.prefix)
        store = self.node.store
        document = await store.get_template(prefix, new.version)
        if document is None:
            raise BusinessError(templates.MSG_TEMPLATE_MISSING.format(prefix, new.version))
        merged = templates.merge(templates.loads(document), new, inputs)
        await store.put_template(prefix, new.version, merged.dumps())
        return True

    async def template_delete(self, request: web.BaseRequest) -> bool:
        account = await self._login(request, write=True)
        prefix_text, version = templates.parse_key(snms.parse_json(await read_body(request)))
        prefix = self._template_prefix(account, prefix_text)
        store = self.node.store
        if await store.get_template(prefix, version) is None:
            raise BusinessError(templates.MSG_TEMPLATE_MISSING.format(prefix_text, version))
        if await self._template_in_use(prefix, version):
            raise BusinessError(templates.MSG_TEMPLATE_IN_USE)
        await store.delete_template(prefix, version)
        return True

    async def _template_in_use(self, prefix: str, version: str) -> bool:
        """Whether a handle under ``prefix`` names ``version`` at index 1001.

        A scan of the prefix's records (paged, off the event loop): deleting a
        template is rare, and a usage counter would cost every write.
        """
        wanted = version.encode()
        async for _key, record in self.node.store.iter_records(prefix):
            for value in record:
                if value.index == snms.TEMPLATE_INDEX and value.type == snms.TEMPLATE_TYPE:
                    if value.data == wanted:
                        return True
                    break
        return False


_ROUTES: dict[tuple[str, str], Route] = {
    ("POST", "/identity/token"): SnmsApi.token,
    ("POST", "/identity/token/v1"): SnmsApi.token_v1,
    ("POST", "/identityv2/data"): SnmsApi.create,
    ("PUT", "/identityv2/data"): SnmsApi.update,
    ("DELETE", "/identityv2/data"): SnmsApi.delete,
    ("GET", "/identityv2/data/detail"): SnmsApi.detail,
    ("POST", "/identityv2/data/batchCreate"): SnmsApi.batch_create,
    ("PUT", "/identityv2/data/batchUpdate"): SnmsApi.batch_update,
    ("DELETE", "/identityv2/data/batchDelete"): SnmsApi.batch_delete,
    ("GET", "/snms/api/v5/template"): SnmsApi.template_get,
    ("POST", "/snms/api/v5/template"): SnmsApi.template_create,
    ("PUT", "/snms/api/v5/template"): SnmsApi.template_update,
    ("DELETE", "/snms/api/v5/template"): SnmsApi.template_delete,
}
_ALLOWED = {
    path: ", ".join(sorted(m for m, p in _ROUTES if p == path)) for _, path in _ROUTES
}


def snms_routes() -> list[tuple[str, str]]:
    """(METHOD, path) of every SNMS route, for the OpenAPI drift check."""
    return list(_ROUTES)
