import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings

if not settings.DEBUG and settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY:
    # Whoever can write Redis could sign a config entry with a key printed in Lab's source.
    raise ImproperlyConfigured(
        "SECRET_KEY is not set, and Lab does not serve on its built-in development key with "
        "DEBUG off. Set SECRET_KEY to a long random value, e.g. "
        "SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))'), "
        f"or write one into SECRET_KEY_FILE ({settings.SECRET_KEY_FILE}). "
        'docs/operations.md, "SECRET_KEY".'
    )

django_application = get_wsgi_application()

# Known-unit decisions answered from memory in front of Django (decide/hot_path.py).
from decide.hot_path import DecideHotPath  # noqa: E402 (needs the settings loaded above)

application = DecideHotPath(django_application)

if settings.LAB_BENCHMARK_ENDPOINTS:
    # The front's floor, before every other piece of Lab (config/bench.py).
    from config.bench import FrontFloor

    application = FrontFloor(application)
