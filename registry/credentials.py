"""Secrets at rest: HS_SECKEY values are never stored as given.

Stored form (the value's data bytes), hash only or hash plus sealed key::

    idnode-pbkdf2-sha256$<iterations>$<salt, b64>$<hash, b64>
    idnode-pbkdf2-sha256$<iterations>$<salt, b64>$<hash, b64>$aesgcm:<b64(nonce12 + ct + tag16)>

``b64`` is standard base64 with padding (its alphabet has no ``$``). The hash is
PBKDF2-HMAC-SHA256 of the secret with a random 16-byte salt. The optional fifth
field is the secret encrypted with AES-256-GCM under the node's master key
(:class:`MasterKey`), a fresh random 12-byte nonce, and associated data
``AAD_PREFIX + b"\\0" + <the first four fields>``, which binds the sealed key to
this scheme and to the hash it travels with (a sealed part moved onto another
value's hash does not decrypt).

Why both parts:

* REST (HTTP Basic) receives the secret itself, so the hash is enough to check it
  (:func:`verify_secret`); that works without the master key.
* The binary Handle protocol's challenge-response (``protocol.handle_auth``)
  computes HMAC-SHA1/SHA256 and PBKDF2-HMAC-SHA1 (client-chosen salt) over the raw
  key, so the server needs the key bytes: :meth:`SecretSealer.unseal`.
* Someone with a copy of the database but not the master key (a separate file,
  ``<store path>.key`` or ``--master-key FILE``, mode 0600, or ``IDNODE_MASTER_KEY``)
  learns neither the secret nor anything to replay: the hash must be brute-forced
  through PBKDF2 and the sealed part is AES-GCM ciphertext.

A value already in either form (e.g. from an export) is stored unchanged; a
hash-only value (written without a master key) verifies REST passwords but
cannot answer binary challenges until the secret is set again.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

SCHEME = b"idnode-pbkdf2-sha256"
ITERATIONS = 100_000  # ~50 ms per check here; verified credentials are cached by the node
SALT_BYTES = 16

SEAL_TAG = b"aesgcm:"
AAD_PREFIX = b"idnode HS_SECKEY v1"
NONCE_BYTES = 12
MASTER_KEY_BYTES = 32
MASTER_KEY_ENV = "IDNODE_MASTER_KEY"
MASTER_KEY_SUFFIX = ".key"


class MasterKeyError(Exception):
    """The master key file or value is unusable (never carries key material)."""


# -- hash ------------------------------------------------------------------


def is_hashed(data: bytes) -> bool:
    """True for either stored form (hash only, or hash plus sealed key)."""
    return data.startswith(SCHEME + b"$")


def is_sealed(data: bytes) -> bool:
    """True when the stored value carries a sealed key (it may still not decrypt)."""
    parts = _split(data)
    return parts is not None and parts[1] is not None


def hash_secret(secret: bytes, *, iterations: int = ITERATIONS) -> bytes:
    """Hash-only stored form, for callers without a master key."""
    if is_hashed(secret):
        return secret
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
    return b"$".join(
        (SCHEME, str(iterations).encode(), base64.b64encode(salt), base64.b64encode(digest))
    )


def _split(stored: bytes) -> tuple[bytes, bytes | None] | None:
    """``(hash part, sealed blob or None)``, or None when not a stored form."""
    fields = stored.split(b"$")
    if fields[0] != SCHEME:
        return None
    if len(fields) == 4:
        return stored, None
    if len(fields) == 5 and fields[4].startswith(SEAL_TAG):
        return b"$".join(fields[:4]), fields[4][len(SEAL_TAG):]
    return None


def verify_secret(stored: bytes, secret: bytes) -> bool:
    """Constant-time check of ``secret`` against a stored hash (either form).

    False for any other form; the sealed part is not needed (or looked at).
    """
    parts = _split(stored)
    if parts is None:
        return False
    try:
        _, iterations, salt, digest = parts[0].split(b"$")
        n = int(iterations)
        if not 1 <= n <= 10_000_000:
            return False
        expected = base64.b64decode(digest, validate=True)
        candidate = hashlib.pbkdf2_hmac("sha256", secret, base64.b64decode(salt, validate=True), n)
    except ValueError:  # includes binascii.Error
        return False
    return hmac.compare_digest(candidate, expected)


def generate_secret() -> str:
    return secrets.token_urlsafe(24)


# -- master key ----------------------------------------------------------------


def master_key_path_for(store_path: str | os.PathLike[str]) -> Path:
    """Where the master key lives by convention: beside the store, ``<store>.key``."""
    return Path(os.fspath(store_path) + MASTER_KEY_SUFFIX)


class MasterKey:
    """The node's 32-byte AES-256 key; its repr never shows the bytes."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != MASTER_KEY_BYTES:
            raise MasterKeyError(f"master key must be {MASTER_KEY_BYTES} bytes, got {len(key)}")
        self._key = bytes(key)

    @property
    def key(self) -> bytes:
        return self._key

    def __repr__(self) -> str:
        return "MasterKey(<redacted>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MasterKey) and hmac.compare_digest(self._key, other._key)

    def __hash__(self) -> int:
        return hash(hashlib.sha256(self._key).digest())

    @classmethod
    def generate(cls) -> MasterKey:
        return cls(secrets.token_bytes(MASTER_KEY_BYTES))

    @classmethod
    def from_env(cls, value: str) -> MasterKey:
        """From base64 text (e.g. ``$IDNODE_MASTER_KEY``); errors never echo the value."""
        try:
            key = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise MasterKeyError(f"{MASTER_KEY_ENV} is not valid base64") from None
        if len(key) != MASTER_KEY_BYTES:
            raise MasterKeyError(
                f"{MASTER_KEY_ENV} must decode to {MASTER_KEY_BYTES} bytes, got {len(key)}"
            )
        return cls(key)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> MasterKey:
        """Read the key file, creating it (mode 0600, 32 random bytes) if absent.

        Creation writes a temporary file beside it and hard-links it into place,
        which fails if the name exists: the file appears complete, and of several
        processes racing, one key wins and the others read it. Refuses a file that
        is not a regular file, is group/world accessible, or has the wrong size.
        """
        path = Path(path)
        while True:
            try:
                return cls._read(path)
            except FileNotFoundError:
                pass
            candidate = cls.generate()
            if _create_exclusive(path, candidate.key):
                return candidate
            # Lost a race (or the file appeared): loop and read the winner's key.

    @classmethod
    def _read(cls, path: Path) -> MasterKey:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise MasterKeyError(f"cannot open master key file {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise MasterKeyError(f"master key file {path} is not a regular file")
            if os.name == "posix" and st.st_mode & 0o077:
                raise MasterKeyError(
                    f"master key file {path} is accessible by group/others "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
                )
            if st.st_size != MASTER_KEY_BYTES:
                raise MasterKeyError(
                    f"master key file {path} has {st.st_size} bytes, "
                    f"expected {MASTER_KEY_BYTES}"
                )
            data = b""
            while len(data) < MASTER_KEY_BYTES + 1:
                chunk = os.read(fd, MASTER_KEY_BYTES + 1 - len(data))
                if not chunk:
                    break
                data += chunk
        finally:
            os.close(fd)
        if len(data) != MASTER_KEY_BYTES:
            raise MasterKeyError(f"master key file {path} changed size while being read")
        return cls(data)


def _create_exclusive(path: Path, key: bytes) -> bool:
    """Write ``key`` to ``path`` unless it exists; True if this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)  # the umask can only narrow it; be explicit anyway
            view = memoryview(key)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and unlike os.replace never clobbers a racer's key
        except FileExistsError:
            return False
        except OSError:
            # No hard links here (some filesystems): exclusive create in place.
            # A racing reader may then briefly see a short file and be refused.
            try:
                fd = os.open(path, flags, 0o600)
            except FileExistsError:
                return False
            try:
                os.write(fd, key)
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- sealing -------------------------------------------------------------------


class SecretSealer:
    """Stores HS_SECKEYs as hash plus key sealed under the node's master key."""

    __slots__ = ("_aead",)

    def __init__(self, master_key: MasterKey) -> None:
        self._aead = AESGCM(master_key.key)

    def __repr__(self) -> str:
        return "SecretSealer(<redacted>)"

    def seal(self, secret: bytes, *, iterations: int = ITERATIONS) -> bytes:
        """The stored form of ``secret``; an already stored form is returned unchanged."""
        if is_hashed(secret):
            return secret
        hashed = hash_secret(secret, iterations=iterations)
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret, _aad(hashed))
        return hashed + b"$" + SEAL_TAG + base64.b64encode(nonce + sealed)

    def unseal(self, stored: bytes) -> bytes | None:
        """The key bytes, or None: no sealed part, malformed, or not this master key."""
        parts = _split(stored)
        if parts is None or parts[1] is None:
            return None
        hashed, blob = parts
        assert blob is not None  # checked above; spelled out for the type checker
        try:
            raw = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            log.warning("sealed HS_SECKEY is malformed; ignoring its sealed part")
            return None
        if len(raw) < NONCE_BYTES + 16:
            log.warning("sealed HS_SECKEY is truncated; ignoring its sealed part")
            return None
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(hashed))
        except InvalidTag:
            log.warning(
                "sealed HS_SECKEY does not decrypt with this node's master key "
                "(different key, or value altered)"
            )
            return None


