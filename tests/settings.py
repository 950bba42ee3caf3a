"""Test settings: the real PostgreSQL and Redis of this machine when they answer.

When `DATABASE_URL` is unset and PostgreSQL answers on 127.0.0.1:5432, the suite runs on it
(locking, concurrency and persistence are only meaningful there). When it does not answer, the
suite runs on SQLite and the tests marked `postgres` skip with the reason, or fail when
`CI=true`. Redis is probed the same way; its URL is offered to the tests that ask for it
(the `redis_url` fixture) rather than switched on for the whole suite, so a test that stops
Redis cannot break its neighbours.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

TEST_POSTGRES_URL = "postgres://postgres@127.0.0.1:5432/postgres"
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


POSTGRES_AVAILABLE = bool(os.environ.get("DATABASE_URL")) or _answers("127.0.0.1", 5432)
REDIS_AVAILABLE = _answers("127.0.0.1", 6379)

if not os.environ.get("DATABASE_URL") and POSTGRES_AVAILABLE:
    os.environ["DATABASE_URL"] = TEST_POSTGRES_URL
os.environ.setdefault("DJANGO_SECRET_KEY", "tests-only-secret-key-not-for-production")
# The concurrency tests run up to 50 request threads in this one process, each holding a
# connection while it waits for its account's turn (a uvicorn worker runs a handful at a time).
os.environ.setdefault("DATABASE_POOL_MAX_SIZE", "60")
# The suite chooses Redis per test (see above); a REDIS_URL from the shell must not leak in.
os.environ.pop("REDIS_URL", None)

from ordermgmt.settings import *  # noqa: E402, F403
from ordermgmt.settings import BASE_DIR, DATABASES  # noqa: E402

# Two checkouts testing at once (a clean clone beside the work tree) must not share a test
# database: name it after the checkout's path.
_checkout = hashlib.sha256(str(Path(BASE_DIR)).encode()).hexdigest()[:8]
DATABASES["default"]["TEST"] = {"NAME": f"test_ordermgmt_{_checkout}"}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ORDERMGMT_BACKGROUND_VERIFICATION = False
