"""Create (or reuse) a bot user, grant it accounts, and print its API token."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from accounts.models import Account
from accounts.services import account_grant, account_sync_from_broker
from projectx.errors import GatewayError


class Command(BaseCommand):
    help = (
        "Create the user USER if needed, grant it the given broker accounts, and print its API "
        "token (Authorization: Token <key>). A bot sees and acts on only its granted accounts."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--account",
            dest="accounts",
            action="append",
            type=int,
            default=[],
            metavar="BROKER_ACCOUNT_ID",
            help="A broker account id to grant (repeatable)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        wanted: list[int] = options["accounts"]
        known = set(
            Account.objects.filter(broker_account_id__in=wanted).values_list(
                "broker_account_id", flat=True
            )
        )
        if set(wanted) - known:
            try:
                account_sync_from_broker()
            except GatewayError as exc:
                raise CommandError(f"cannot fetch accounts from the broker: {exc}") from exc
        missing = set(wanted) - set(
            Account.objects.filter(broker_account_id__in=wanted).values_list(
                "broker_account_id", flat=True
            )
        )
        if missing:
            raise CommandError(f"unknown broker account(s): {', '.join(map(str, sorted(missing)))}")

        user, _ = User.objects.get_or_create(username=options["username"])
        account_grant(user=user, broker_account_ids=wanted)
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
