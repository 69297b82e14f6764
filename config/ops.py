"""Operations endpoints (no auth): liveness, readiness and Prometheus metrics."""

import logging
import os

from django.conf import settings
from django.core.cache import caches
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)


@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request):
    checks = {"database": _database_ok(), "cache": _cache_ok()}
    ready = all(checks.values())
    body = {"status": "ok" if ready else "unavailable", "checks": checks}
    return JsonResponse(body, status=200 if ready else 503)


def _database_ok() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        logger.warning("readiness: database unreachable", exc_info=True)
        return False


def _cache_ok() -> bool:
    if not settings.REDIS_URL:
        return True
    try:
        caches["decide"].client.get_client(write=False).ping()
        return True
    except Exception:
        logger.warning("readiness: redis unreachable", exc_info=True)
        return False


@require_GET
def metrics(request):
    """Prometheus text format; under gunicorn, the sum over every worker (multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def not_found(request, exception=None):
    """Unknown URLs answer JSON like every other error (docs/contract.md: every answer is JSON)."""
    return JsonResponse({"detail": f"no route for {request.path!r}"}, status=404)


def server_error(request):
    return JsonResponse(
        {"detail": "internal error", "request_id": _request_id(request)}, status=500
    )


def _request_id(request) -> str | None:
    return getattr(request, "request_id", None)
