"""Many rows in one INSERT or UPDATE, cheaply.

Django's `bulk_create` and a multi-row `VALUES (%s, ...), (%s, ...)` both bind one parameter per
cell: for a batch of a thousand fills the driver splits, adapts and sends tens of thousands of
placeholders, which cost more than the insert. On PostgreSQL `insert_rows` binds one array per
column instead (`INSERT ... SELECT * FROM unnest(%s::bigint[], %s::numeric[], ...)`), so the
query text and its parsing stay the same size whatever the number of rows. Elsewhere (the
embedded SQLite), and for a single row, it is a multi-row VALUES. `update_rows` is the same for
an UPDATE of many rows, each to its own values, on PostgreSQL; `update_row` is one conditional
UPDATE. Both can insert rows `Along` in the same statement (an audit row with the write it
records), only for the rows the UPDATE wrote: one round trip where there were two.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from django.db import connection, models
from psycopg.types.json import Jsonb

from common.pipeline import Sent, sent_cursor
from common.statements import execute_prepared

M = TypeVar("M", bound=models.Model)


def insert_rows(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    on_conflict: str = "",
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """INSERT `rows` (one value per name in `fields`, Python values) into `model`'s table.

    `on_conflict` is the SQL after `ON CONFLICT` (e.g. "(account_id, broker_trade_id) DO
    NOTHING"); `returning` names the columns to return for every inserted row.
    """
    if not rows:
        return []
    meta = model._meta
    columns = [_concrete(meta.get_field(name)) for name in fields]
    table = connection.ops.quote_name(meta.db_table)
    names = ", ".join(connection.ops.quote_name(field.column) for field in columns)
    tail = f" ON CONFLICT {on_conflict}" if on_conflict else ""
    if returning:
        tail += " RETURNING " + ", ".join(connection.ops.quote_name(n) for n in returning)
    if connection.vendor == "postgresql" and len(rows) > 1:
        # One row (a placement's audit row) is cheaper as plain VALUES: psycopg's array
        # dumpers cost more per call than the thirteen parameters they replace.
        return _insert_unnest(table, names, columns, rows, tail)
    return _insert_values(table, names, columns, rows, tail, bool(returning))


def _insert_unnest(
    table: str,
    names: str,
    columns: list[models.Field[Any, Any]],
    rows: Sequence[Sequence[Any]],
    tail: str,
) -> list[tuple[Any, ...]]:
    # One array per column, bound server-side by a plain psycopg cursor: psycopg adapts the
    # Python values (Decimal, aware datetimes, UUIDs, timedeltas) itself, and only JSON needs
    # wrapping. Django's cursor binds client-side, quoting every array element in Python.
    # In binary (%b): the text form escapes every element with a regular expression, which
    # took half the time of a thousand-row insert (5.1 ms against 10.3 ms in bench profiling).
    arrays, params = _column_arrays(columns, rows)
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}){tail}", params
        )
        return list(cursor.fetchall()) if cursor.description else []


@dataclass(frozen=True)
class Along:
    """Rows of another table inserted by the same statement as an UPDATE, each only if the
    row its `link` field names was written (a write that lost its condition leaves none)."""

    model: type[models.Model]
    fields: Sequence[str]
    rows: Sequence[Sequence[Any]]
    link: str


def update_row(
    model: type[models.Model],
    values: Mapping[str, Any],
    *,
    key: Any,
    guard: str,
    expected: Any,
    along: Along | None = None,
) -> tuple[bool, list[Any]]:
    """UPDATE one row of `model` (`values`: field name to Python value) where its primary key
    is `key` and its `guard` column still holds `expected`, and insert `along`'s rows if it
    was written. Returns (written, the primary keys of `along`'s rows inserted).

    On PostgreSQL one statement: `WITH written AS (UPDATE ... RETURNING 1) INSERT ... SELECT
    ... WHERE EXISTS (SELECT 1 FROM written)`, its text built once per shape (the fields
    written, the number of rows along) and its values bound server-side, adapted by psycopg
    as `update_rows` does: building the text and adapting every value through the fields was
    most of the CPU of an order write (every placement's, every batch of fills').
    """
    if connection.vendor == "postgresql":
        return update_row_sent(
            model, values, key=key, guard=guard, expected=expected, along=along
        )()
    pk = _concrete(model._meta.pk)
    fields = [_concrete(model._meta.get_field(name)) for name in values]
    update = _update_sql(model, tuple(values), guard)
    params = [
        *(
            field.get_db_prep_save(value, connection)
            for field, value in zip(fields, values.values(), strict=True)
        ),
        pk.get_db_prep_value(key, connection),
        expected,
    ]
    with connection.cursor() as cursor:
        cursor.execute(update, params)
        if cursor.rowcount != 1:
            return False, []
    if along is None or not along.rows:
        return True, []
    along_pk = _concrete(along.model._meta.pk)
    inserted = insert_rows(along.model, along.fields, along.rows, returning=(along_pk.column,))
    return True, [row[0] for row in inserted]


@dataclass(frozen=True)
class _BoundUpdate:
    sql: str
    json_values: tuple[bool, ...]  # per value bound: a JSON column's, wrapped for psycopg


_BOUND_UPDATES: dict[tuple[Any, ...], _BoundUpdate] = {}


def update_row_sent(
    model: type[models.Model],
    values: Mapping[str, Any],
    *,
    key: Any,
    guard: str,
    expected: Any,
    along: Along | None = None,
) -> Callable[[], tuple[bool, list[Any]]]:
    """`update_row` for statements sent together (`common.pipeline`): the statement is
    executed now, the function returned reads what `update_row` returns after the block."""
    if connection.vendor != "postgresql":
        done = update_row(model, values, key=key, guard=guard, expected=expected, along=along)
        return lambda: done
    names = tuple(values)
    along_rows = along.rows if along is not None else ()
    shape = (
        model,
        names,
        guard,
        None if along is None else (along.model, tuple(along.fields)),
        len(along_rows),
    )
    statement = _BOUND_UPDATES.get(shape)
    if statement is None:
        statement = _BOUND_UPDATES[shape] = _bound_update(model, names, guard, along)
    params = [*values.values(), key, expected]
    for row in along_rows:
        params.extend(row)
    params = [
        Jsonb(value) if is_json and value is not None else value
        for value, is_json in zip(params, statement.json_values, strict=True)
    ]
    cursor = _raw_cursor_executing(statement.sql, params)

    def written() -> tuple[bool, list[Any]]:
        with connection.wrap_database_errors, cursor:
            if not along_rows:
                return cursor.rowcount == 1, []
            inserted = cursor.fetchall()
        return bool(inserted), [row[0] for row in inserted]

    return written


def _bound_update(
    model: type[models.Model], names: tuple[str, ...], guard: str, along: Along | None
) -> _BoundUpdate:
    fields = [_concrete(model._meta.get_field(name)) for name in names]
    update = _update_sql(model, names, guard)
    json_values = [isinstance(f, models.JSONField) for f in fields] + [False, False]
    if along is None or not along.rows:
        return _BoundUpdate(update, tuple(json_values))
    along_sql, along_columns = _along_sql(along)
    along_pk = connection.ops.quote_name(_concrete(along.model._meta.pk).column)
    sql = (
        f"WITH written AS ({update} RETURNING 1) {along_sql} "
        f"WHERE EXISTS (SELECT 1 FROM written) RETURNING {along_pk}"
    )
    json_values += [isinstance(f, models.JSONField) for f in along_columns] * len(along.rows)
    return _BoundUpdate(sql, tuple(json_values))


def _update_sql(model: type[models.Model], names: tuple[str, ...], guard: str) -> str:
    """`UPDATE table SET a = %s, ... WHERE pk = %s AND guard = %s`. No casts: an assignment
    checks each value against its column (a string too long for a varchar(n) is an error,
    where a cast would cut it)."""
    meta = model._meta
    quote = connection.ops.quote_name
    pk = _concrete(meta.pk)
    fields = [_concrete(meta.get_field(name)) for name in names]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    return (
        f"UPDATE {quote(meta.db_table)} SET {assignments} "
        f"WHERE {quote(pk.column)} = %s AND {quote(_concrete(meta.get_field(guard)).column)} = %s"
    )


def insert_row(
    model: type[models.Model], fields: Sequence[str], row: Sequence[Any], *, along: Along
) -> None:
    """INSERT one row of `model` (one value per name in `fields`) and `along`'s rows with it
    (an order and its first audit row): on PostgreSQL one statement, `WITH inserted AS
    (INSERT ...) INSERT ...`. `along`'s foreign keys to the row are checked at commit."""
    if connection.vendor != "postgresql" or not along.rows:
        insert_rows(model, fields, [row])
        insert_rows(along.model, along.fields, along.rows)
        return
    meta = model._meta
    quote = connection.ops.quote_name
    columns = [_concrete(meta.get_field(name)) for name in fields]
    along_sql, along_params = _along_values(along)
    with connection.cursor() as cursor:
        execute_prepared(
            cursor,
            f"WITH inserted AS (INSERT INTO {quote(meta.db_table)} "
            f"({', '.join(quote(field.column) for field in columns)}) "
            f"VALUES ({', '.join(['%s'] * len(columns))}) RETURNING 1) "
            f"{along_sql} WHERE EXISTS (SELECT 1 FROM inserted)",
            [
                *(
                    field.get_db_prep_save(value, connection)
                    for field, value in zip(columns, row, strict=True)
                ),
                *along_params,
            ],
        )


def _along_values(along: Along) -> tuple[str, list[Any]]:
    """`INSERT INTO along's table (...) SELECT * FROM (VALUES ...) AS along`, each value cast
    to its column's type (a VALUES list outside an INSERT has no column types of its own),
    for the caller to finish with its WHERE; and its parameters."""
    sql, columns = _along_sql(along)
    params = [
        field.get_db_prep_save(value, connection)
        for row in along.rows
        for field, value in zip(columns, row, strict=True)
    ]
    return sql, params


def _along_sql(along: Along) -> tuple[str, list[models.Field[Any, Any]]]:
    """`_along_values`' statement, and its columns."""
    meta = along.model._meta
    quote = connection.ops.quote_name
    columns = [_concrete(meta.get_field(name)) for name in along.fields]
    row_sql = "(" + ", ".join(f"%s::{_db_type(field)}" for field in columns) + ")"
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in columns)}) "
        f"SELECT * FROM (VALUES {', '.join([row_sql] * len(along.rows))}) AS along"
    )
    return sql, columns


