"""app/security.py: the client address behind proxies, session keys."""

from __future__ import annotations

from app.security import client_address, hash_session_key, new_session_key

PROXIES = ("127.0.0.1/32", "10.0.0.0/8")


def test_forwarded_for_is_ignored_without_trusted_proxies():
    assert client_address("127.0.0.1", "203.0.113.5", ()) == "127.0.0.1"
    assert client_address(None, None, ()) == "unknown"


def test_forwarded_for_is_ignored_from_an_untrusted_peer():
    assert client_address("198.51.100.9", "203.0.113.5", PROXIES) == "198.51.100.9"


def test_the_client_is_the_first_untrusted_hop_from_the_right():
    assert client_address("127.0.0.1", "203.0.113.5", PROXIES) == "203.0.113.5"
    # whatever the client wrote itself (left of the real hop) is not believed
    assert client_address("127.0.0.1", "1.1.1.1, 203.0.113.5, 10.1.1.1", PROXIES) == "203.0.113.5"
    assert client_address("10.0.0.2", "2001:db8::1", PROXIES) == "2001:db8::1"


def test_garbage_or_only_proxies_in_the_header():
    assert client_address("127.0.0.1", "not-an-ip", PROXIES) == "127.0.0.1"
    assert client_address("127.0.0.1", "  ,  ", PROXIES) == "127.0.0.1"
    assert client_address("127.0.0.1", "10.0.0.7, 10.0.0.8", PROXIES) == "10.0.0.7"


def test_session_keys_are_random_and_stored_hashed():
    key, digest = new_session_key()
    other, _ = new_session_key()
    assert key != other and len(key) >= 43
    assert digest == hash_session_key(key) and key not in digest and len(digest) == 64
