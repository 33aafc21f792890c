"""Password-guessing throttle: backoff per address and identity, owners never locked out."""

from __future__ import annotations

import threading

import pytest

from resolver import auth
from resolver.throttle import (
    FREE_FAILURES_PER_ADDRESS,
    FREE_FAILURES_PER_IDENTITY,
    FREE_FAILURES_PER_PAIR,
    WINDOW,
    LoginThrottle,
    TooManyAttempts,
)
from tests.live import ADMIN, PREFIX, SECRET, LiveNode, live_node  # noqa: F401


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail_times(throttle: LoginThrottle, n: int, identity: str, address: str) -> None:
    for _ in range(n):
        throttle.check(identity, address)
        throttle.failed(identity, address)


def test_pair_backs_off_exponentially_then_forgets() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock)
    fail_times(throttle, FREE_FAILURES_PER_PAIR, "300:A/ADMIN", "10.0.0.1")
    with pytest.raises(TooManyAttempts) as caught:
        throttle.check("300:A/ADMIN", "10.0.0.1")
    assert caught.value.retry_after == 1
    clock.now += 1.0
    throttle.check("300:A/ADMIN", "10.0.0.1")
    throttle.failed("300:A/ADMIN", "10.0.0.1")
    with pytest.raises(TooManyAttempts) as caught:
        throttle.check("300:A/ADMIN", "10.0.0.1")
    assert caught.value.retry_after == 2  # doubled
    throttle.check("300:A/ADMIN", "10.0.0.2")  # another address is not affected
    clock.now += WINDOW + 10
    throttle.check("300:A/ADMIN", "10.0.0.1")  # forgotten after the window


def test_one_address_guessing_many_identities_is_stopped() -> None:
    throttle = LoginThrottle(clock=Clock())
    for i in range(FREE_FAILURES_PER_ADDRESS):
        fail_times(throttle, 1, f"300:A/USER{i}", "10.0.0.9")
    with pytest.raises(TooManyAttempts):
        throttle.check("300:A/FRESH", "10.0.0.9")


def test_spread_out_attack_on_an_identity_does_not_lock_out_its_owner() -> None:
    throttle = LoginThrottle(clock=Clock())
    throttle.succeeded("300:A/ADMIN", "192.168.1.5")  # the owner's usual address
    for i in range(FREE_FAILURES_PER_IDENTITY):
        fail_times(throttle, 1, "300:A/ADMIN", f"10.1.{i // 250}.{i % 250}")
    with pytest.raises(TooManyAttempts):
        throttle.check("300:A/ADMIN", "10.9.9.9")  # a new address waits
    throttle.check("300:A/ADMIN", "192.168.1.5")  # the owner does not


def test_success_clears_the_pair() -> None:
    throttle = LoginThrottle(clock=Clock())
    fail_times(throttle, FREE_FAILURES_PER_PAIR - 1, "300:A/ADMIN", "10.0.0.1")
    throttle.succeeded("300:A/ADMIN", "10.0.0.1")
    fail_times(throttle, FREE_FAILURES_PER_PAIR - 1, "300:A/ADMIN", "10.0.0.1")
    throttle.check("300:A/ADMIN", "10.0.0.1")


async def test_rest_basic_auth_guessing_gets_429_with_retry_after(live_node: LiveNode) -> None:  # noqa: F811
    url = f"{live_node.url}/api/handles?prefix={PREFIX}"
    for _ in range(FREE_FAILURES_PER_PAIR):
        async with live_node.session.get(url, headers=live_node.auth(ADMIN, "wrong")) as r:
            assert r.status == 401
    async with live_node.session.get(url, headers=live_node.auth(ADMIN, SECRET)) as r:
        assert r.status == 429  # even the right secret waits: no hash was spent on it
        assert int(r.headers["Retry-After"]) >= 1
        body = await r.json()
        assert body["responseCode"] == 403 and "retry after" in body["message"]
    live_node.node.authenticator.throttle.succeeded(ADMIN, "127.0.0.1")  # as if time passed
    async with live_node.session.get(url, headers=live_node.auth(ADMIN, SECRET)) as r:
        assert r.status == 200


async def test_password_hashing_runs_off_the_event_loop(
    live_node: LiveNode, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    threads: list[int] = []
    real = auth.verify_secret

    def recording(stored: bytes, secret: bytes) -> bool:
        threads.append(threading.get_ident())
        return real(stored, secret)

    monkeypatch.setattr(auth, "verify_secret", recording)
    url = f"{live_node.url}/api/handles?prefix={PREFIX}"
    async with live_node.session.get(url, headers=live_node.auth(ADMIN, "wrong")) as r:
        assert r.status == 401
    assert threads and threading.get_ident() not in threads


async def test_snms_login_guessing_is_throttled(live_node: LiveNode) -> None:  # noqa: F811
    from tests.test_snms_api import add_account, call

    await add_account(live_node)
    for _ in range(FREE_FAILURES_PER_PAIR):
        _, body = await call(live_node, "POST", "/identity/token",
                             {"username": "app1", "password": "nope"})
        assert body["status"] == -2
    _, body = await call(live_node, "POST", "/identity/token",
                         {"username": "app1", "password": "nope"})
    assert body["status"] == -2 and "秒后重试" in body["message"]


async def test_forged_snms_tokens_are_throttled_per_address(live_node: LiveNode) -> None:  # noqa: F811
    from tests.test_snms_api import call

    for _ in range(FREE_FAILURES_PER_PAIR):
        _, body = await call(live_node, "GET", "/identityv2/data/detail", token="a.b.c",
                             params={"handle": f"{PREFIX}/x"})
        assert body["status"] == -1
    _, body = await call(live_node, "GET", "/identityv2/data/detail", token="a.b.c",
                         params={"handle": f"{PREFIX}/x"})
    assert body["status"] == -1 and "秒后重试" in body["message"]
