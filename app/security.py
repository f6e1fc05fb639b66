"""Passwords, API tokens, session keys, CSRF tokens, secret strength, client addresses and security headers."""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import math
import secrets
from collections import Counter

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so both paths cost the same time. Made on
    first use, not at import: every `rlhf` command imports this module (argon2 costs ~0.3 s)."""
    return _hasher.hash("not-a-real-password")


TOKEN_PREFIX = "rlhf_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def generate_password() -> str:
    return secrets.token_urlsafe(12)


def new_api_token() -> tuple[str, str]:
    """A fresh token and its sha256 hash (stored). The token is shown to its owner once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, hash_api_token(token)


def hash_api_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def looks_like_api_token(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and 20 <= len(token) <= 100 and token.isascii()


def new_session_key() -> tuple[str, str]:
    """A fresh browser-session key (kept in the signed cookie) and its sha256 (stored)."""
    key = secrets.token_urlsafe(32)
    return key, hash_session_key(key)


def hash_session_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# --- how much guessing a secret key would take ----------------------------------------------

SECRET_MIN_BITS = 64  # random 32-character hex keys estimate at 75-125 bits; `"password" * 4` at 22


def secret_strength_bits(key: str) -> float:
    """A conservative estimate of the bits of guessing a secret costs.

    The key is read left to right; a character is *predictable* when it continues a run that the
    reader could guess: the repetition of an earlier stretch (``'password' * 4`` is 'password'
    and then copies), or a run with a constant step (``'abcdef'``, ``'012345'``, ``'aaaa'``).
    Every other character is *new* and costs the Shannon entropy per character of the key's own
    character distribution. The estimate is (new characters) x (bits per character): 'a' * 32
    is 0 bits, 'secret' * 6 is 13, 'changeme' * 4 is 22; ``secrets.token_urlsafe(48)`` is ~340.
    """
    key = key[:256]  # plenty for any real key; bounds the (quadratic) reading
    if not key:
        return 0.0
    counts = Counter(key)
    n = len(key)
    bits_per_char = max(0.0, -sum(c / n * math.log2(c / n) for c in counts.values()))
    new = 0
    i = 0
    while i < n:
        run = _predictable_run(key, i)
        if run:
            i += run
        else:
            new += 1
            i += 1
    return new * bits_per_char


def _predictable_run(key: str, i: int) -> int:
    """How many characters from ``i`` on a reader could predict (0 if fewer than 3)."""
    best = 0
    # a copy of an earlier stretch (it may overlap itself: 'abab...' after 'ab')
    for start in range(i):
        length = 0
        while i + length < len(key) and key[start + length] == key[i + length]:
            length += 1
        best = max(best, length)
    # a constant step continuing the two characters before i ('abc' -> 'def', '000' -> '000')
    if i >= 2:
        step = ord(key[i - 1]) - ord(key[i - 2])
        length = 0
        while i + length < len(key) and ord(key[i + length]) - ord(key[i + length - 1]) == step:
            length += 1
        best = max(best, length)
    return best if best >= 3 else 0


# --- client addresses behind proxies -------------------------------------------------------


@functools.lru_cache(maxsize=16)
def parse_networks(values: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values if v.strip())


def _is_trusted(address: str, networks) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: tuple[str, ...]) -> str:
    """The address of the client a request came from.

    ``X-Forwarded-For`` is believed only when the connection comes from a trusted proxy, and
    then only as far as the chain of trusted proxies goes: reading the header right to left,
    the first address that is not a trusted proxy is the client (anything left of it could
    have been written by the client itself). Without trusted proxies the header is ignored.
    """
    peer = peer or "unknown"
    networks = parse_networks(trusted_proxies)
    if not networks or not forwarded_for or not _is_trusted(peer, networks):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _is_trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # garbage in the header: the proxy's own address is all we know
    return hops[0] if hops else peer


def csrf_token_for(secret_key: str, session_id: str) -> str:
    return hmac.new(secret_key.encode(), f"csrf:{session_id}".encode(), hashlib.sha256).hexdigest()


def csrf_token_valid(secret_key: str, session_id: str | None, token: str | None) -> bool:
    if not session_id or not token:
        return False
    return hmac.compare_digest(csrf_token_for(secret_key, session_id), token)


CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeadersMiddleware:
    """Pure ASGI middleware adding the security headers to every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                existing = {k.lower() for k, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers.extend((k, v) for k, v in SECURITY_HEADERS if k not in existing)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
