from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from accounts.gateway import get_gateway
from accounts.models import (
    MONEY_DIGITS,
    PRICE_DIGITS,
    Account,
    AccountAudit,
    Contract,
    Position,
    PositionType,
    RealizedPnl,
    TradingState,
    TradingStateCause,
)
from accounts.selectors import (
    account_limits,
    loss_limit_reached,
    loss_limit_state_expired,
    realized_pnl_today,
    trading_day,
    trading_days,
)
from accounts.signals import position_changed
from common import metrics
from common.pipeline import sent_cursor
from common.statements import execute_prepared
from common.transactions import atomic_statement
from projectx import enums
from projectx.errors import BrokerRejected
from projectx.models import Account as WireAccount
from projectx.models import Position as WirePosition

logger = logging.getLogger(__name__)

CONTRACT_LOOKUP_BUDGET_SECONDS = 5.0
# How long a process answers `contract_resolve(reuse=True)` from what it last read. Contracts
# change rarely (a roll, a tick size corrected by the broker) and placement validation asked
# for one on every order; a change made in this process is seen at once (see
# contracts_forget), in the others within this time.
CONTRACT_REUSE_SECONDS = 30.0

_kept_contracts_lock = threading.Lock()
_kept_contracts: dict[str, tuple[float, Contract]] = {}


def contracts_forget(**_: Any) -> None:
    """A contract changed in this process: read contracts from the database again."""
    with _kept_contracts_lock:
        _kept_contracts.clear()


post_save.connect(contracts_forget, sender=Contract, dispatch_uid="accounts.contracts.saved")
post_delete.connect(contracts_forget, sender=Contract, dispatch_uid="accounts.contracts.deleted")


def contract_resolve(*, contract_id: str, reuse: bool = False) -> Contract | None:
    """The contract, from our table or else from the broker (then stored); None if unknown.

    With `reuse`, a contract this process read less than `CONTRACT_REUSE_SECONDS` ago is
    answered without a query (for reading its tick size: the copy is shared, never change it).
    Only known contracts are kept: an unknown one is asked again every time.

    A broker that cannot be reached raises its gateway error: "unknown contract" is only said
    when the broker said so.
    """
    now = time.monotonic()
    if reuse:
        with _kept_contracts_lock:
            kept = _kept_contracts.get(contract_id)
        if kept is not None and now - kept[0] < CONTRACT_REUSE_SECONDS:
            return kept[1]
    contract = _contract_resolve(contract_id)
    if contract is not None:
        with _kept_contracts_lock:
            _kept_contracts[contract_id] = (now, contract)
    return contract


def _contract_resolve(contract_id: str) -> Contract | None:
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
        return position_apply_sent(account=account, wire=wire, closed=closed)()


def position_apply_sent(
    *, account: Account, wire: WirePosition, closed: bool = False
) -> Callable[[], str]:
    """`position_apply` for statements sent together (`common.pipeline`): the upsert is
    executed now, and the function returned reads its answer after the block and returns the
    outcome. Inside the caller's transaction."""
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
    cursor = sent_cursor(
        _POSITION_APPLY_SQL,
        [
            account.pk,
            position.contract_id,
            position.type,
            position.size,
            None
            if position.average_price is None
            else connection.ops.adapt_decimalfield_value(position.average_price, **PRICE_DIGITS),
            wire.id,
            connection.ops.adapt_datetimefield_value(wire.creation_timestamp),
            connection.ops.adapt_datetimefield_value(now),
            connection.ops.adapt_datetimefield_value(now),
        ],
    )

    def outcome() -> str:
        with cursor:
            row = cursor.fetchone()
        if row is None:
            return "stale"
        position.pk, position.version = row
        # Told from the row as written (no query after commit: the listener applies thousands).
        transaction.on_commit(lambda: position_changed.send(sender=Position, position=position))
        return "applied"

    return outcome


