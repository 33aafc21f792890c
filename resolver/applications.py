"""Enterprise prefix applications on a secondary node: apply, approve or reject, collect.

Roles are SNMS accounts (``registry.store.Account.role``):

- ``applicant``: an enterprise without a prefix yet (created by the node
  admin, ``idnode account add NAME --role applicant``); it may apply, once
  at a time, and see its own applications.
- ``auditor``: approves or rejects pending applications (a reason is
  recorded; required for a rejection). An auditor cannot apply.
- ``enterprise``: an enterprise admin bound to its prefix. Approval turns the
  applicant into one, so its SNMS logins now write under the new prefix.
- ``node-admin``: sees every application and creates accounts; it does not
  decide (separation of duties: deciding is the auditor's).

Approval allocates ``<parent>.<n>`` (the requested ``n`` if free, else the
smallest free one), and in one store transaction homes it, writes
``0.NA/<prefix>`` (HS_ADMIN and admin group naming ``300:<prefix>/ADMIN``),
creates ``<prefix>/ADMIN`` (HS_ADMIN on itself) and rebinds the account.
The admin's secret is made when the enterprise first collects it: an
HS_SECKEY added only if there is none (``add_values(overwrite=False)``), so
the secret is shown exactly once and never stored in the clear.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import re
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Final

from protocol.codes import RC
from protocol.errors import HandleError, InvalidValue, ValueAlreadyExists
from protocol.identifier import parse_prefix, prefix_handle
from protocol.values import (
    HS_ADMIN,
    HS_SECKEY,
    HS_VLIST,
    SECRET_PERMS,
    AdminRecord,
    HandleValue,
    ValueReference,
    encode_admin,
    encode_vlist,
)
from registry.credentials import generate_secret
from registry.store import (
    Account,
    Application,
    ApplicationConflict,
    ApplicationNotFound,
    PrefixTaken,
    PutItem,
    Store,
)
from resolver.authz import PermissionDenied

APPLICANT, AUDITOR, ENTERPRISE, NODE_ADMIN = "applicant", "auditor", "enterprise", "node-admin"
# Roles whose accounts have no prefix of their own.
PREFIXLESS_ROLES: Final = frozenset({APPLICANT, AUDITOR, NODE_ADMIN})
ADMIN_INDEX: Final = 300
MAX_ENTERPRISE: Final = 200
MAX_DETAIL: Final = 4000
MAX_REASON: Final = 1000
_ALLOCATION_ATTEMPTS: Final = 5
_CODE: Final = re.compile(r"[1-9][0-9]{0,8}")


class ApplicationsDisabled(HandleError):
    """This node has no parent prefix to allocate from (``--enterprise-parent``)."""

    rc = RC.OPERATION_NOT_SUPPORTED


def admin_handle(prefix: str) -> str:
    return f"{prefix}/ADMIN"


def admin_identity(prefix: str) -> str:
    return f"{ADMIN_INDEX}:{admin_handle(prefix)}"


def prefix_records(prefix: str, now: int) -> list[PutItem]:
    """``0.NA/<prefix>`` and ``<prefix>/ADMIN``, as ``idnode init`` writes them."""
    handle = admin_handle(prefix)
    admin = HandleValue(100, HS_ADMIN, encode_admin(AdminRecord(handle, ADMIN_INDEX)),
                        timestamp=now)
    group = HandleValue(200, HS_VLIST, encode_vlist([ValueReference(handle, ADMIN_INDEX)]),
                        timestamp=now)
    return [PutItem(prefix_handle(prefix), (admin, group), overwrite=False),
            PutItem(handle.upper(), (admin,), overwrite=False)]


class ApplicationDesk:
    """The workflow over a Store. ``after_approval`` lets a running node notice
    the new prefix at once (reload homed prefixes, forget cached negatives)."""

    def __init__(
        self,
        store: Store,
        *,
        parent: str | None,
        seal: Callable[[bytes], bytes],
        clock: Callable[[], float] = time.time,
        after_approval: Callable[[str], Awaitable[None]] | None = None,
        invalidate: Callable[[Collection[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.parent = parse_prefix(parent) if parent else None
        self._seal = seal
        self._clock = clock
        self._after_approval = after_approval
        self._invalidate = invalidate
        self._allocating = asyncio.Lock()  # approvals of this process one at a time

    def _now(self) -> int:
        return int(self._clock())

    def _require_parent(self) -> str:
        if self.parent is None:
            raise ApplicationsDisabled(
                "This node allocates no enterprise prefixes (start it with --enterprise-parent)"
            )
        return self.parent

    def requested_prefix(self, text: str | None) -> str | None:
        """``7`` or ``<parent>.7`` -> ``<parent>.7``; anything else is refused."""
        if text is None or text == "":
            return None
        parent = self._require_parent()
        code = text[len(parent) + 1:] if text.upper().startswith(parent + ".") else text
        if not _CODE.fullmatch(code):
            raise InvalidValue(f"Requested prefix must be {parent}.<n> with n a positive number")
        return f"{parent}.{code}"

    # -- the steps ---------------------------------------------------------------

    async def apply(
        self, account: Account, enterprise: str, requested: str | None, detail: str
    ) -> Application:
        self._require_parent()
        if account.role != APPLICANT:
            raise PermissionDenied(f"Account {account.username} ({account.role}) cannot apply")
        enterprise = enterprise.strip()
        if not enterprise or len(enterprise) > MAX_ENTERPRISE:
            raise InvalidValue(f"enterprise must be 1 to {MAX_ENTERPRISE} characters")
        if len(detail) > MAX_DETAIL:
            raise InvalidValue(f"detail must be at most {MAX_DETAIL} characters")
        application = Application(0, account.username, enterprise,
                                  self.requested_prefix(requested), detail, self._now())
        return await self.store.add_application(application)

    async def get(self, application_id: int) -> Application:
        app = await self.store.get_application(application_id)
        if app is None:
            raise ApplicationNotFound(f"No application {application_id}")
        return app

    async def reject(self, application_id: int, decided_by: str, reason: str) -> Application:
        reason = reason.strip()
        if not reason or len(reason) > MAX_REASON:
            raise InvalidValue(f"A rejection needs a reason (1 to {MAX_REASON} characters)")
        app = await self.get(application_id)
        decided = dataclasses.replace(app, state="rejected", decided_by=decided_by,
                                      decided_at=self._now(), reason=reason)
        return await self.store.reject_application(decided)

    async def approve(
        self, application_id: int, decided_by: str, reason: str | None = None
    ) -> Application:
        parent = self._require_parent()
        if reason is not None and len(reason) > MAX_REASON:
            raise InvalidValue(f"reason must be at most {MAX_REASON} characters")
        async with self._allocating:
            app = await self.get(application_id)
            if app.state != "pending":
                raise ApplicationConflict(f"Application {app.id} is {app.state} already")
            account = await self.store.get_account(app.applicant)
            if account is None or account.role != APPLICANT:
                raise ApplicationConflict(f"Account {app.applicant} is no longer an applicant")
            wanted = app.requested_prefix
            for _attempt in range(_ALLOCATION_ATTEMPTS):
                prefix = wanted if wanted and await self._free(wanted) else await self._next(parent)
                now = self._now()
                decided = dataclasses.replace(app, state="approved", decided_by=decided_by,
                                              decided_at=now, reason=reason, prefix=prefix)
                bound = dataclasses.replace(account, role=ENTERPRISE, prefix=prefix)
                try:
                    done = await self.store.approve_application(
                        decided, prefix_records(prefix, now), bound
                    )
                except PrefixTaken:
                    continue  # taken meanwhile (another process): allocate again
                break
            else:
                raise HandleError("Could not allocate a free prefix; try again")
        if self._after_approval is not None:
            await self._after_approval(prefix)
        return done

    async def collect_credentials(self, account: Account, application_id: int) -> tuple[str, str]:
        """The admin identity and a new secret for it, once: ``(identity, secret)``."""
        app = await self.get(application_id)
        if app.applicant != account.username:
            raise PermissionDenied("Only the applicant may collect the credentials")
        if app.state != "approved" or app.prefix is None:
            raise ApplicationConflict(f"Application {app.id} is {app.state}, not approved")
        secret = generate_secret()
        loop = asyncio.get_running_loop()  # PBKDF2 (~50 ms) off the event loop
        sealed = await loop.run_in_executor(None, self._seal, secret.encode())
        key = admin_handle(app.prefix).upper()
        value = HandleValue(ADMIN_INDEX, HS_SECKEY, sealed, timestamp=self._now(),
                            permissions=SECRET_PERMS)
        try:
            await self.store.add_values(key, [value], overwrite=False)
        except ValueAlreadyExists:
            raise ApplicationConflict(
                f"The credentials of application {app.id} were collected already"
            ) from None
        if self._invalidate is not None:  # every worker's cache (resolver.coherence)
            await self._invalidate((key,))
        return admin_identity(app.prefix), secret

    # -- allocation ---------------------------------------------------------------

    async def _taken(self, parent: str) -> set[str]:
        taken = set(await self.store.homed_prefixes())
        taken.update(a.prefix for a in await self.store.list_applications(state="approved")
                     if a.prefix)
        return taken

    async def _free(self, prefix: str) -> bool:
        return prefix not in await self._taken(prefix)

    async def _next(self, parent: str) -> str:
        taken = await self._taken(parent)
        n = 1
        while f"{parent}.{n}" in taken:
            n += 1
        return f"{parent}.{n}"


# -- JSON (the admin API and `idnode application list --json`) ---------------------


def application_json(app: Application) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": app.id,
        "applicant": app.applicant,
        "enterprise": app.enterprise,
        "requestedPrefix": app.requested_prefix,
        "detail": app.detail,
        "state": app.state,
        "createdAt": _iso(app.created_at),
        "decidedBy": app.decided_by,
        "decidedAt": None if app.decided_at is None else _iso(app.decided_at),
        "reason": app.reason,
        "prefix": app.prefix,
    }
    if app.prefix:
        out["adminIdentity"] = admin_identity(app.prefix)
    return out


def _iso(seconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
