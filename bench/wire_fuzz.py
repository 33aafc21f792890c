"""Mutation fuzz of the binary Handle codec (protocol.handle_wire), in-process.

    python -m bench.wire_fuzz [-n 1000000] [--seed 1]

Builds a corpus of valid packets (every request and reply shape, UDP fragments),
then feeds N mutated copies (bit flips, byte stores, int4 fields set to edge
values, truncation, extension, splices) through every decoder: the cache-key
peek, decode_request, decode_response, re-encoding whatever decodes, the
credential parser, challenge-answer verification, a TcpFramer and a
UdpReassembler. Reports packets/s and the outcomes; the exit status is 1 if
anything but HandleProtocolError escaped. The server-level fuzz comes later.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

from protocol.codes import RC
from protocol.handle_wire import (
    CLOSED,
    FLAG_PUBL,
    FLAG_RRDG,
    ChallengeAnswer,
    ChallengeBody,
    Credential,
    Envelope,
    ErrorBody,
    HandleBody,
    HandleListBody,
    HandleProtocolError,
    IndexesBody,
    Message,
    OpaqueBody,
    ReferralBody,
    RequestDigest,
    ResolutionRequest,
    SiteInfoReply,
    TcpFramer,
    UdpReassembler,
    ValuesBody,
    VerifyChallengeReply,
    VerifyChallengeRequest,
    answer_secret_key_challenge,
    decode_credential,
    decode_request,
    decode_response,
    encode_credential,
    encode_packet,
    encode_reply,
    reply_cache_key,
    split_datagrams,
    verify_secret_key_answer,
)
from protocol.site_info import Interface, ServerInfo, SiteInfo, encode_site
from protocol.values import HandleValue, ValueReference

NONCE = bytes(range(16))
DIGEST = bytes(range(32))
_EDGE_INTS = (0, 1, 3, 24, 492, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def build_corpus() -> list[bytes]:
    """Valid packets of every shape the codec knows, plus fragments of a large one."""
    values = (
        HandleValue(1, "URL", b"https://example.com/x", timestamp=0x6B04802B),
        HandleValue(2, "EMAIL", b"a@b", ttl=0x70000000, ttl_absolute=True, permissions=0x0C),
        HandleValue(3, "HS_VLIST", b"\x00" * 8, references=(ValueReference("T/r", 1),)),
    )
    site = encode_site(
        SiteInfo(
            serial_number=1,
            primary=True,
            servers=(ServerInfo(1, bytes([192, 0, 2, 2]), b"k", (Interface(3, 1, 2641),)),),
        )
    )
    signed = encode_credential(Credential("HS_SIGNED", b"SHA-256", bytes(64)))
    answer = answer_secret_key_challenge(b"secret", NONCE, DIGEST, salt=bytes(16), iterations=2)
    messages = [
        Message(1, 0, FLAG_PUBL, ResolutionRequest("TEST/item1", (1, 100), ("URL", "HS_"))),
        Message(1, 0, FLAG_RRDG, ResolutionRequest("TEST/item1"), credential=signed),
        Message(2, 0, 0, HandleBody("/")),
        Message(100, 0, 0x19000000, ValuesBody("TEST/new", values)),
        Message(101, 0, 0, HandleBody("TEST/new")),
        Message(102, 0, 0, ValuesBody("TEST/new", values[:1])),
        Message(103, 0, 0, IndexesBody("TEST/new", (1, 2))),
        Message(104, 0, 0, ValuesBody("TEST/new", values[1:])),
        Message(105, 0, 0, HandleBody("0.NA/TEST")),
        Message(200, 0, 0, ChallengeAnswer("HS_SECKEY", "TEST/ADMIN", 300, answer)),
        Message(
            201, 0, 0, VerifyChallengeRequest("T/A", 300, NONCE, RequestDigest(0, DIGEST), answer)
        ),
        Message(300, 0, 0, HandleBody("0.NA/TEST")),
        Message(400, 0, 0, OpaqueBody(b"\x00\x04dh")),
        Message(
            1,
            1,
            0x90800000,
            ValuesBody("TEST/item1", values),
            1,
            request_digest=RequestDigest(3, DIGEST),
        ),
        Message(2, 1, 0x90000000, SiteInfoReply(site), 1),
        Message(100, 1, 0x90000000, HandleBody("TEST/new"), 1),
        Message(101, 1, 0x90000000, request_digest=RequestDigest(1, DIGEST[:16])),
        Message(105, 1, 0x94000000, HandleListBody(("TEST/a", "TEST/b")), 1),
        Message(201, 1, 0x90000000, VerifyChallengeReply(True), 1),
        Message(1, 302, 0x90000000, ReferralBody("TEST/x", values[:1]), 1),
        Message(
            100, 402, 0x99800000, ChallengeBody(NONCE), 1, request_digest=RequestDigest(3, DIGEST)
        ),
        Message(1, 301, 0x90000000, ErrorBody("That prefix doesn't live here"), 1),
        Message(0, 4, 0x19000000, ErrorBody("Invalid message length"), 0xFFFF),
    ]
    corpus = [encode_packet(Envelope(request_id=i), m) for i, m in enumerate(messages)]
    env, req = decode_request(corpus[0])
    corpus.append(encode_reply(env, req, RC.AUTHENTICATION_NEEDED, ChallengeBody(NONCE), now=0))
    big = Message(100, 0, 0, ValuesBody("TEST/big", values * 8))
    corpus += split_datagrams(encode_packet(Envelope(request_id=99), big))
    return corpus


def mutate(rng: random.Random, base: bytes) -> bytes:
    """One hostile variant of ``base``."""
    buf = bytearray(base)
    kind = rng.randrange(6)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # byte stores
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(len(buf))] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    elif kind == 2:  # an int4 (a length or count, often) set to an edge value
        i = rng.randrange(max(1, len(buf) - 3))
        v = rng.choice((*_EDGE_INTS, rng.randrange(1 << 32), len(buf) - i, rng.randrange(600)))
        buf[i : i + 4] = v.to_bytes(4, "big")
    elif kind == 3:  # truncation
        del buf[rng.randrange(len(buf) + 1) :]
    elif kind == 4:  # extension
        buf += rng.randbytes(rng.randrange(1, 40))
    else:  # splice: a slice repeated in place
        i, j = sorted(rng.randrange(len(buf) + 1) for _ in range(2))
        buf[i:i] = buf[i:j]
    return bytes(buf)


def exercise(data: bytes, reassembler: UdpReassembler, n: int) -> str:
    """Every decoder over one input; returns the decode_request outcome."""
    reply_cache_key(data)
    outcome = ""
    for decode in (decode_request, decode_response):
        try:
            env, msg = decode(data)
        except HandleProtocolError as exc:
            outcome = outcome or f"rc {int(exc.rc)}"
            continue
        outcome = outcome or "decoded"
        encode_packet(env, msg)
        if msg.credential:
            with contextlib.suppress(HandleProtocolError):
                decode_credential(msg.credential)
        if isinstance(msg.body, ChallengeAnswer):
            verify_secret_key_answer(
                b"secret", NONCE, DIGEST, msg.body.signed_response, max_work=1000
            )
    framer = TcpFramer()
    framer.receive_data(data)
    framer.receive_data(b"")
    with contextlib.suppress(HandleProtocolError):
        while framer.next_message() is not CLOSED:
            pass
    if n % 4 == 0:
        with contextlib.suppress(HandleProtocolError):
            reassembler.add(n % 5, data, now=n / 10_000)
    return outcome


@dataclass
class FuzzReport:
    packets: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    unexpected: list[tuple[bytes, str]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.packets / self.seconds if self.seconds else 0.0


def fuzz(corpus: list[bytes], n: int, seed: int = 1, keep: int = 10) -> FuzzReport:
    rng = random.Random(seed)
    reassembler = UdpReassembler()
    report = FuzzReport()
    started = time.perf_counter()
    for i in range(n):
        data = mutate(rng, rng.choice(corpus))
        try:
            report.outcomes[exercise(data, reassembler, i)] += 1
        except Exception as exc:  # the point of the exercise: anything else is a bug
            report.outcomes[f"UNEXPECTED {type(exc).__name__}"] += 1
            if len(report.unexpected) < keep:
                report.unexpected.append((data, traceback.format_exc()))
    report.seconds = time.perf_counter() - started
    report.packets = n
    assert reassembler.buffered_bytes <= reassembler.max_bytes
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--packets", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    corpus = build_corpus()
    report = fuzz(corpus, args.packets, args.seed)
    print(f"{report.packets} mutated packets from {len(corpus)} valid ones, seed {args.seed}")
    print(f"{report.seconds:.1f} s, {report.rate:,.0f} packets/s (all decoders per packet)")
    for outcome, count in report.outcomes.most_common():
        print(f"  {count:>9}  {outcome}")
    for data, tb in report.unexpected:
        print(f"\ninput {data.hex()}\n{tb}")
    if report.unexpected:
        print("FAIL: exceptions other than HandleProtocolError escaped")
        return 1
    print("OK: nothing but HandleProtocolError escaped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