_POSITION_TABLE = Position._meta.db_table
_POSITION_APPLY_SQL = f"""
    INSERT INTO {_POSITION_TABLE} (account_id, contract_id, type, size, average_price,
                                   broker_position_id, last_server_ts, version, created_at,
                                   updated_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, 1, %s, %s)
    ON CONFLICT (account_id, contract_id) DO UPDATE SET
        type = EXCLUDED.type, size = EXCLUDED.size,
        average_price = EXCLUDED.average_price,
        broker_position_id = EXCLUDED.broker_position_id,
        last_server_ts = EXCLUDED.last_server_ts,
        version = {_POSITION_TABLE}.version + 1, updated_at = EXCLUDED.updated_at
    WHERE {_POSITION_TABLE}.last_server_ts IS NULL
       OR {_POSITION_TABLE}.last_server_ts <= EXCLUDED.last_server_ts
    RETURNING id, version
    """


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
    """The broker's figures for the account (absolute: the newest says it all)."""
    # One statement written once: the ORM compiled this UPDATE afresh for every batch of
    # fills (every fill comes with an account event), a tenth of a one-fill batch's CPU.
    with atomic_statement(), connection.cursor() as cursor:
        execute_prepared(
            cursor,
            _ACCOUNT_APPLY_SQL,
            [
                wire.name,
                connection.ops.adapt_decimalfield_value(wire.balance, **MONEY_DIGITS),
                wire.can_trade,
                wire.id,
            ],
        )


_ACCOUNT_APPLY_SQL = (
    f"UPDATE {Account._meta.db_table} SET name = %s, balance = %s, can_trade = %s, "
    "version = version + 1 WHERE broker_account_id = %s"
)


# --- Trading states and the realized P&L of the day (the risk checks read them) -------------


def account_trading_state_set(
    *,
    account: Account,
    to_state: str,
    actor: str,
    cause: str = TradingStateCause.MANUAL,
    reason: str = "",
    loss_limit_day: date | None = None,
) -> Account:
    """Move the account to `to_state`, audited with the actor; the account as it is now.

    Under the account's row lock (the first of the hierarchy; the caller's transaction when it
    holds one), so a state change and an order's acceptance never interleave. A move to the
    state the account is already in changes nothing and writes no audit row.
    """
    TradingState(to_state)  # a typo is a programming error
    with transaction.atomic():
        locked = Account.objects.select_for_update().get(pk=account.pk)
        if locked.trading_state == to_state and (
            to_state == TradingState.ACTIVE or locked.trading_state_cause == cause
        ):
            return locked
        now = timezone.now()
        changes: dict[str, Any] = {
            "trading_state": to_state,
            "trading_state_cause": "" if to_state == TradingState.ACTIVE else cause,
            "trading_state_reason": reason[:2000],
            "trading_state_changed_at": now,
            "trading_state_changed_by": actor,
        }
        if loss_limit_day is not None:
            changes["loss_limit_day"] = loss_limit_day
        Account.objects.filter(pk=locked.pk).update(version=F("version") + 1, **changes)
        AccountAudit.objects.create(
            account=locked,
            action=AccountAudit.Action.TRADING_STATE,
            from_state=locked.trading_state,
            to_state=to_state,
            actor=actor,
            reason=reason[:2000] or TradingStateCause(cause).label,
        )
        logger.warning(
            "account %s trading state %s -> %s by %s (%s)",
            locked.broker_account_id,
            locked.trading_state,
            to_state,
            actor or "(system)",
            reason or cause,
        )
        locked.refresh_from_db()
        return locked


def account_halt(*, account: Account, actor: str, reason: str = "") -> Account:
    return account_trading_state_set(
        account=account,
        to_state=TradingState.HALTED,
        actor=actor,
        cause=TradingStateCause.MANUAL,
        reason=reason or "halted by hand",
    )


def account_resume(*, account: Account, actor: str, reason: str = "") -> Account:
    """Back to active. The daily loss limit does not fire again on the same trading day: the
    person who resumed it decided."""
    return account_trading_state_set(
        account=account,
        to_state=TradingState.ACTIVE,
        actor=actor,
        reason=reason or "resumed by hand",
    )


