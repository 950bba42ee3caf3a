"""Operations endpoints: /healthz (alive), /readyz (can serve), /metrics (Prometheus).

Plain Django views, outside the bot API: no API token or throttling applies, and a load
balancer or Prometheus can call them with nothing but an address (and, for /metrics, the
token or an allowed address).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Iterator

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ops.collectors import DatabaseStateCollector
from ops.health import readiness_checks

FORBIDDEN = "metrics are only served to an allowed address or with the metrics token"
# The classic text format every Prometheus version parses; our metric names need nothing newer
# (prometheus-client 0.22+ labels its output 1.0.0, which older servers do not expect).
CONTENT_TYPE_TEXT_0_0_4 = "text/plain; version=0.0.4; charset=utf-8"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive and serving requests; checks nothing else (use /readyz)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    checks = readiness_checks()
    ready = all(check.ok for check in checks)
    return JsonResponse(
        {
            "status": "ready" if ready else "unready",
            "checks": {check.name: {"ok": check.ok, "detail": check.detail} for check in checks},
        },
        status=200 if ready else 503,
    )


def _presented_token(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.GET.get("token") or None


def _address_allowed(request: HttpRequest) -> bool:
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 from a dual-stack socket
    return any(
        address in ipaddress.ip_network(network, strict=False)
        for network in settings.METRICS_ALLOWED_IPS
    )


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    presented = _presented_token(request)
    if token and presented is not None and hmac.compare_digest(presented, token):
        return True
    return _address_allowed(request)


class _Together(Collector):
    """Several collectors exposed as one (what generate_latest needs)."""

    def __init__(self, collectors: Iterable[Collector]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def _process_metrics() -> Collector:
    """This process's metrics, or, in multiprocess mode, every process's added up."""
    directory = settings.PROMETHEUS_MULTIPROC_DIR
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return registry


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        if settings.METRICS_TOKEN:
            response = HttpResponse(FORBIDDEN, status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
        return HttpResponse(FORBIDDEN, status=403, content_type="text/plain")
    output = generate_latest(_Together([_process_metrics(), DatabaseStateCollector()]))
    return HttpResponse(output, content_type=CONTENT_TYPE_TEXT_0_0_4)
