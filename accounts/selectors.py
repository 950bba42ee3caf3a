from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import QuerySet

from accounts.models import Account


def accounts_visible_to(user: User | AnonymousUser) -> QuerySet[Account]:
    """Staff see every account; anyone else only the accounts granted to them."""
    if not user.is_authenticated:
        return Account.objects.none()
    if user.is_staff:
        return Account.objects.all()
    return Account.objects.filter(members=user)
