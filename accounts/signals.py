"""Signals the accounts domain sends after a change is committed (from `transaction.on_commit`),
so a receiver (the live desk) never sees a change that was rolled back."""

from __future__ import annotations

from django.dispatch import Signal

# kwargs: position (the committed Position, with its account)
position_changed = Signal()
