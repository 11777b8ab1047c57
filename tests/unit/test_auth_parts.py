"""The parts of authentication: credentials and allow-lists, login throttling, tokens,
password and key hashing."""

from __future__ import annotations

import hashlib

import pytest

from middlewared.auth import passwords, ratelimit, tokens
from middlewared.auth.credentials import INTERNAL, CredentialKind, Credentials
from middlewared.auth.passwords import (
    generate_password,
    hash_key,
    HashPool,
    hash_password,
    new_secret,
    same_hash,
    verify_password,
)
from middlewared.auth.ratelimit import LoginThrottler
from middlewared.auth.tokens import TokenStore
from middlewared.config import LoginThrottle


class FakeClock:
    """Stands for the ``time`` module inside the module under test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(ratelimit, "time", fake)
    monkeypatch.setattr(tokens, "time", fake)
    return fake


def user(*allowlist: str, key: tuple[str, ...] | None = None, admin: bool = False) -> Credentials:
    kind = CredentialKind.LOGIN_PASSWORD if key is None else CredentialKind.API_KEY
    return Credentials("alice", admin, kind, tuple(allowlist), key)


# -- credentials ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "method", "allowed"),
    [
        ((), "core.ping", False),
        (("*",), "anything.at_all", True),
        (("user.query",), "user.query", True),
        (("user.query",), "user.query_all", False),
        (("user.query",), "User.query", False),  # case matters
        (("archive.*",), "archive.create", True),
        (("archive.*",), "archive.sub.call", True),
        (("archive.*",), "archives.create", False),
        (("archive.*",), "archive", False),
        (("*.query",), "user.query", True),
        (("*.query",), "user.update", False),
        (("pool.?et",), "pool.get", True),
        (("pool.[gs]et",), "pool.set", True),
        (("pool.[gs]et",), "pool.bet", False),
        (("a.x", "b.*"), "b.y", True),
        (("a.x", "b.*"), "c.y", False),
    ],
)
def test_allowlist_patterns(patterns: tuple[str, ...], method: str, allowed: bool) -> None:
    assert user(*patterns).allows(method) is allowed


def test_admin_may_call_anything() -> None:
    admin = user(admin=True)
    assert admin.allows("user.create")
    assert INTERNAL.admin and INTERNAL.allows("anything")


def test_api_key_allowlist_intersects_the_users() -> None:
    creds = user("archive.*", "user.query", key=("archive.*", "pool.*"))
    assert creds.allows("archive.create")  # in both
    assert not creds.allows("user.query")  # the user's only
    assert not creds.allows("pool.scrub")  # the key's only


def test_api_key_allowlist_restricts_even_an_admin() -> None:
    creds = user(admin=True, key=("core.*",))
    assert creds.allows("core.get_jobs")
    assert not creds.allows("user.create")


def test_an_api_key_with_an_empty_allowlist_allows_nothing() -> None:
    assert not user("*", key=()).allows("core.ping")
    assert not user(admin=True, key=()).allows("core.ping")


@pytest.mark.parametrize(
    ("admin", "owner", "visible"),
    [
        (True, "bob", True),
        (True, None, True),
        (False, "alice", True),
        (False, None, True),
        (False, "bob", False),
        (False, "", False),
    ],
)
def test_may_read(admin: bool, owner: str | None, visible: bool) -> None:
    assert user(admin=admin).may_read(owner) is visible


def test_record_never_holds_a_secret() -> None:
    creds = Credentials("bob", False, CredentialKind.API_KEY, ("*",), ("*",), api_key_id=3)
    assert creds.record() == {"type": "API_KEY", "data": {"username": "bob", "api_key": {"id": 3}}}
    assert user().record() == {"type": "LOGIN_PASSWORD", "data": {"username": "alice"}}
    assert INTERNAL.record() == {"type": "INTERNAL", "data": {"username": "root"}}


# -- login throttling -------------------------------------------------------------------


def throttler(max_failures: int = 3, window: float = 60.0) -> LoginThrottler:
    return LoginThrottler(LoginThrottle(max_failures=max_failures, window_seconds=window))


def test_blocked_after_max_failures_in_the_window(clock: FakeClock) -> None:
    t = throttler()
    for _ in range(2):
        t.failed("10.0.0.1")
        clock.now += 1
    assert not t.blocked("10.0.0.1")
    t.failed("10.0.0.1")
    assert t.blocked("10.0.0.1")
    assert not t.blocked("10.0.0.2")


def test_unblocked_when_the_oldest_failure_leaves_the_window(clock: FakeClock) -> None:
    t = throttler(max_failures=3, window=60)
    start = clock.now
    for i in range(3):
        clock.now = start + 10 * i
        t.failed("a")
    assert t.blocked("a")
    assert t.retry_after("a") == pytest.approx(40.0)  # the first failure leaves at start+60
    clock.now = start + 59.9
    assert t.blocked("a")
    clock.now = start + 60
    assert not t.blocked("a")
    clock.now = start + 80
    assert t.retry_after("a") == 0.0


def test_blocked_and_retry_after_do_not_count_as_failures(clock: FakeClock) -> None:
    t = throttler(max_failures=2)
    t.failed("a")
    for _ in range(10):
        assert not t.blocked("a")
        t.retry_after("a")
    t.failed("a")
    assert t.blocked("a")


def test_nothing_to_wait_for_without_failures(clock: FakeClock) -> None:
    t = throttler()
    assert not t.blocked("a")
    assert t.retry_after("a") == 0.0


def test_an_address_remembers_at_most_max_failures(clock: FakeClock) -> None:
    t = throttler(max_failures=3)
    for _ in range(10_000):
        t.failed("a")
        clock.now += 0.001
    assert len(t._failures["a"]) == 3
    assert t.blocked("a")


def test_a_forgotten_address_is_dropped(clock: FakeClock) -> None:
    t = throttler(window=60)
    t.failed("a")
    clock.now += 61
    assert not t.blocked("a")
    assert "a" not in t._failures


def test_memory_is_bounded_across_addresses(clock: FakeClock) -> None:
    t = throttler(window=60)
    for i in range(10_000):
        t.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}")
    clock.now += 61
    t.failed("192.0.2.1")
    assert len(t._failures) <= 100


# -- tokens -----------------------------------------------------------------------------


def test_a_single_use_token_serves_once(clock: FakeClock) -> None:
    store = TokenStore()
    secret = store.issue(user(), ttl=600, single_use=True)
    token = store.use(secret)
    assert token is not None and token.credentials == user()
    assert store.use(secret) is None


def test_a_reusable_token_serves_until_it_expires(clock: FakeClock) -> None:
    store = TokenStore()
    secret = store.issue(user(), ttl=600, single_use=False)
    for _ in range(5):
        assert store.use(secret) is not None
    clock.now += 599.9
    assert store.use(secret) is not None
    clock.now += 0.1
    assert store.use(secret) is None
    assert store.peek(secret) is None


def test_an_expired_single_use_token_is_refused(clock: FakeClock) -> None:
    store = TokenStore()
    secret = store.issue(user(), ttl=10, single_use=True)
    clock.now += 11
    assert store.peek(secret) is None
    assert store.use(secret) is None


def test_unknown_tokens_are_refused(clock: FakeClock) -> None:
    store = TokenStore()
    store.issue(user(), ttl=600, single_use=False)
    assert store.use("not-a-token") is None
    assert store.use("") is None
    assert store.peek("not-a-token") is None


def test_a_token_is_bound_to_its_purpose_and_job(clock: FakeClock) -> None:
    store = TokenStore()
    secret = store.issue(user(), ttl=60, single_use=True, job_id=5, purpose="download")
    assert store.use(secret) is None  # not a login token
    assert store.use(secret, "download") is None  # no job given
    assert store.use(secret, "download", 6) is None  # another job
    assert store.use(secret, "upload", 5) is None
    # None of the refusals consumed it.
    token = store.use(secret, "download", 5)
    assert token is not None and (token.job_id, token.purpose) == (5, "download")
    assert store.use(secret, "download", 5) is None


def test_a_login_token_is_not_a_download_token(clock: FakeClock) -> None:
    store = TokenStore()
    secret = store.issue(user(), ttl=60, single_use=False)
    assert store.use(secret, "download", 1) is None
    assert store.use(secret) is not None


def test_peek_does_not_consume(clock: FakeClock) -> None:
    store = TokenStore()
    secret = store.issue(user(), ttl=60, single_use=True)
    assert store.peek(secret) is not None
    assert store.peek(secret) is not None
    assert store.use(secret) is not None


def test_tokens_are_distinct_and_kept_only_by_hash(clock: FakeClock) -> None:
    store = TokenStore()
    secrets = {store.issue(user(), ttl=60, single_use=False) for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(s) >= 40 for s in secrets)
    assert not secrets & set(store._tokens)


def test_expired_tokens_are_purged_when_new_ones_are_issued(clock: FakeClock) -> None:
    store = TokenStore()
    for _ in range(1000):
        store.issue(user(), ttl=10, single_use=False)
    clock.now += 11
    store.issue(user(), ttl=10, single_use=False)
    assert len(store._tokens) == 1


# -- passwords and keys -----------------------------------------------------------------


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_password("correct horse")


def test_hash_format(stored: str) -> None:
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert salt and digest
    assert "correct horse" not in stored


def test_verify_the_right_password(stored: str) -> None:
    assert verify_password("correct horse", stored)


@pytest.mark.parametrize("wrong", ["", "correct horse ", "Correct horse", "correct hors"])
def test_verify_a_wrong_password(stored: str, wrong: str) -> None:
    assert not verify_password(wrong, stored)


def test_the_same_password_hashes_differently() -> None:
    assert hash_password("pw") != hash_password("pw")


@pytest.mark.parametrize("password", ["", "pw", passwords._DUMMY])
def test_an_unknown_user_never_verifies(password: str) -> None:
    # None is what the directory passes for an unknown or locked user: the dummy hash is
    # checked for flat timing, and the answer is always no.
    assert verify_password(password, None) is False


@pytest.mark.parametrize(
    "malformed",
    [
        "",
        "garbage",
        "md5$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
        "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$x$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
        "scrypt$1000$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,  # n not a power of 2
        "scrypt$16384$8$0$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
        "scrypt$16384$8$1$A$" + "A" * 44,  # bad salt base64
        "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$$extra",
    ],
)
def test_a_malformed_hash_never_verifies(malformed: str) -> None:
    assert verify_password("pw", malformed) is False


@pytest.mark.parametrize("digest", ["A", "AAAAA", "A" * 43])
def test_a_malformed_digest_never_verifies(digest: str) -> None:
    assert verify_password("pw", "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + digest) is False


async def test_async_hash_and_verify() -> None:
    pool = HashPool()
    hashed = await pool.hash("s3cret!")
    assert await pool.verify("s3cret!", hashed)
    assert not await pool.verify("s3cret?", hashed)
    assert not await pool.verify("s3cret!", None)
    pool.close()


def test_hash_key_is_sha256_hex() -> None:
    assert hash_key("abc") == hashlib.sha256(b"abc").hexdigest()
    assert same_hash(hash_key("abc"), hash_key("abc"))
    assert not same_hash(hash_key("abc"), hash_key("abd"))


def test_secrets_are_random_and_url_safe() -> None:
    values = {new_secret() for _ in range(100)} | {generate_password() for _ in range(100)}
    assert len(values) == 200
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert all(set(v) <= allowed for v in values)
    assert len(generate_password()) >= 20
