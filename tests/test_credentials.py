"""registry.credentials: hashed + sealed HS_SECKEYs and the node master key."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.credentials import (
    MASTER_KEY_BYTES,
    SCHEME,
    MasterKey,
    MasterKeyError,
    SecretSealer,
    hash_secret,
    is_hashed,
    is_sealed,
    master_key_path_for,
    verify_secret,
)

FAST = 1_000  # PBKDF2 iterations for tests; the format records the count
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def sealer() -> SecretSealer:
    return SecretSealer(MasterKey.generate())


def test_seal_unseal_round_trip(sealer):
    stored = sealer.seal(b"s3cret", iterations=FAST)
    assert is_hashed(stored) and is_sealed(stored)
    assert b"s3cret" not in stored
    fields = stored.split(b"$")
    assert len(fields) == 5 and fields[0] == SCHEME and fields[4].startswith(b"aesgcm:")
    assert sealer.unseal(stored) == b"s3cret"


def test_seal_is_randomised(sealer):
    a, b = sealer.seal(b"same", iterations=FAST), sealer.seal(b"same", iterations=FAST)
    assert a != b and sealer.unseal(a) == sealer.unseal(b) == b"same"


def test_seal_leaves_stored_forms_unchanged(sealer):
    sealed = sealer.seal(b"x", iterations=FAST)
    hashed = hash_secret(b"x", iterations=FAST)
    assert sealer.seal(sealed) == sealed
    assert sealer.seal(hashed) == hashed
    assert hash_secret(sealed) == sealed


def test_wrong_master_key_gives_none(sealer, caplog):
    stored = sealer.seal(b"s3cret", iterations=FAST)
    assert SecretSealer(MasterKey.generate()).unseal(stored) is None
    assert "s3cret" not in caplog.text


def test_tampered_ciphertext_gives_none(sealer):
    stored = sealer.seal(b"s3cret", iterations=FAST)
    head, blob = stored.rsplit(b"$aesgcm:", 1)
    raw = bytearray(base64.b64decode(blob))
    for i in (0, 12, len(raw) - 1):  # nonce, ciphertext, tag
        bad = bytearray(raw)
        bad[i] ^= 1
        assert sealer.unseal(head + b"$aesgcm:" + base64.b64encode(bytes(bad))) is None
    assert sealer.unseal(head + b"$aesgcm:" + base64.b64encode(bytes(raw[:20]))) is None
    assert sealer.unseal(head + b"$aesgcm:!!notbase64") is None


def test_sealed_part_is_bound_to_its_hash(sealer):
    a = sealer.seal(b"alpha", iterations=FAST)
    b = sealer.seal(b"bravo", iterations=FAST)
    spliced = a.rsplit(b"$", 1)[0] + b"$" + b.rsplit(b"$", 1)[1]
    assert sealer.unseal(spliced) is None


def test_hash_only_and_other_values_give_none(sealer):
    assert sealer.unseal(hash_secret(b"s3cret", iterations=FAST)) is None
    assert sealer.unseal(b"s3cret") is None
    assert sealer.unseal(b"") is None
    assert sealer.unseal(hash_secret(b"x", iterations=FAST) + b"$other:abc") is None


@pytest.mark.parametrize("form", ["hash", "sealed"])
def test_verify_secret_both_forms(sealer, form):
    stored = (
        hash_secret(b"s3cret", iterations=FAST)
        if form == "hash"
        else sealer.seal(b"s3cret", iterations=FAST)
    )
    assert verify_secret(stored, b"s3cret")
    assert not verify_secret(stored, b"s3creT")
    assert not verify_secret(stored, b"")


def test_verify_secret_rejects_malformed():
    good = hash_secret(b"s3cret", iterations=FAST)
    assert not verify_secret(b"s3cret", b"s3cret")
    assert not verify_secret(good + b"$other:abc", b"s3cret")
    assert not verify_secret(good + b"$aesgcm:x$extra", b"s3cret")
    assert not verify_secret(good.replace(b"$1000$", b"$0$"), b"s3cret")
    assert not verify_secret(good.replace(b"$1000$", b"$abc$"), b"s3cret")


def test_default_iterations_still_verify():
    assert verify_secret(hash_secret(b"pw"), b"pw")


# -- master key ------------------------------------------------------------------


def test_master_key_path_for():
    assert master_key_path_for("/data/idnode.db") == Path("/data/idnode.db.key")
    assert master_key_path_for(Path("store")) == Path("store.key")


def test_load_or_create_creates_0600_and_reuses(tmp_path):
    path = tmp_path / "sub" / "store.db.key"
    key = MasterKey.load_or_create(path)
    st_ = path.stat()
    assert stat.S_IMODE(st_.st_mode) == 0o600 and st_.st_size == MASTER_KEY_BYTES
    assert path.read_bytes() == key.key
    assert MasterKey.load_or_create(path) == key
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp left behind
    assert "redacted" in repr(key) and key.key.hex() not in repr(key)


def test_load_or_create_refuses_group_or_world_readable(tmp_path):
    path = tmp_path / "k"
    MasterKey.load_or_create(path)
    for mode in (0o644, 0o640, 0o604):
        path.chmod(mode)
        with pytest.raises(MasterKeyError, match="group/others"):
            MasterKey.load_or_create(path)


@pytest.mark.parametrize("size", [0, 16, 31, 33, 64])
def test_load_or_create_refuses_wrong_size(tmp_path, size):
    path = tmp_path / "k"
    path.write_bytes(b"\x01" * size)
    path.chmod(0o600)
    with pytest.raises(MasterKeyError, match="expected 32"):
        MasterKey.load_or_create(path)
    assert path.read_bytes() == b"\x01" * size  # never overwritten


def test_load_or_create_refuses_non_regular(tmp_path):
    (tmp_path / "k").mkdir()
    with pytest.raises(MasterKeyError):
        MasterKey.load_or_create(tmp_path / "k")


def test_concurrent_creation_threads(tmp_path):
    path = tmp_path / "k"
    barrier = threading.Barrier(8)
    keys: list[MasterKey] = []

    def race():
        barrier.wait()
        keys.append(MasterKey.load_or_create(path))

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len({k.key for k in keys}) == 1
    assert path.read_bytes() == keys[0].key


def test_concurrent_creation_processes(tmp_path):
    path, go = tmp_path / "k", tmp_path / "go"
    script = (
        "import os, sys, time\n"
        "from registry.credentials import MasterKey\n"
        "while not os.path.exists(sys.argv[2]): time.sleep(0.001)\n"
        "print(MasterKey.load_or_create(sys.argv[1]).key.hex())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), str(go)],
            stdout=subprocess.PIPE, env=env, cwd=ROOT, text=True,
        )
        for _ in range(4)
    ]
    time.sleep(0.5)  # let them all import and spin
    go.touch()
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1 and bytes.fromhex(outs[0]) == path.read_bytes()


def test_from_env():
    key = MasterKey.generate()
    assert MasterKey.from_env(base64.b64encode(key.key).decode()) == key
    assert MasterKey.from_env(base64.b64encode(key.key).decode() + "\n") == key
    with pytest.raises(MasterKeyError, match="32 bytes"):
        MasterKey.from_env(base64.b64encode(b"short").decode())
    with pytest.raises(MasterKeyError, match="base64") as info:
        MasterKey.from_env("not base64 at all!")
    assert "not base64 at all" not in str(info.value)


# -- property ----------------------------------------------------------------------

_SEALER = SecretSealer(MasterKey.generate())


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=256))
def test_round_trip_arbitrary_bytes(secret):
    stored = _SEALER.seal(secret, iterations=10)
    if is_hashed(secret):  # an already stored form passes through
        assert stored == secret
        return
    assert _SEALER.unseal(stored) == secret
    assert verify_secret(stored, secret)
    # (not + b"\0": HMAC zero-pads short keys, so PBKDF2 cannot tell those apart)
    assert not verify_secret(stored, secret + b"!")
