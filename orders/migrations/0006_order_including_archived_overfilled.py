"""The view over hot and archived orders carries `overfilled`, so the API can show and filter
it with `?include_archived=1` as it does for hot orders."""

from django.db import migrations, models

# As in 0005_archive, plus overfilled (both tables have the column).
VIEW_COLUMNS = """
    id, account_id, contract_id, side, type, size, limit_price, stop_price, trail_price,
    idempotency_key, custom_tag, broker_order_id, status, status_reason, version,
    state_entered_at, filled_size, avg_fill_price, created_at, updated_at
"""


def create_view(columns: str) -> str:
    return f"""
CREATE VIEW orders_order_including_archived AS
SELECT {columns}, false AS archived FROM orders_order
UNION ALL
SELECT {columns}, true AS archived FROM orders_archivedorder
"""


DROP_VIEW = "DROP VIEW orders_order_including_archived"


class Migration(migrations.Migration):
    dependencies = [("orders", "0005_archive")]

    operations = [
        # The view is replaced whole: PostgreSQL's CREATE OR REPLACE VIEW only appends columns.
        migrations.RunSQL(
            [DROP_VIEW, create_view(VIEW_COLUMNS + ", overfilled")],
            reverse_sql=[DROP_VIEW, create_view(VIEW_COLUMNS)],
        ),
        migrations.AddField(
            model_name="orderincludingarchived",
            name="overfilled",
            field=models.BooleanField(default=False),
            preserve_default=False,
        ),
    ]