def update_rows(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    guard: str,
    along: Along | None = None,
) -> set[Any]:
    """UPDATE many rows of `model` to values of their own, in one statement (PostgreSQL only).

    Each row is (primary key, expected value of the `guard` column, then one value per name in
    `fields`); a row is written only where its guard column still holds the expected value
    (`WHERE pk = key AND guard = expected`), as a one-row conditional UPDATE would. Returns
    the primary keys of the rows written: a key missing from it lost its condition. `along`'s
    rows are inserted by the same statement, those linked to a row written.
    """
    return update_rows_sent(model, fields, rows, guard=guard, along=along)()


def update_rows_sent(
    model: type[models.Model],
    fields: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    guard: str,
    along: Along | None = None,
) -> Callable[[], set[Any]]:
    """`update_rows` for statements sent together (`common.pipeline`): the statement is
    executed now, the function returned reads the keys written after the block."""
    if not rows:
        return set
    if connection.vendor != "postgresql":
        raise NotImplementedError("update_rows binds arrays: PostgreSQL only")
    meta = model._meta
    quote = connection.ops.quote_name
    pk = _concrete(meta.pk)
    columns = [
        pk,
        _concrete(meta.get_field(guard)),
        *(_concrete(meta.get_field(n)) for n in fields),
    ]
    arrays, params = _column_arrays(columns, rows)
    aliases = [f"v{i}" for i in range(len(columns))]
    assignments = ", ".join(
        f"{quote(field.column)} = source.{alias}"
        for field, alias in zip(columns[2:], aliases[2:], strict=True)
    )
    table = quote(meta.db_table)
    sql = (
        f"UPDATE {table} AS target SET {assignments} "
        f"FROM unnest({arrays}) AS source({', '.join(aliases)}) "
        f"WHERE target.{quote(pk.column)} = source.v0 "
        f"AND target.{quote(columns[1].column)} = source.v1 "
        f"RETURNING target.{quote(pk.column)} AS written_key"
    )
    if along is not None and along.rows:
        along_meta = along.model._meta
        along_columns = [_concrete(along_meta.get_field(name)) for name in along.fields]
        along_arrays, along_params = _column_arrays(along_columns, along.rows)
        along_aliases = [f"a{i}" for i in range(len(along_columns))]
        link = along_aliases[list(along.fields).index(along.link)]
        sql = (
            f"WITH written AS ({sql}), along AS ("
            f"INSERT INTO {quote(along_meta.db_table)} "
            f"({', '.join(quote(field.column) for field in along_columns)}) "
            f"SELECT * FROM unnest({along_arrays}) AS source({', '.join(along_aliases)}) "
            f"WHERE {link} IN (SELECT written_key FROM written)) "
            "SELECT written_key FROM written"
        )
        params = [*params, *along_params]
    read = rows_sent(sql, params)
    return lambda: {row[0] for row in read()}


