"""ordermgmt settings: one module, every external part switched on by an environment variable.

With nothing set, the system runs embedded: SQLite in ./var, an in-process channel layer, a
local-memory cache and the bundled ProjectX simulator. `DATABASE_URL`, `REDIS_URL` and the
`PROJECTX_*` variables switch each part to the real thing. Every value is read through the
strict helpers in `common.env`: a bad value stops start-up with a message naming it.
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from common.env import (
    EnvironmentSettingError,
    env_bool,
    env_int,
    env_list,
    env_path,
    env_str,
    env_url,
)
from ordermgmt.config import DEFAULT_CONFIG_PATH, load_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"  # the embedded default's state: SQLite file, generated secret key

DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])

# --- The tuning file ------------------------------------------------------------------------
ORDER_MANAGEMENT = load_config(env_path("ORDERMGMT_CONFIG", DEFAULT_CONFIG_PATH))

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_url("DATABASE_URL", schemes={"postgres", "postgresql", "sqlite"})
EMBEDDED = DATABASE_URL is None
# Loose on purpose: dj_database_url.parse returns a TypedDict that is extended below.
DATABASES: dict[str, Any]
if DATABASE_URL is None:
    VAR_DIR.mkdir(exist_ok=True)
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": VAR_DIR / "db.sqlite3"}
    }
else:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
    except ValueError as exc:
        raise EnvironmentSettingError("DATABASE_URL", DATABASE_URL, str(exc)) from exc
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        _LOCK_TIMEOUT_MS = ORDER_MANAGEMENT.concurrency_control.lock_timeout_ms
        _PREPARE_ONLY_WHEN_ASKED = 2**31 - 1
        # Under ASGI every request runs in a thread of its own, so per-thread persistent
        # connections would pile up past max_connections: a bounded psycopg pool per process
        # shares a few connections among all threads instead.
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})
        DATABASES["default"]["OPTIONS"].update(
            {
                "application_name": env_str("ORDERMGMT_APPLICATION_NAME", "ordermgmt"),
                # A lock that is not free within concurrencyControl.lockTimeoutMs fails the
                # statement instead of queueing the request behind it indefinitely.
                "options": f"-c lock_timeout={_LOCK_TIMEOUT_MS}",
                # Parameters bound by the server, not quoted into the text by psycopg (which
                # adapted each value in Python).
                "server_side_binding": True,
                # Prepared: only the statements our code asks for (`common.statements`, and
                # `prepare=True` on `common.bulk`'s raw cursors: the listener's batch, the
                # placement's statements, the order writes, a few texts run thousands of times
                # an hour, whose parse and plan were 60% of PostgreSQL's time in a batch and
                # 37% in a placement). Not the ORM's: Django turns psycopg's preparing off
                # (prepare_threshold None, under which psycopg prepares nothing, asked or not),
                # and turned on for every statement (threshold 5) it lowered the spread
                # placement bench from 43.1/44.3 to 39.1/37.2 orders/s. A threshold out of
                # reach keeps the ORM's unprepared and lets ours ask.
                "prepare_threshold": _PREPARE_ONLY_WHEN_ASKED,
                "pool": {
                    "min_size": 1,
                    "max_size": env_int("DATABASE_POOL_MAX_SIZE", 20, minimum=1),
                    "timeout": 10,
                },
            }
        )

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite serialises writers. IMMEDIATE transactions take the write lock up front, so a
    # writer waits (up to the timeout) instead of failing at once with "database is locked"
    # when it tries to upgrade a read lock; WAL lets readers go on while one process writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

# --- Secret key -----------------------------------------------------------------------------
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not EMBEDDED:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY must be set when DATABASE_URL points at a real database"
        )
    # The embedded default keeps a generated key beside its SQLite file, so sessions survive
    # restarts without anyone having to invent a key.
    key_file = VAR_DIR / "secret_key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(50), encoding="utf-8")
        key_file.chmod(0o600)
    SECRET_KEY = key_file.read_text(encoding="utf-8").strip()

# --- Redis: cache and channel layer ---------------------------------------------------------
REDIS_URL = env_url("REDIS_URL", schemes={"redis", "rediss", "unix"})


def redis_channel_layer(url: str, prefix: str = "ordermgmt") -> dict[str, Any]:
    """The channel layer over Redis, as every process (web workers, listeners) configures it."""
    return {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [url], "prefix": prefix},
    }


CACHES: dict[str, dict[str, Any]]
CHANNEL_LAYERS: dict[str, dict[str, Any]]
if REDIS_URL is None:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CACHES = {
        "default": {
            "BACKEND": "common.cache.SharedPoolRedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "ordermgmt",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    CHANNEL_LAYERS = {"default": redis_channel_layer(REDIS_URL)}

# --- The broker -----------------------------------------------------------------------------
PROJECTX_API_URL = env_url("PROJECTX_API_URL", schemes={"http", "https"})
PROJECTX_USER_HUB_URL = env_url("PROJECTX_USER_HUB_URL", schemes={"http", "https", "ws", "wss"})
# Optional: the market hub's URL when it is not the user hub's with /hubs/user -> /hubs/market.
PROJECTX_MARKET_HUB_URL = env_url("PROJECTX_MARKET_HUB_URL", schemes={"http", "https", "ws", "wss"})
PROJECTX_USERNAME = env_str("PROJECTX_USERNAME")
PROJECTX_API_KEY = env_str("PROJECTX_API_KEY")
_projectx_given = [
    name
    for name, value in {
        "PROJECTX_API_URL": PROJECTX_API_URL,
        "PROJECTX_USER_HUB_URL": PROJECTX_USER_HUB_URL,
        "PROJECTX_USERNAME": PROJECTX_USERNAME,
        "PROJECTX_API_KEY": PROJECTX_API_KEY,
    }.items()
    if value
]
if _projectx_given and len(_projectx_given) < 4:
    missing = {
        "PROJECTX_API_URL",
        "PROJECTX_USER_HUB_URL",
        "PROJECTX_USERNAME",
        "PROJECTX_API_KEY",
    } - set(_projectx_given)
    raise ImproperlyConfigured(
        f"the PROJECTX_* settings go together: {', '.join(sorted(missing))} missing"
    )
# The broker documents 200 requests per 60 s; this process keeps to it. Raise it only against
# the simulator (benchmarks), never against the real broker.
PROJECTX_REQUESTS_PER_MINUTE = env_int("PROJECTX_REQUESTS_PER_MINUTE", 200, minimum=1)
# No PROJECTX_* at all: the system talks to the bundled simulator.
PROJECTX_USE_SIMULATOR = not _projectx_given

# --- Django ---------------------------------------------------------------------------------
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "ordermgmt",
    # The domain, bottom to top (see docs/architecture.md).
    "accounts",
    "orders",
    "fills",
    "marketdata",
    # The interfaces on top of it.
    "desk",
    "ops",
    "backoffice",
]

# Django's own middleware and WhiteNoise, each declared synchronous only (ordermgmt/middleware.py
# says why): under ASGI the chain and the view then run in one thread hop, not a dozen.
MIDDLEWARE = [
    "ordermgmt.middleware.SecurityMiddleware",
    # Static files (admin, API docs, the desk) from the app itself, in every mode: one process
    # serves the whole system, no separate web server needed.
    "ordermgmt.middleware.StaticFilesMiddleware",
    "ordermgmt.middleware.SessionMiddleware",
    "ordermgmt.middleware.CommonMiddleware",
    "ordermgmt.middleware.CsrfViewMiddleware",
    "ordermgmt.middleware.AuthenticationMiddleware",
    "ordermgmt.middleware.MessageMiddleware",
    "ordermgmt.middleware.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "ordermgmt.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]
WSGI_APPLICATION = "ordermgmt.wsgi.application"
ASGI_APPLICATION = "ordermgmt.asgi.application"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve straight from the apps' static folders, so no collectstatic step is needed to start;
# run collectstatic in a deployment to serve compressed, far-future-cached copies instead.
WHITENOISE_USE_FINDERS = True
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns on every start when it is missing
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "admin:login"
LOGIN_REDIRECT_URL = "desk:desk"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO").upper()},
}

# --- The bot API ----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.ReusedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_THROTTLE_CLASSES": ["api.throttling.PerTokenRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": env_str("API_THROTTLE_RATE", "1200/min")},
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "COERCE_DECIMAL_TO_STRING": True,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "ordermgmt bot API",
    "DESCRIPTION": "Place, modify and cancel futures orders through the ProjectX Gateway, safely.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"OrderStatusEnum": "orders.models.OrderStatus"},
}
# Unknown placements are verified in a background thread after the response (off in tests,
# which drive verification themselves).
ORDERMGMT_BACKGROUND_VERIFICATION = env_bool("ORDERMGMT_BACKGROUND_VERIFICATION", True)

# --- Operations: /metrics, /healthz, /readyz (ordermgmt/ops) --------------------------------
# /metrics answers a request that carries METRICS_TOKEN (`Authorization: Bearer <token>` or
# `?token=<token>`) or comes from an address in METRICS_ALLOWED_IPS (addresses or networks;
# "none" for token only). Behind a reverse proxy on this host every request comes from the
# proxy's address: use the token there.
METRICS_TOKEN = env_str("METRICS_TOKEN")
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", ["127.0.0.1", "::1"])
if [item.lower() for item in METRICS_ALLOWED_IPS] == ["none"]:
    METRICS_ALLOWED_IPS = []
for _network in METRICS_ALLOWED_IPS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError:
        raise EnvironmentSettingError(
            "METRICS_ALLOWED_IPS",
            env_str("METRICS_ALLOWED_IPS"),
            f"IP addresses or networks (10.0.0.0/8), or none; {_network!r} is neither",
        ) from None
# Several processes (uvicorn workers, the listener, commands) export one set of metrics when
# they share this directory (prometheus-client's multiprocess mode). It must exist, be empty
# when the first of them starts, and be set before they start: see deploy/systemd.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR")
if PROMETHEUS_MULTIPROC_DIR and not Path(PROMETHEUS_MULTIPROC_DIR).is_dir():
    raise EnvironmentSettingError(
        "PROMETHEUS_MULTIPROC_DIR", PROMETHEUS_MULTIPROC_DIR, "an existing directory"
    )
