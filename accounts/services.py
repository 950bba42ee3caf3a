from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.gateway import get_gateway
from accounts.models import PRICE_DIGITS, Account, Contract, Position, PositionType
from accounts.signals import position_changed
from common.transactions import atomic_statement
from projectx import enums
from projectx.errors import BrokerRejected
from projectx.models import Account as WireAccount
from projectx.models import Position as WirePosition

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


# --- Positions and accounts, as the broker reports them ---------------------------------------

_POSITION_TYPES = {
    enums.PositionType.LONG: PositionType.LONG,
    enums.PositionType.SHORT: PositionType.SHORT,
    enums.PositionType.UNDEFINED: PositionType.FLAT,
}


def position_apply(*, account: Account, wire: WirePosition, closed: bool = False) -> str:
    """Mirror the broker's net position in one contract, ordered by the broker's timestamp.

    One upsert: insert the row, or update it only when this event is not older than the one
    applied (`WHERE last_server_ts <= EXCLUDED.last_server_ts`); the version rises with every
    write. A stale event changes nothing.
    """
    with atomic_statement():
        return _position_apply(account, wire, closed)


def _position_apply(account: Account, wire: WirePosition, closed: bool) -> str:
    flat = closed or wire.is_flat
    now = timezone.now()
    position = Position(
        account=account,
        contract_id=wire.contract_id,
        type=PositionType.FLAT if flat else _POSITION_TYPES[wire.type],
        size=0 if flat else wire.size,
        average_price=None if flat else wire.average_price,
        broker_position_id=wire.id,
        last_server_ts=wire.creation_timestamp,
        created_at=now,
        updated_at=now,
    )
    table = connection.ops.quote_name(Position._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (account_id, contract_id, type, size, average_price,
                                 broker_position_id, last_server_ts, version, created_at,
                                 updated_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, 1, %s, %s)
            ON CONFLICT (account_id, contract_id) DO UPDATE SET
                type = EXCLUDED.type, size = EXCLUDED.size,
                average_price = EXCLUDED.average_price,
                broker_position_id = EXCLUDED.broker_position_id,
                last_server_ts = EXCLUDED.last_server_ts,
                version = {table}.version + 1, updated_at = EXCLUDED.updated_at
            WHERE {table}.last_server_ts IS NULL
               OR {table}.last_server_ts <= EXCLUDED.last_server_ts
            RETURNING id, version
            """,
            [
                account.pk,
                position.contract_id,
                position.type,
                position.size,
                None
                if position.average_price is None
                else connection.ops.adapt_decimalfield_value(
                    position.average_price, **PRICE_DIGITS
                ),
                wire.id,
                connection.ops.adapt_datetimefield_value(wire.creation_timestamp),
                connection.ops.adapt_datetimefield_value(now),
                connection.ops.adapt_datetimefield_value(now),
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return "stale"
    position.pk, position.version = row
    # Told from the row as written (no query after commit: the listener applies thousands).
    transaction.on_commit(lambda: position_changed.send(sender=Position, position=position))
    return "applied"


def positions_reconcile(
    *, account: Account, open_positions: list[WirePosition], as_of: datetime
) -> None:
    """After a catch-up: positions the broker no longer lists are flat."""
    still_open = {p.contract_id for p in open_positions}
    for wire in open_positions:
        position_apply(account=account, wire=wire)
    Position.objects.filter(account=account).exclude(contract_id__in=still_open).exclude(
        type=PositionType.FLAT
    ).filter(Q(last_server_ts__isnull=True) | Q(last_server_ts__lte=as_of)).update(
        type=PositionType.FLAT,
        size=0,
        average_price=None,
        version=F("version") + 1,
        last_server_ts=as_of,
    )


def account_apply(*, wire: WireAccount) -> None:
    with atomic_statement():
        Account.objects.filter(broker_account_id=wire.id).update(
            name=wire.name,
            balance=wire.balance,
            can_trade=wire.can_trade,
            version=F("version") + 1,
        )