RISK_ACTOR = "risk"


def account_trading_state_current(*, locked: Account, now: datetime) -> Account:
    """The account with its trading state brought up to date for an acceptance (the caller
    holds the account's row lock, in its transaction):

    1. A state the daily loss limit set on an earlier trading day ends: back to active.
    2. The limit reached today, and not yet fired today: the account switches to
       `onDailyLossLimit`, audited.
    """
    if loss_limit_state_expired(locked, now=now):
        locked = account_trading_state_set(
            account=locked,
            to_state=TradingState.ACTIVE,
            actor=RISK_ACTOR,
            reason="a new trading day began: the daily loss limit's state ends",
        )
    today = trading_day(now)
    if (
        locked.trading_state == TradingState.ACTIVE
        and locked.loss_limit_day != today
        and loss_limit_reached(locked, now=now)
    ):
        limits = account_limits(locked)
        pnl = realized_pnl_today(account=locked, now=now)
        locked = account_trading_state_set(
            account=locked,
            to_state=limits.on_daily_loss_limit,
            actor=RISK_ACTOR,
            cause=TradingStateCause.DAILY_LOSS_LIMIT,
            reason=f"daily loss limit {limits.daily_loss_limit} reached: realized P&L net of "
            f"fees today is {pnl}",
            loss_limit_day=today,
        )
        transaction.on_commit(metrics.daily_loss_limit_reached_total.inc)
    return locked


def account_loss_limit_check(*, account_id: int) -> Account | None:
    """After new trades of the account were stored: switch its state if the limit is reached,
    and return the account as it stands then. Without a loss limit on the account, and nothing
    to expire, no lock is taken and None is returned (this runs after every batch of trades the
    listener stores)."""
    if not _loss_limit_may_act(account_id):
        return None
    with transaction.atomic():
        locked = Account.objects.select_for_update().get(pk=account_id)
        return account_trading_state_current(locked=locked, now=timezone.now())


_LOSS_LIMIT_FIELDS_SQL = (
    "SELECT daily_loss_limit, trading_state, trading_state_cause, loss_limit_day "
    f"FROM {Account._meta.db_table} WHERE {Account._meta.pk.column} = %s"
)


def _loss_limit_may_act(account_id: int) -> bool:
    """Whether the account has a daily loss limit, or a state one set that may have expired.
    Read with one statement written once: building the ORM query and the model cost about a
    sixth of the CPU of a listener's batch of one fill."""
    with connection.cursor() as cursor:
        execute_prepared(cursor, _LOSS_LIMIT_FIELDS_SQL, [account_id])
        row = cursor.fetchone()
    return _loss_limit_fields_may_act(row)


def _loss_limit_fields_may_act(row: tuple[Any, ...] | None) -> bool:
    """`_loss_limit_may_act` for the account's fields as read (`_LOSS_LIMIT_FIELDS_SQL`)."""
    if row is None:
        return False
    limit, state, cause, day = row
    if limit is not None or settings.ORDER_MANAGEMENT.risk.daily_loss_limit is not None:
        return True
    if state == TradingState.ACTIVE or cause != TradingStateCause.DAILY_LOSS_LIMIT:
        # Nothing the loss limit set: asked after every batch of fills, and building the
        # account to ask `loss_limit_state_expired` was a fifteenth of a small batch's CPU.
        return False
    account = Account(trading_state=state, trading_state_cause=cause, loss_limit_day=day)
    return loss_limit_state_expired(account, now=timezone.now())


@dataclass(frozen=True)
class RealizedEntry:
    """One trade's share of the realized P&L (negative for a void of a stored trade)."""

    contract_id: str
    at: datetime  # the broker's timestamp of the trade: it decides the trading day
    profit_and_loss: Decimal
    fees: Decimal
    trades: int = 1


