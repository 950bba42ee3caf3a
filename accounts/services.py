from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from django.contrib.auth.models import User
from django.db import connection

from accounts.gateway import get_gateway
from accounts.models import Account, Contract
from projectx.errors import BrokerRejected

logger = logging.getLogger(__name__)

CONTRACT_LOOKUP_BUDGET_SECONDS = 5.0


def contract_resolve(*, contract_id: str) -> Contract | None:
    """The contract, from our table or else from the broker (then stored); None if unknown.

    A broker that cannot be reached raises its gateway error: "unknown contract" is only said
    when the broker said so.
    """
    contract = Contract.objects.filter(contract_id=contract_id).first()
    if contract is not None:
        return contract
    # One look-up per contract at a time in this process: a burst of first orders on a new
    # contract would otherwise send the broker one identical request each (and queue them
    # behind the rate limit until some ran out of budget).
    lock = _lookup_lock(contract_id)
    if not lock.acquire(blocking=False):
        if not connection.in_atomic_block:
            connection.close()  # wait without holding a pooled connection
        lock.acquire()
    try:
        contract = Contract.objects.filter(contract_id=contract_id).first()
        if contract is not None:
            return contract
        try:
            wire = get_gateway().get_contract(contract_id, budget=CONTRACT_LOOKUP_BUDGET_SECONDS)
        except BrokerRejected:
            return None
        return _store_contract(wire)
    finally:
        lock.release()


_lookup_locks: dict[str, threading.Lock] = {}
_lookup_locks_guard = threading.Lock()


def _lookup_lock(contract_id: str) -> threading.Lock:
    with _lookup_locks_guard:
        return _lookup_locks.setdefault(contract_id, threading.Lock())


def _store_contract(wire: Any) -> Contract:
    contract, _ = Contract.objects.update_or_create(
        contract_id=wire.id,
        defaults={
            "name": wire.name,
            "description": wire.description or "",
            "tick_size": wire.tick_size,
            "tick_value": wire.tick_value,
            "symbol_id": wire.symbol_id or "",
            "active": wire.active_contract if wire.active_contract is not None else True,
        },
    )
    return contract


def account_sync_from_broker() -> list[Account]:
    """Mirror the broker's active accounts into our table (new ones start active)."""
    synced = []
    for wire in get_gateway().search_accounts(only_active=True):
        account, _ = Account.objects.update_or_create(
            broker_account_id=wire.id,
            defaults={
                "name": wire.name,
                "balance": wire.balance,
                "can_trade": wire.can_trade,
                "simulated": bool(wire.simulated),
            },
        )
        synced.append(account)
    return synced


def account_grant(*, user: User, broker_account_ids: Iterable[int]) -> list[Account]:
    """Let `user` see and act on these accounts; raise Account.DoesNotExist for an unknown id."""
    accounts = [Account.objects.get(broker_account_id=bid) for bid in broker_account_ids]
    for account in accounts:
        account.members.add(user)
    return accounts
