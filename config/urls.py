from django.conf import settings
from django.urls import path

from admin_api.api import api as admin_api
from config import ops
from decide.api import api as decide_api

handler404 = "config.ops.not_found"
handler500 = "config.ops.server_error"

urlpatterns = [
    path("healthz", ops.healthz),
    path("readyz", ops.readyz),
    path("metrics", ops.metrics),
    path("api/admin/v1/", admin_api.urls),
    # The decide API serves /api/v1/... and /ofrep/v1/... (see decide/api.py).
    path("", decide_api.urls),
]

if settings.LAB_BENCHMARK_ENDPOINTS:
    from config.bench import api as bench_api

    urlpatterns.insert(0, path("bench/", bench_api.urls))