def column_arrays(
    model: type[models.Model], fields: Sequence[str], rows: Sequence[Sequence[Any]]
) -> tuple[str, list[list[Any]]]:
    """For a statement of the caller's that reads `rows` (one value per name in `fields`) from
    `unnest(...)`: the typed array placeholders, bound server-side in binary, and their
    parameters (`rows_sent` runs it)."""
    return _column_arrays([_concrete(model._meta.get_field(name)) for name in fields], rows)


def rows_sent(sql: str, params: Sequence[Any]) -> Sent:
    """Run `sql` with its parameters bound server-side (PostgreSQL: `column_arrays`' arrays),
    sent with the statements around it (`common.pipeline`); the function returned reads its
    rows after the block."""
    cursor = _raw_cursor_executing(sql, params)

    def rows() -> list[tuple[Any, ...]]:
        with connection.wrap_database_errors, cursor:
            return list(cursor.fetchall())

    return rows


def _raw_cursor_executing(sql: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
    """A psycopg cursor (values bound server-side) on Django's connection, `sql` executed on
    it. Its errors are Django's (`django.db.DataError`, `OperationalError`, ...), as on a
    Django cursor, so callers catch the same exceptions whichever cursor ran the statement."""
    connection.ensure_connection()
    cursor = psycopg.Cursor(connection.connection)
    try:
        with connection.wrap_database_errors:
            # Prepared (once per connection): these texts are few and each is run often.
            cursor.execute(sql, params, prepare=True)
    except BaseException:
        cursor.close()
        raise
    return cursor


def _column_arrays(
    columns: list[models.Field[Any, Any]], rows: Sequence[Sequence[Any]]
) -> tuple[str, list[list[Any]]]:
    """The typed array placeholders (binary) and one list of values per column; only JSON needs
    wrapping, psycopg adapts the rest itself."""
    arrays = ", ".join(f"%b::{_db_type(field)}[]" for field in columns)
    json_columns = {i for i, f in enumerate(columns) if isinstance(f, models.JSONField)}
    params = [
        [None if v is None else Jsonb(v) for v in column] if i in json_columns else list(column)
        for i, column in enumerate(zip(*rows, strict=True))
    ]
    return arrays, params


def _insert_values(
    table: str,
    names: str,
    columns: list[models.Field[Any, Any]],
    rows: Sequence[Sequence[Any]],
    tail: str,
    returning: bool,
) -> list[tuple[Any, ...]]:
    row_sql = "(" + ", ".join(["%s"] * len(columns)) + ")"
    params = [
        field.get_db_prep_save(value, connection)
        for row in rows
        for field, value in zip(columns, row, strict=True)
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({names}) VALUES {', '.join([row_sql] * len(rows))}{tail}",
            params,
        )
        return list(cursor.fetchall()) if returning else []


def column_list(model: type[models.Model]) -> str:
    """`model`'s columns in field order, for a statement whose rows `fetch_instances` reads."""
    quote = connection.ops.quote_name
    return ", ".join(quote(_concrete(field).column) for field in model._meta.concrete_fields)


def fetch_instances(model: type[M], sql: str, params: Sequence[Any]) -> list[M]:
    """Run `sql`, whose rows start with `column_list(model)` (any columns after are ignored),
    and build an instance from each row as the ORM does (`from_db`, with the fields'
    converters), without a RawQuerySet: resolving its columns to fields on every call cost
    more CPU than the statement's round trip (about 0.3 ms a row lock)."""
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)
        return instances_from_rows(model, cursor.fetchall())