def realized_pnl_add(*, account_id: int, entries: Iterable[RealizedEntry]) -> None:
    """Add trades to the account's realized P&L of their trading days (one upsert).

    Called by the fills code as it stores a new trade or voids one, inside its transaction:
    the P&L is exactly the stored trades'. The rows are written in key order (two listeners'
    batches never wait on each other in a circle). The loss limit is checked after commit, in
    a transaction of its own (the fills code holds order locks, taken after the account's in
    the hierarchy); acceptance checks it again under the account's lock, so a check lost with
    a crash is made by the next order anyway. Whether there is anything to check is read by
    the same statement on PostgreSQL (the upsert in a WITH, the account's limit fields read
    after it): an account without a loss limit costs no query after commit.
    """
    realized_pnl_add_sent(account_id=account_id, entries=entries)()


def realized_pnl_add_sent(
    *, account_id: int, entries: Iterable[RealizedEntry]
) -> Callable[[], None]:
    """`realized_pnl_add` for statements sent together (`common.pipeline`): the upsert is
    executed now, the function returned reads whether the loss limit is to be checked after
    commit, after the block."""
    totals: dict[tuple[date, str], list[Any]] = {}
    entries = list(entries)
    for entry, day in zip(entries, trading_days(e.at for e in entries), strict=True):
        key = (day, entry.contract_id)
        total = totals.setdefault(key, [Decimal(0), Decimal(0), 0])
        total[0] += entry.profit_and_loss
        total[1] += entry.fees
        total[2] += entry.trades
    if not totals:
        return lambda: None
    table = connection.ops.quote_name(RealizedPnl._meta.db_table)
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    rows = sorted(totals.items())
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    params: list[Any] = []
    adapt_money = connection.ops.adapt_decimalfield_value
    for (day, contract_id), (pnl, fees, trades) in rows:
        params += [
            account_id,
            contract_id,
            connection.ops.adapt_datefield_value(day),
            adapt_money(pnl, **MONEY_DIGITS),
            adapt_money(fees, **MONEY_DIGITS),
            trades,
            now,
        ]
    upsert = f"""
        INSERT INTO {table} (account_id, contract_id, trading_day, profit_and_loss, fees,
                             trades, updated_at)
        VALUES {values}
        ON CONFLICT (account_id, trading_day, contract_id) DO UPDATE SET
            profit_and_loss = {table}.profit_and_loss + EXCLUDED.profit_and_loss,
            fees = {table}.fees + EXCLUDED.fees,
            trades = {table}.trades + EXCLUDED.trades,
            updated_at = EXCLUDED.updated_at
        """
    if connection.vendor != "postgresql":  # SQLite has no INSERT inside WITH
        with connection.cursor() as cursor:
            cursor.execute(upsert, params)
        may_act = _loss_limit_may_act(account_id)
        return lambda: _loss_limit_check_on_commit(account_id, may_act)
    # A data-modifying WITH runs to completion whether or not the query reads it.
    cursor = sent_cursor(
        f"WITH upserted AS ({upsert} RETURNING 1) {_LOSS_LIMIT_FIELDS_SQL}",
        [*params, account_id],
    )

    def check_on_commit() -> None:
        with cursor:
            may_act = _loss_limit_fields_may_act(cursor.fetchone())
        _loss_limit_check_on_commit(account_id, may_act)

    return check_on_commit


def _loss_limit_check_on_commit(account_id: int, may_act: bool) -> None:
    if may_act:
        transaction.on_commit(lambda: _loss_limit_check_after_commit(account_id))


def _loss_limit_check_after_commit(account_id: int) -> None:
    try:
        account_loss_limit_check(account_id=account_id)
    except Exception:  # the next acceptance checks again; a fill must never fail for this
        logger.exception("daily loss limit check of account %s failed", account_id)


def account_risk_limits_update(*, account: Account, changes: dict[str, Any], actor: str) -> None:
    """Record a change of an account's risk overrides (the admin saves the row itself)."""
    if not changes:
        return
    AccountAudit.objects.create(
        account=account,
        action=AccountAudit.Action.RISK_LIMITS,
        actor=actor,
        reason="; ".join(f"{name}: {value}" for name, value in sorted(changes.items())),
    )
