"""Token authentication and the bot's account, without a query on every request.

A bot sends the same token, for the same account, many times a second; the token's user and
the accounts granted to it change rarely. Each process keeps what it read for
`REUSE_SECONDS`: a revoked token, a deactivated user or a withdrawn grant takes effect within
that time in every process (at once in the process that made the change, which forgets
everything it kept). Nothing here decides an order's fate: the account is locked and re-read
in the placement's own transaction.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from django.contrib.auth.models import User
from django.db.models.signals import m2m_changed, post_delete, post_save
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from accounts.models import Account
from accounts.selectors import accounts_visible_to

REUSE_SECONDS = 5.0

_lock = threading.Lock()
_tokens: dict[str, tuple[float, User, Token]] = {}
_accounts: dict[tuple[int, int], tuple[float, Account | None]] = {}


def forget_everything(**_: Any) -> None:
    """A token, user or grant changed in this process: read them again from the database."""
    with _lock:
        _tokens.clear()
        _accounts.clear()


post_delete.connect(forget_everything, sender=Token, dispatch_uid="api.auth.token_deleted")
post_save.connect(forget_everything, sender=Token, dispatch_uid="api.auth.token_saved")
post_save.connect(forget_everything, sender=User, dispatch_uid="api.auth.user_saved")
post_delete.connect(forget_everything, sender=User, dispatch_uid="api.auth.user_deleted")
post_save.connect(forget_everything, sender=Account, dispatch_uid="api.auth.account_saved")
m2m_changed.connect(
    forget_everything, sender=Account.members.through, dispatch_uid="api.auth.members_changed"
)


class ReusedTokenAuthentication(TokenAuthentication):
    """DRF's `Authorization: Token <key>`, with the token's user kept for `REUSE_SECONDS`."""

    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        now = time.monotonic()
        with _lock:
            kept = _tokens.get(key)
        if kept is not None and now - kept[0] < REUSE_SECONDS:
            return kept[1], kept[2]
        user, token = super().authenticate_credentials(key)
        with _lock:
            _tokens[key] = (now, user, token)
        return user, token


def account_for_placement(user: Any, broker_account_id: int) -> Account | None:
    """The account with this broker id if the user may trade it (kept for `REUSE_SECONDS`)."""
    now = time.monotonic()
    cache_key = (user.pk, broker_account_id)
    with _lock:
        kept = _accounts.get(cache_key)
    if kept is not None and now - kept[0] < REUSE_SECONDS:
        return kept[1]
    account = accounts_visible_to(user).filter(broker_account_id=broker_account_id).first()
    with _lock:
        _accounts[cache_key] = (now, account)
    return account
