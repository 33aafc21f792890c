"""The binary Handle protocol's answers: a decoded request in, reply packets out.

Transport-free (``resolver.handle_transport`` owns the sockets): resolution
and site info for every interface; admin operations, which need the
identity proven by a secret-key challenge (RC 402, answered on a new
connection with CHALLENGE_RESPONSE, handle-wire.md §11), only where the
transport says the interface is an admin one (TCP).

Anonymous resolutions that may be cached are stored as complete reply packets
in the node's cache entry, under ``reply_cache_key`` of the request, so the
transport can answer the next identical request by patching in its ids.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from protocol.codes import RC
from protocol.errors import HandleAlreadyExists, HandleError, NotResponsible, ValuesNotFound
from protocol.handle_wire import (
    EMPTY,
    FLAG_PUBL,
    MSG_INVALID_SESSION,
    ChallengeAnswer,
    ChallengeBody,
    EmptyBody,
    Envelope,
    ErrorBody,
    HandleBody,
    HandleListBody,
    IndexesBody,
    Message,
    OpCode,
    ReferralBody,
    ResolutionRequest,
    SiteInfoReply,
    ValuesBody,
    compute_request_digest,
    encode_early_error,
    encode_error_reply,
    encode_reply,
    interface_refusal,
    reply_envelope,
    unknown_opcode_error,
    verify_secret_key_answer,
)
from protocol.identifier import PREFIX_NA, parse_prefix, prefix_handle
from protocol.site_info import SiteInfo
from protocol.values import HS_SECKEY, HandleValue, filter_values
from resolver.auth import Identity
from resolver.authz import may_read_private
from resolver.handle_site import SITE_SERIAL
from resolver.node import Node
from resolver.throttle import TooManyAttempts
from resolver.upstream import arrived_recursion

log = logging.getLogger(__name__)

CHALLENGE_SECONDS = 60.0  # how long an answer may take (Handle.Net's max_auth_time)
MAX_PENDING_CHALLENGES = 10_000
NONCE_BYTES = 16
NOT_HOMED = "That prefix doesn't live here"

_KNOWN_OPCODES = frozenset(int(op) for op in OpCode)
ADMIN_OPS = frozenset(
    {OpCode.CREATE_HANDLE, OpCode.DELETE_HANDLE, OpCode.ADD_VALUE, OpCode.REMOVE_VALUE,
     OpCode.MODIFY_VALUE, OpCode.HOME_NA, OpCode.UNHOME_NA, OpCode.LIST_HOMED_NAS}
)
# This node's own prefixes: server admins (--server-admin) only, as the reference.
PREFIX_OPS = frozenset({OpCode.HOME_NA, OpCode.UNHOME_NA, OpCode.LIST_HOMED_NAS})
MSG_NOT_A_NA_HANDLE = "Not a prefix handle"

# stored HS_SECKEY data -> the key bytes, or None when the node cannot recover them
KeyMaterial = Callable[[bytes], bytes | None]


@dataclass(frozen=True, slots=True)
class PendingChallenge:
    envelope: Envelope
    message: Message
    nonce: bytes
    digest: bytes
    expires: float


class HandleService:
    def __init__(
        self,
        node: Node,
        site: SiteInfo,
        key_material: KeyMaterial,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node = node
        self.site_reply = SiteInfoReply.of(site)
        self._key_material = key_material
        self._clock = clock
        self._challenges: OrderedDict[int, PendingChallenge] = OrderedDict()

    async def answer(
        self, env: Envelope, msg: Message, *, admin_interface: bool,
        cache_key: bytes | None = None, peer: str = "",
    ) -> bytes:
        """The reply packet to a decoded request; never raises for a request's content.

        ``cache_key``: the request's ``reply_cache_key``, if it has one; an
        anonymous resolution's reply is then kept under it in the cache entry.
        ``peer``: the client's address, which failed challenge answers are counted
        against (with the identity), as failed HTTP logins are.
        """
        # Queries this request makes upstream carry its recursion count on.
        recursion = arrived_recursion.set(msg.recursion_count)
        try:
            return await self._answer(env, msg, admin_interface, cache_key, peer)
        finally:
            arrived_recursion.reset(recursion)

    async def _answer(
        self, env: Envelope, msg: Message, admin_interface: bool, cache_key: bytes | None,
        peer: str,
    ) -> bytes:
        now = int(self._clock())
        refusal = interface_refusal(msg.op_code, queries=True, admin=admin_interface)
        if refusal is not None:
            return encode_error_reply(env, msg, RC.PROTOCOL_ERROR, refusal, now=now)
        try:
            op = msg.op_code
            if op == OpCode.RESOLUTION:
                return await self._anonymous_resolution(env, msg, now, cache_key)
            if op == OpCode.GET_SITE_INFO:
                return encode_reply(env, msg, RC.SUCCESS, self.site_reply, now=now,
                                    site_info_serial=SITE_SERIAL)
            if op in ADMIN_OPS:
                return await self._admin_request(env, msg, now)
            if op == OpCode.CHALLENGE_RESPONSE:
                return await self._challenge_answer(env, msg, now, peer)
        except HandleError as exc:
            return self._error(env, msg, exc, now)
        if op in _KNOWN_OPCODES:  # part of the protocol, not served by this node (yet)
            return encode_error_reply(env, msg, RC.OPERATION_NOT_SUPPORTED,
                                      "Operation not supported by this node", now=now)
        # As the reference: RC 2 in the early-error form (opCode 0, requestId -1).
        return encode_early_error(unknown_opcode_error(env, msg), now=now)

    # -- resolution --------------------------------------------------------------

    async def _anonymous_resolution(
        self, env: Envelope, msg: Message, now: int, cache_key: bytes | None
    ) -> bytes:
        request = _body(msg, ResolutionRequest)
        entry = await self.node.resolve(self.node.parse(request.handle))
        self.node.usage.resolutions[entry.prefix] += 1
        if (
            entry.rc == RC.SUCCESS
            and entry.values is not None
            and not msg.op_flags & FLAG_PUBL
            and any(not v.public_read for v in filter_values(entry.values, request.indexes,
                                                             request.types))
        ):
            # Restricted values asked for without PUBL: prove who you are first.
            return self._challenge(env, msg, now)
        try:
            reply = self._resolution_reply(env, msg, entry.values, entry.rc, now)
        except HandleError as exc:
            reply = self._error(env, msg, exc, now)
        if cache_key is not None:
            # Same request, same answer (bar ids) while this entry lives.
            self.node.cache.encoded(entry, cache_key, lambda: reply)
        return reply

    def _resolution_reply(
        self,
        env: Envelope,
        msg: Message,
        values: Sequence[HandleValue] | None,
        rc: RC,
        now: int,
        *,
        public_only: bool = True,
        request_id: int | None = None,
    ) -> bytes:
        request = _body(msg, ResolutionRequest)
        if rc in (RC.SERVICE_REFERRAL, RC.PREFIX_REFERRAL):  # where to ask instead
            return encode_reply(env, msg, rc, ReferralBody(request.handle, tuple(values or ())),
                                now=now, request_id=request_id,
                                session_id=None if request_id is None else 0)
        if values is None:
            raise NotResponsible(NOT_HOMED) if rc == RC.SERVER_NOT_RESP else HandleError("", rc)
        chosen = filter_values(values, request.indexes, request.types)
        if public_only:
            chosen = [v for v in chosen if v.public_read]
        if not chosen:
            raise ValuesNotFound()
        return encode_reply(env, msg, RC.SUCCESS, ValuesBody(request.handle, tuple(chosen)),
                            now=now, request_id=request_id,
                            session_id=None if request_id is None else 0)

    async def _authenticated_resolution(
        self, identity: Identity, env: Envelope, msg: Message, now: int, request_id: int
    ) -> bytes:
        request = _body(msg, ResolutionRequest)
        handle = self.node.parse(request.handle)
        entry = await self.node.resolve(handle)
        self.node.usage.resolutions[entry.prefix] += 1
        private = entry.rc == RC.SUCCESS and entry.values is not None and await may_read_private(
            identity, handle, entry.values, self.node.server_admins, self.node.record_of
        )
        return self._resolution_reply(env, msg, entry.values, entry.rc, now,
                                      public_only=not private, request_id=request_id)

    # -- admin operations ----------------------------------------------------------

    async def _admin_request(self, env: Envelope, msg: Message, now: int) -> bytes:
        if msg.op_code in PREFIX_OPS:
            if msg.op_code != OpCode.LIST_HOMED_NAS:
                na_prefix(_body(msg, HandleBody).handle)  # RC 102 before any challenge
            return self._challenge(env, msg, now)
        handle = self.node.parse(_admin_body(msg).handle)
        if msg.op_code == OpCode.CREATE_HANDLE:
            # Refused before any challenge, as the reference server does.
            if not self.node.serves_handle(handle):
                raise NotResponsible(NOT_HOMED)
            if await self.node.store.get(handle.key) is not None:
                raise HandleAlreadyExists()
        return self._challenge(env, msg, now)

    def _challenge(self, env: Envelope, msg: Message, now: int) -> bytes:
        session_id = self._new_session_id()
        nonce = os.urandom(NONCE_BYTES)
        version = reply_envelope(env).version
        digest = compute_request_digest(msg.header_and_body, version).digest
        self._challenges[session_id] = PendingChallenge(
            env, msg, nonce, digest, self._clock() + CHALLENGE_SECONDS
        )
        while len(self._challenges) > MAX_PENDING_CHALLENGES:
            self._challenges.popitem(last=False)
        return encode_reply(env, msg, RC.AUTHENTICATION_NEEDED, ChallengeBody(nonce), now=now,
                            session_id=session_id)

    def _new_session_id(self) -> int:
        while True:
            session_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
            if session_id and session_id not in self._challenges:
                return session_id

    async def _challenge_answer(self, env: Envelope, msg: Message, now: int, peer: str
                                ) -> bytes:
        pending = self._challenges.pop(env.session_id, None)
        if pending is None:
            return encode_error_reply(env, msg, RC.ERROR, MSG_INVALID_SESSION, now=now)
        original_env, original = pending.envelope, pending.message
        answer = _body(msg, ChallengeAnswer)
        if pending.expires < self._clock():
            return self._final_error(pending, env, HandleError("", RC.AUTHEN_TIMEOUT), now)
        identity = Identity(answer.id_index, answer.id_handle)
        # Each guess costs the guesser only a round trip and a fresh nonce, so
        # failures are throttled per address and identity like HTTP Basic ones.
        throttle = self.node.authenticator.throttle
        try:
            throttle.check(identity.text, peer)
        except TooManyAttempts as exc:
            return self._final_error(pending, env, exc, now)
        if answer.auth_type != HS_SECKEY or not await self._verify(identity, pending, answer):
            throttle.failed(identity.text, peer)
            return self._final_error(pending, env, HandleError("", RC.AUTHENTICATION_FAILED), now)
        throttle.succeeded(identity.text, peer)
        try:
            if original.op_code == OpCode.RESOLUTION:
                return await self._authenticated_resolution(
                    identity, original_env, original, now, env.request_id
                )
            body = await self._perform(identity, original)
        except HandleError as exc:
            return self._final_error(pending, env, exc, now)
        return encode_reply(original_env, original, RC.SUCCESS, body, now=now,
                            request_id=env.request_id, session_id=0)

    async def _verify(
        self, identity: Identity, pending: PendingChallenge, answer: ChallengeAnswer
    ) -> bool:
        record = await self.node.record_of(identity.handle)
        version = reply_envelope(pending.envelope).version
        for value in record or ():
            if value.type != HS_SECKEY or identity.index not in (0, value.index):
                continue
            key = self._key_material(value.data)
            if key is None:
                log.warning("%s has no key material for challenge-response "
                            "(HS_SECKEY written without a node master key)", identity.text)
                continue
            if verify_secret_key_answer(key, pending.nonce, pending.digest,
                                        answer.signed_response, version=version):
                return True
        return False

    async def _perform(
        self, identity: Identity, msg: Message
    ) -> HandleBody | HandleListBody | EmptyBody:
        registrar = self.node.registrar
        op = msg.op_code
        if op in PREFIX_OPS:
            return await self._prefix_op(identity, msg)
        body = _admin_body(msg)
        handle = self.node.parse(body.handle)
        if isinstance(body, ValuesBody):
            if op == OpCode.CREATE_HANDLE:
                await registrar.put_record(identity, handle, body.values, overwrite=False)
                return HandleBody(handle.text)
            if op == OpCode.ADD_VALUE:
                await registrar.add_values(identity, handle, body.values, overwrite=False)
            else:  # MODIFY_VALUE
                await registrar.modify_values(identity, handle, body.values)
        elif isinstance(body, IndexesBody):  # REMOVE_VALUE
            await registrar.remove_values(identity, handle, body.indexes)
        else:  # DELETE_HANDLE
            await registrar.delete(identity, handle)
        return EMPTY

    async def _prefix_op(self, identity: Identity, msg: Message) -> HandleListBody | EmptyBody:
        """HOME_NA, UNHOME_NA, LIST_HOMED_NAS: what this node serves (not the top-level's)."""
        if identity not in self.node.server_admins:
            raise HandleError("Not a server administrator", RC.INSUFFICIENT_PERMISSIONS)
        if msg.op_code == OpCode.LIST_HOMED_NAS:
            return HandleListBody(tuple(prefix_handle(p) for p in sorted(self.node.homed)))
        prefix = na_prefix(_body(msg, HandleBody).handle)
        if msg.op_code == OpCode.HOME_NA:
            await self.node.home_prefix(prefix, [])
        else:
            await self.node.unhome_prefix(prefix)
        return EMPTY

    # -- errors --------------------------------------------------------------------

    def _error(self, env: Envelope, msg: Message, exc: HandleError, now: int) -> bytes:
        if exc.rc == RC.ERROR:
            log.warning("binary request failed: %s", exc.message)
        return encode_error_reply(env, msg, exc.rc, exc.message, now=now)

    def _final_error(
        self, pending: PendingChallenge, answer_env: Envelope, exc: HandleError, now: int
    ) -> bytes:
        """An error to the original request, addressed to the answer (its requestId)."""
        return encode_reply(pending.envelope, pending.message, exc.rc, ErrorBody(exc.message),
                            now=now, request_id=answer_env.request_id, session_id=0)


def na_prefix(text: str) -> str:
    """The prefix a HOME_NA/UNHOME_NA names: ``0.NA/88.118``, or bare ``88.118``."""
    if "/" not in text:
        text = prefix_handle(text)
    if not text.upper().startswith(PREFIX_NA + "/"):
        raise HandleError(MSG_NOT_A_NA_HANDLE, RC.INVALID_HANDLE)
    return parse_prefix(text)


B = TypeVar("B")


def _body(msg: Message, kind: type[B]) -> B:
    """The message's body, checked to be what its opCode carries."""
    if not isinstance(msg.body, kind):
        raise HandleError(f"Unexpected body for opCode {msg.op_code}", RC.PROTOCOL_ERROR)
    return msg.body


def _admin_body(msg: Message) -> ValuesBody | IndexesBody | HandleBody:
    body = msg.body
    if not isinstance(body, ValuesBody | IndexesBody | HandleBody):
        raise HandleError(f"Unexpected body for opCode {msg.op_code}", RC.PROTOCOL_ERROR)
    return body
