"""Sign-in limits that slow a guesser down without letting a stranger lock the owner out.

Three counters over the failures of the last ``login_window_s`` seconds (SECURITY.md, "Sign-in
limits", has the reasoning):

- per (username, address): ``login_free_attempts`` free failures, then each further try waits
  1, 2, 4 ... seconds after the previous failure (at most ``login_backoff_max_s``). Applies to
  everyone, the owner included: it only ever slows the address that made the mistakes.
- per username, from any address: after ``login_max_failures`` failures, only *trusted* clients
  may try: a browser that holds this user's device cookie (set at every successful sign-in), or
  an address this user signed in from within ``login_trust_days``. So a guesser spread over many
  addresses is stopped, while the owner, from their own browser or address, with the right
  password, still gets in.
- per address, for any username: after ``login_max_failures_per_ip`` failures, again only
  trusted clients may try: the users behind a shared (NAT) address who signed in before keep
  getting in with the right password.
"""

from __future__ import annotations

import math
from datetime import timedelta

import itsdangerous
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import utcnow
from app.errors import TooManyRequests
from app.users.models import LoginFailure

DEVICE_COOKIE = "rlhf_device"
DEVICE_SALT = "rlhf-device"
DEVICE_MAX_USERS = 8  # a shared lab computer remembers this many users


def _device_serializer(secret_key: str) -> itsdangerous.URLSafeTimedSerializer:
    return itsdangerous.URLSafeTimedSerializer(secret_key, salt=DEVICE_SALT)


def device_user_ids(secret_key: str, cookie: str | None, settings: Settings) -> list[int]:
    """The users this browser signed in as (from its signed device cookie); [] if none or forged."""
    if not cookie:
        return []
    try:
        ids = _device_serializer(secret_key).loads(cookie, max_age=settings.login_trust_days * 86400)
    except (itsdangerous.BadData, ValueError):
        return []
    return [i for i in ids if isinstance(i, int)] if isinstance(ids, list) else []


def device_cookie_for(secret_key: str, known: list[int], user_id: int) -> str:
    """The device cookie after ``user_id`` signed in: that user first, then the others it knew."""
    ids = [user_id] + [i for i in known if i != user_id]
    return _device_serializer(secret_key).dumps(ids[:DEVICE_MAX_USERS])


def _count(db: Session, since, *conditions) -> tuple[int, object]:
    count, last = db.execute(
        select(func.count(), func.max(LoginFailure.at)).where(LoginFailure.at >= since, *conditions)
    ).one()
    return count, last


def backoff_s(failures: int, settings: Settings) -> int:
    """How long the next try waits after ``failures`` failures of one (username, address)."""
    if failures < settings.login_free_attempts:
        return 0
    return min(2 ** (failures - settings.login_free_attempts), settings.login_backoff_max_s)


def check(db: Session, settings: Settings, username: str, client_ip: str, *, trusted: bool) -> None:
    """TooManyRequests (with Retry-After) when this try must wait; the password is not checked then."""
    now = utcnow()
    since = now - timedelta(seconds=settings.login_window_s)
    pair, last = _count(db, since, LoginFailure.username == username, LoginFailure.client_ip == client_ip)
    wait = backoff_s(pair, settings)
    if wait and last is not None:
        left = (last + timedelta(seconds=wait) - now).total_seconds()
        if left > 0:
            seconds = max(1, math.ceil(left))
            raise TooManyRequests(
                f"Too many failed sign-in attempts for this username from your address. "
                f"Try again in {seconds} second{'s' if seconds != 1 else ''}.",
                retry_after_s=seconds,
            )
    if trusted:
        return
    minutes = max(1, settings.login_window_s // 60)
    by_user, _ = _count(db, since, LoginFailure.username == username)
    if by_user >= settings.login_max_failures:
        raise TooManyRequests(
            f"This account has had too many failed sign-in attempts. Sign in from a browser or network "
            f"you have signed in from before, or wait up to {minutes} minutes and try again.",
            retry_after_s=settings.login_window_s,
        )
    by_ip, _ = _count(db, since, LoginFailure.client_ip == client_ip)
    if by_ip >= settings.login_max_failures_per_ip:
        raise TooManyRequests(
            f"Too many failed sign-in attempts from your network. Sign in from a browser you have signed "
            f"in from before, or wait up to {minutes} minutes and try again.",
            retry_after_s=settings.login_window_s,
        )


def record_failure(db: Session, username: str, client_ip: str, settings: Settings | None = None) -> None:
    if settings is not None:  # failures older than the window count for nothing: forget them
        db.execute(delete(LoginFailure).where(LoginFailure.at < utcnow() - timedelta(seconds=settings.login_window_s)))
    db.add(LoginFailure(username=username, client_ip=client_ip[:64]))
    db.flush()


def forget_pair(db: Session, username: str, client_ip: str) -> None:
    """After a successful sign-in: this address's own mistakes are forgiven (not others' guesses)."""
    db.execute(delete(LoginFailure).where(LoginFailure.username == username, LoginFailure.client_ip == client_ip))
