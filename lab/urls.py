from django.conf import settings
from django.urls import path

from admin_api.api import api as admin_api
from decide.api import api as decide_api
from lab import ops

handler404 = "lab.ops.not_found"
handler500 = "lab.ops.server_error"

urlpatterns = [
    path("healthz", ops.healthz),
    path("readyz", ops.readyz),
    path("metrics", ops.metrics),
    path("api/admin/v1/", admin_api.urls),
    # The decide API serves /api/v1/... and /ofrep/v1/... (see decide/api.py).
    path("", decide_api.urls),
]

if settings.LAB_BENCHMARK_ENDPOINTS:
    from lab.bench import api as bench_api

    urlpatterns.insert(0, path("bench/", bench_api.urls))
