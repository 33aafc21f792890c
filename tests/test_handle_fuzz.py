"""Server-level fuzz of the binary Handle protocol against a live node, in-process.

Hypothesis datagrams (raw bytes and structured envelope + header + body) and a
bounded mutation loop over valid requests (bench.handle_fuzz's corpus and
mutator) go to the node over UDP, some over TCP. Every reply must be what
bench.handle_fuzz's oracle predicts from protocol/ alone (RC 4 or 2 exactly as
the codec says for undecodable input, a legitimate code for what still
decodes), valid probes interleaved with the junk must keep getting exactly the
right answer, and nothing may be logged at ERROR by the resolver or the event
loop.

Divergences found by the fuzzer and fixed since (``bench.handle_fuzz.FIXED``)
have regression tests below. Open bugs (``bench.handle_fuzz.KNOWN``) are
tolerated in the fuzz loops only in the exact form the server shows today
(reply or silence, and the log signature), and each is pinned by a strict
xfail test: fixing one turns its test into a failure that says to drop the
marker and the entry in KNOWN.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import traceback
from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live import ADMIN, PREFIX, LiveNode

from bench.handle_fuzz import (
    FOLLOW_PROBE,
    KNOWN,
    KNOWN_LOG_SIGNATURES,
    Expect,
    Handles,
    build_corpus,
    check_probe,
    check_reply,
    expect_tcp,
    expect_udp,
    handles_for,
    mutate,
    probe_packet,
    resolution,
    rest_records,
)
from protocol.codes import RC
from protocol.handle_wire import (
    ENV_TRUNCATED,
    FLAG_CERT,
    FLAG_PUBL,
    FLAG_RECU,
    FLAG_RRDG,
    MSG_SERVER_ERROR,
    UdpReassembler,
    decode_response,
)

HOST = "127.0.0.1"
TIMEOUT = 2.0
MUTANTS_UDP = 1500
MUTANTS_TCP = 60
SECONDS = 4.0  # the mutation loop stops here even if not all mutants went out
FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


class Target:
    """A live node with the fuzz identifiers registered, and a tally of outcomes."""

    def __init__(self, node: LiveNode, h: Handles) -> None:
        assert node.running.handle_port
        self.node = node
        self.port = node.running.handle_port
        self.h = h
        self.rcs: Counter[str] = Counter()
        self.known: Counter[str] = Counter()
        self.seq = 0

    def next_id(self, tag: int) -> int:
        self.seq += 1
        return tag << 24 | (self.seq & 0xFFFFFF)


@pytest.fixture
async def target(live_node: LiveNode, caplog: pytest.LogCaptureFixture) -> Target:
    caplog.set_level(logging.WARNING)
    h = handles_for(PREFIX)
    for handle, values in rest_records(h).items():
        r = await live_node.session.put(
            live_node.handle_url(handle), data=orjson.dumps({"values": values}),
            headers={"Content-Type": "application/json", **live_node.auth(ADMIN)})
        assert r.status in (200, 201), await r.text()
    return Target(live_node, h)


def logged_errors(caplog: pytest.LogCaptureFixture, *, tolerate_known: bool) -> list[str]:
    """ERROR records from the resolver and the event loop; with ``tolerate_known``,
    not those of an open bug in KNOWN (its exception raised in its function)."""
    found = []
    for record in caplog.records:
        if record.levelno < logging.ERROR:
            continue
        if not (record.name.startswith("resolver") or record.name == "asyncio"):
            continue
        exc = record.exc_info[1] if record.exc_info else None
        if tolerate_known and exc is not None:
            kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
            frames = {f.name for f in traceback.extract_tb(exc.__traceback__)}
            if any(kind.endswith(name) and func in frames
                   for name, func in KNOWN_LOG_SIGNATURES.values()):
                continue
        found.append(f"{record.name}: {record.getMessage()} {exc!r}")
    return found


# --- exchanges -------------------------------------------------------------------


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)


async def udp_exchange(port: int, data: bytes, follow: bytes | None = None
                       ) -> tuple[list[bytes], bytes | None]:
    """Send ``data`` (then ``follow``, a valid probe) from a new socket; return the
    replies (reassembled) that came before the probe's, and the probe's reply.
    Without a probe, returns at the first reply."""
    loop = asyncio.get_running_loop()
    transport, collector = await loop.create_datagram_endpoint(
        _Collector, remote_addr=(HOST, port))
    reassembler = UdpReassembler()
    replies: list[bytes] = []
    follow_reply = None
    try:
        transport.sendto(data)
        if follow is not None:
            transport.sendto(follow)
        async with asyncio.timeout(TIMEOUT):
            while True:
                datagram = await collector.queue.get()
                if datagram[2] & ENV_TRUNCATED:
                    whole = reassembler.add("server", datagram, time.monotonic())
                    if whole is None:
                        continue
                    datagram = whole
                if follow is not None and datagram[8:12] == follow[8:12]:
                    follow_reply = datagram
                    break
                replies.append(datagram)
                if follow is None:
                    break
    except TimeoutError:
        pass
    finally:
        transport.close()
    return replies, follow_reply


async def tcp_exchange(port: int, data: bytes) -> bytes | None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(data)
        writer.write_eof()
        async with asyncio.timeout(TIMEOUT):
            reply = await reader.read()
    except (ConnectionResetError, BrokenPipeError):
        reply = b""
    finally:
        writer.close()
    return reply or None


async def fuzz_udp(t: Target, data: bytes) -> list[str]:
    """One datagram from a fresh source: its reply checked against the oracle,
    then a valid probe from the same source checked exactly."""
    if len(data) >= 12 and data[2] & ENV_TRUNCATED:
        # The server keeps fragments by (source, requestId): an id of its own keeps
        # this one from meeting a fragment sent from a recycled port moments ago.
        data = data[:8] + t.next_id(0xFD).to_bytes(4, "big") + data[12:]
    expected = expect_udp(data)
    # After a packet that may get no reply, the probe must be answered after it
    # (FOLLOW_PROBE); otherwise any kind.
    probe_kind = (FOLLOW_PROBE if expected.may_be_silent
                  else ("public", "site", "restricted", "missing")[t.seq % 4])
    probe = probe_packet(probe_kind, t.h, t.next_id(0xFE))
    problems = []
    if expected.may_be_silent:
        replies, probe_reply = await udp_exchange(t.port, data, follow=probe)
    else:
        replies, _ = await udp_exchange(t.port, data)
        probe_replies, _ = await udp_exchange(t.port, probe)
        probe_reply = probe_replies[0] if probe_replies else None
    if len(replies) > 1:
        problems.append(f"{len(replies)} replies")
    problems += judge(t, expected, replies[0] if replies else None, data, udp=True)
    wrong = check_probe(probe_kind, probe_reply, t.h)
    if wrong:
        problems.append(f"probe {probe_kind} after {data.hex()}: {wrong}")
    return problems


def judge(t: Target, expected: Expect, reply: bytes | None, data: bytes, *, udp: bool
          ) -> list[str]:
    rc, findings = check_reply(expected, reply, udp=udp)
    t.rcs[f"{'udp' if udp else 'tcp'} {rc}"] += 1
    out = []
    for f in findings:
        if f.tag in KNOWN:
            t.known[f.tag] += 1
        else:
            out.append(f"{f.category}: {f.detail}; packet {data.hex()} reply "
                       f"{reply.hex() if reply else None}")
    return out


async def fuzz_tcp(t: Target, data: bytes) -> list[str]:
    return judge(t, expect_tcp(data), await tcp_exchange(t.port, data), data, udp=False)


async def still_correct(t: Target) -> None:
    for kind in ("public", "site", "restricted", "missing"):
        replies, _ = await udp_exchange(t.port, probe_packet(kind, t.h, t.next_id(0xFE)))
        assert check_probe(kind, replies[0] if replies else None, t.h) is None, kind
    reply = await tcp_exchange(t.port, probe_packet("public", t.h, t.next_id(0xFE)))
    assert check_probe("public", reply, t.h) is None


# --- hypothesis ---------------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)
small = st.integers(0, 600)


@st.composite
def structured_packets(draw: st.DrawFn) -> bytes:
    """Envelope + header + body + credential with every field drawn, lengths right
    most of the time, so the body decoders see the junk."""
    major, minor = draw(st.sampled_from([(2, 11), (2, 11), (2, 1), (2, 5), (5, 0), (1, 0)])
                        | st.tuples(st.integers(0, 255), st.integers(0, 255)))
    flags = draw(st.sampled_from([0, 0, 0, 0x20, 0x40, 0x80]))
    suggested = draw(st.sampled_from([(2, 11), (0, 0), (2, 1), (3, 0)]))
    op = draw(st.sampled_from([1, 1, 1, 2, 100, 101, 102, 103, 104, 105, 200, 201, 300, 400,
                               401, 1000, 0, 9999]) | u32)
    rc = draw(st.sampled_from([0, 0, 0, 0, 1, 2, 402]))
    op_flags = draw(st.sampled_from([0, FLAG_PUBL | FLAG_RECU, FLAG_PUBL | FLAG_RRDG,
                                     FLAG_CERT, 0xFFFFFFFF]) | u32)
    handle = draw(st.sampled_from([f"{PREFIX}/FUZZ-PUBLIC", f"{PREFIX}/FUZZ-RESTRICTED",
                                   f"{PREFIX}/nothing", "FOO/bar", "", "/", f"{PREFIX}"])
                  | st.text(max_size=40))
    hb = handle.encode("utf-8", "surrogatepass")
    tail = draw(st.sampled_from([b"", b"\0\0\0\0\0\0\0\0", b"\0\0\0\1\0\0\0\1\0\0\0\0",
                                 b"\0\0\0\0\0\0\0\1\0\0\0\3URL"]) | st.binary(max_size=120))
    body = draw(st.sampled_from([len(hb).to_bytes(4, "big") + hb + tail, tail]))
    credential = draw(st.sampled_from([b"\0\0\0\0", b"", b"\0\0\0\x10" + bytes(16)])
                      | st.binary(max_size=12))
    body_length = draw(st.sampled_from([len(body)] * 4) | small)
    header = b"".join(x.to_bytes(n, "big") for x, n in (
        (op, 4), (rc, 4), (op_flags, 4), (0xFFFF, 2), (0, 1), (0, 1), (0, 4),
        (body_length, 4)))
    message = header + body + credential
    length = draw(st.sampled_from([len(message)] * 4) | small | u32)
    envelope = bytes([major, minor, flags | suggested[0], suggested[1]]) + b"".join(
        x.to_bytes(4, "big") for x in (draw(u32), draw(u32), draw(st.just(0) | u32), length))
    return envelope + message


@FUZZ_SETTINGS
@given(data=st.binary(min_size=1, max_size=600))
async def test_random_datagrams(target: Target, caplog: pytest.LogCaptureFixture, data: bytes):
    assert await fuzz_udp(target, data) == []
    assert logged_errors(caplog, tolerate_known=True) == []


@FUZZ_SETTINGS
@given(data=structured_packets())
async def test_structured_packets(target: Target, caplog: pytest.LogCaptureFixture,
                                  data: bytes):
    assert await fuzz_udp(target, data) == []
    if target.seq % 5 == 0:
        assert await fuzz_tcp(target, data) == []
    assert logged_errors(caplog, tolerate_known=True) == []


# --- mutation loop ----------------------------------------------------------------------


async def test_mutated_requests_over_udp_and_tcp(target: Target,
                                                 caplog: pytest.LogCaptureFixture):
    """Mutants of RESOLUTION (with and without PUBL), GET_SITE_INFO, CREATE with
    values, the other admin operations, CHALLENGE_RESPONSE and request fragments."""
    rng = random.Random(20261123)
    corpus = build_corpus(target.h)
    problems: list[str] = []
    deadline = time.monotonic() + SECONDS
    sent = 0
    for i in range(MUTANTS_UDP + MUTANTS_TCP):
        if time.monotonic() > deadline:
            break
        data = mutate(rng, rng.choice(corpus))
        if not data:
            continue  # asyncio does not send empty datagrams
        if i % ((MUTANTS_UDP + MUTANTS_TCP) // MUTANTS_TCP) == 0:
            problems += await fuzz_tcp(target, data)
        else:
            problems += await fuzz_udp(target, data)
        sent += 1
        if len(problems) > 20:
            break
    assert problems == []
    assert sent >= 300, f"only {sent} mutants in {SECONDS} s"
    await still_correct(target)
    assert logged_errors(caplog, tolerate_known=True) == []
    # Every kind of outcome was reached, not only the early refusals.
    codes = {key.split()[1] for key in target.rcs}
    assert {"1", "4", "2", "402"} <= codes, target.rcs


# --- divergences found by the fuzzer: fixed ones, and open bugs pinned --------------------


def _only(replies: list[bytes]) -> tuple[int, int, int, str]:
    assert len(replies) == 1, replies
    env, msg = decode_response(replies[0])
    return env.request_id, msg.op_code, msg.response_code, getattr(msg.body, "message", "")


async def test_refused_tc_datagram_gets_an_early_error(target: Target,
                                                       caplog: pytest.LogCaptureFixture):
    """Regression (FIXED["tc-refused"]): a refused fragment draws an early error."""
    short = bytes.fromhex("020b220b00000000000000050000000000000010")  # TC, messageLength 16
    probe = probe_packet(FOLLOW_PROBE, target.h, 0xFE000001)  # its answer ends the wait
    replies, _ = await udp_exchange(target.port, short, follow=probe)
    assert _only(replies) == (0xFFFFFFFF, 0, RC.PROTOCOL_ERROR, "Invalid message length")
    assert replies[0][2] & ENV_TRUNCATED
    assert logged_errors(caplog, tolerate_known=False) == []


async def test_unknown_opcode_is_refused_like_junk(target: Target):
    """Regression (FIXED["unknown-opcode"]): RC 2, opCode 0, requestId -1."""
    unknown = bytes.fromhex("020b020b0000000000000009000000000000001d0000270f00000000"
                            "00000000ffff00000000000000000001780000000000")
    replies, _ = await udp_exchange(target.port, unknown)
    assert _only(replies) == (0xFFFFFFFF, 0, RC.ERROR, MSG_SERVER_ERROR)


async def test_oversized_datagram_without_tc_is_rc2(target: Target):
    """Regression (FIXED["oversized"]): over 512 bytes without TC is RC 2."""
    big = resolution(target.h.public, 42) + bytes(600)
    replies, _ = await udp_exchange(target.port, big)
    assert _only(replies)[2] == RC.ERROR


async def test_cached_resolution_with_a_bad_credential_is_refused(target: Target):
    """Regression (FIXED["fast-path-lenient"]): cached or not, the same answer."""
    good = resolution(target.h.public, 43)
    # Credential length 32 with no credential bytes: decode_request refuses it ...
    bad = good[:-4] + (32).to_bytes(4, "big")
    assert expect_udp(bad).kind == "early"
    replies, _ = await udp_exchange(target.port, bad)
    assert _only(replies)[2] == RC.PROTOCOL_ERROR  # ... and so does the node, uncached,
    await udp_exchange(target.port, good)  # and once the same request is cached.
    replies, _ = await udp_exchange(target.port, bad)
    assert _only(replies)[2] == RC.PROTOCOL_ERROR


async def test_short_resolution_header_gets_an_early_error(target: Target,
                                                           caplog: pytest.LogCaptureFixture):
    """Regression (FIXED["short-resolution"]): no struct.error in the shortcut."""
    # A RESOLUTION header with bodyLength 0 and messageLength 24: 44 bytes, no body.
    short = bytes.fromhex("020b020b00000000000000060000000000000018"
                          "000000010000000011000000ffff0000000000000000000000")[:44]
    assert len(short) == 44 and expect_udp(short).kind == "early"
    probe = probe_packet(FOLLOW_PROBE, target.h, 0xFE000002)
    replies, probe_reply = await udp_exchange(target.port, short, follow=probe)
    assert check_probe(FOLLOW_PROBE, probe_reply, target.h) is None  # the node carries on
    assert logged_errors(caplog, tolerate_known=False) == []
    assert _only(replies)[2] == RC.PROTOCOL_ERROR
