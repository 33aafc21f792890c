"""A secondary keeps its site in the top-level's ``0.NA/<prefix>`` record.

The top-level registers the secondary beforehand (``idnode delegate PREFIX``
there): it creates ``0.NA/<prefix>`` whose HS_ADMIN names the identity
``300:0.NA/<prefix>`` and whose HS_SECKEY holds its secret. The secondary,
started with ``--home-at URL --home-auth 300:0.NA/<prefix> --home-secret S``,
writes two values into that record through the top-level's REST API,
authenticated as that identity, and writes them again every
``--home-refresh`` seconds (so a top-level restored from an old backup, or
an address change, heals by itself):

    index 1  HS_SITE         this node's site (binary TCP+UDP and HTTP interfaces)
    index 2  HS_SITE.PREFIX  the same site, for derived prefixes (88.118.<n>):
                             the top-level refers them here with RC 303

Only those two indexes are written (``PUT ?index=1&index=2``): the admin
values stay the top-level's. ``unhome`` deletes them. Over plain HTTP the
top-level honours credentials only from loopback (or with
``--allow-insecure-auth``); use an https URL between machines.
"""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import quote

import aiohttp
import orjson

from protocol import rest_json
from protocol.identifier import PREFIX_NA, parse_prefix
from protocol.site_info import SiteInfo, encode_site
from protocol.values import HS_SITE, HS_SITE_PREFIX, HandleValue
from resolver.auth import Identity

log = logging.getLogger(__name__)

SITE_INDEX = 1
SITE_PREFIX_INDEX = 2
SITE_TTL = 600  # seconds a resolver may keep our site before asking again
RETRY_SECONDS = 5.0
TIMEOUT = aiohttp.ClientTimeout(total=10)


class HomingError(Exception):
    """The top-level refused or could not be reached."""


def prefix_of_identity(identity: Identity) -> str:
    """``300:0.NA/88.118`` → ``88.118``: a secondary authenticates as its prefix."""
    prefix, slash, suffix = identity.handle.partition("/")
    if not slash or prefix.upper() != PREFIX_NA:
        raise ValueError(f"--home-auth must be an identity 0.NA/<prefix>, got {identity.text}")
    return parse_prefix(suffix)


class Homing:
    def __init__(
        self, url: str, identity: Identity, secret: str, *, refresh: float = 300.0
    ) -> None:
        self.prefix = prefix_of_identity(identity)
        base = url.rstrip("/")
        self.record_url = f"{base}/api/handles/{PREFIX_NA}/{quote(self.prefix)}"
        self._auth = aiohttp.encode_basic_auth(quote(identity.text, safe=""), secret)
        self.refresh = refresh
        self.homed_once = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def site_values(self, site: SiteInfo) -> list[HandleValue]:
        data = encode_site(site)
        return [HandleValue(SITE_INDEX, HS_SITE, data, ttl=SITE_TTL),
                HandleValue(SITE_PREFIX_INDEX, HS_SITE_PREFIX, data, ttl=SITE_TTL)]

    async def home(self, site: SiteInfo) -> None:
        """Write this node's site into the top-level's prefix record, once."""
        body = orjson.dumps({"values": rest_json.values_to_json(self.site_values(site))})
        params = [("index", str(SITE_INDEX)), ("index", str(SITE_PREFIX_INDEX))]
        await self._request("PUT", params, body)

    async def unhome(self) -> None:
        params = [("index", str(SITE_INDEX)), ("index", str(SITE_PREFIX_INDEX))]
        await self._request("DELETE", params, None)

    async def _request(
        self, method: str, params: list[tuple[str, str]], body: bytes | None
    ) -> None:
        headers = {"Authorization": self._auth}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with aiohttp.ClientSession(timeout=TIMEOUT) as session, session.request(
                method, self.record_url, params=params, data=body, headers=headers,
            ) as reply:
                text = await reply.text()
                if reply.status >= 300:
                    raise HomingError(f"{method} {self.record_url}: HTTP {reply.status} {text}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HomingError(f"{method} {self.record_url}: {exc or type(exc).__name__}") from exc

    def start(self, site: SiteInfo) -> None:
        self._task = asyncio.create_task(self._keep_homed(site))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])

    async def _keep_homed(self, site: SiteInfo) -> None:
        while True:
            try:
                await self.home(site)
            except HomingError as exc:
                log.warning("Could not home %s at the top-level: %s", self.prefix, exc)
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if not self.homed_once.is_set():
                log.info("Homed %s at %s", self.prefix, self.record_url)
                self.homed_once.set()
            await asyncio.sleep(self.refresh)
