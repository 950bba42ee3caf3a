"""Create the demo admin login for the embedded default, and print how to log in.

The password is generated once and kept in ./var beside the SQLite file, so every `make run`
prints a login that works. Not for production: there, create users with `createsuperuser`.
"""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

DEMO_USERNAME = "admin"


class Command(BaseCommand):
    help = "Create the demo admin user if none exists and print the URL and login."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Where the app runs")

    def handle(self, *args: Any, **options: Any) -> None:
        password_file = settings.VAR_DIR / "demo_admin_password"
        settings.VAR_DIR.mkdir(exist_ok=True)
        if not password_file.exists():
            password_file.write_text(secrets.token_urlsafe(12), encoding="utf-8")
            password_file.chmod(0o600)
        password = password_file.read_text(encoding="utf-8").strip()

        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        if created or not user.check_password(password):
            user.is_staff = True
            user.is_superuser = True
            user.set_password(password)
            user.save()

        url = options["url"].rstrip("/")
        self.stdout.write(f"ordermgmt is at {url}/")
        self.stdout.write(f"  admin:    {url}/admin/")
        self.stdout.write(f"  login:    {DEMO_USERNAME} / {password}")
