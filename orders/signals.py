"""Signals the order domain sends after a change is committed.

The live desk and the metrics hook onto these; they are sent from `transaction.on_commit`, so a
receiver never sees a change that was rolled back.
"""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: order (the committed Order), transition (the newest OrderTransition row written),
# transitions (every audit row of this order in the committed transaction, oldest first: one
# for a single write, several when the listener applied a batch of events)
order_changed = Signal()

# kwargs: order_id. Sent after commit when the broker counts more filled than the fills we
# hold; the fills app fetches the missing fills (Trade/search). A signal, so that orders does
# not import fills (the arrows point fills -> orders).
order_fills_missing = Signal()