def _aad(hashed: bytes) -> bytes:
    return AAD_PREFIX + b"\0" + hashed


def load_master_key(
    store: str | Path, key_file: str | Path | None = None, *, create: bool = False
) -> MasterKey:
    """The node's master key, from the first of:

    1. ``key_file`` (``--master-key FILE``), created only when ``create``
       (``idnode init``): a node that finds it missing must not make up a key
       that differs from the one its database's secrets are sealed with;
    2. ``$IDNODE_MASTER_KEY``;
    3. ``<store>.key`` beside a file store, created if absent.

    A store given as a URL (PostgreSQL) has no "beside": it needs 1 or 2, and
    every node sharing that database needs the same key.
    """
    if key_file is not None:
        path = Path(key_file)
        if create:
            return MasterKey.load_or_create(path)
        try:
            return MasterKey._read(path)
        except FileNotFoundError:
            raise MasterKeyError(
                f"master key file {path} does not exist: copy it from the node that "
                "initialised the store, or create it with idnode init --master-key"
            ) from None
    value = os.environ.get(MASTER_KEY_ENV)
    if value:
        return MasterKey.from_env(value)
    if "://" in os.fspath(store):
        raise MasterKeyError(
            f"a store given as a URL needs its master key: --master-key FILE or ${MASTER_KEY_ENV} "
            "(the same key on every node sharing the database)"
        )
    return MasterKey.load_or_create(master_key_path_for(store))