def fetch_instances_sent(model: type[M], sql: str, params: Sequence[Any]) -> Sent:
    """`fetch_instances` for statements sent together (`common.pipeline`): `sql` is executed
    now; the function returned reads its rows after the block and returns the instances."""
    cursor = sent_cursor(sql, list(params))

    def instances() -> list[M]:
        with cursor:
            return instances_from_rows(model, cursor.fetchall())

    return instances


def instances_from_rows(model: type[M], rows: Sequence[Sequence[Any]]) -> list[M]:
    """Instances of `model` from rows that start with `column_list(model)` (any columns after
    are ignored), as the ORM builds them (see `fetch_instances`)."""
    fields = model._meta.concrete_fields
    width = len(fields)
    converters = _converters(model)
    names = [field.attname for field in fields]
    instances = []
    for row in rows:
        values = list(row[:width])
        for index, field, convert in converters:
            values[index] = convert(values[index], field, connection)
        instances.append(model.from_db(connection.alias, names, values))
    return instances


def _converters(model: type[models.Model]) -> list[tuple[int, Any, Any]]:
    key = (connection.vendor, model)
    known = _CONVERTERS.get(key)
    if known is None:
        known = _CONVERTERS[key] = [
            (index, column, convert)
            for index, field in enumerate(model._meta.concrete_fields)
            for column in [field.get_col(model._meta.db_table)]
            for convert in [
                *connection.ops.get_db_converters(column),
                *field.get_db_converters(connection),  # type: ignore[attr-defined]
            ]
        ]
    return known


_CONVERTERS: dict[tuple[str, type[models.Model]], list[tuple[int, Any, Any]]] = {}


def _db_type(field: models.Field[Any, Any]) -> str:
    """The column's type, worked out once: Django builds it afresh on every call, a sixth of
    the CPU of a one-row write."""
    key = (connection.vendor, field)
    known = _DB_TYPES.get(key)
    if known is None:
        known = _DB_TYPES[key] = str(field.db_type(connection))
    return known


_DB_TYPES: dict[tuple[str, models.Field[Any, Any]], str] = {}


def _concrete(field: object) -> models.Field[Any, Any]:
    if not isinstance(field, models.Field) or field.column is None:
        raise TypeError(f"{field} is not a column")
    return field
