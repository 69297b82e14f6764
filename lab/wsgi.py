import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lab.settings")

django_application = get_wsgi_application()

# Known-unit decisions answered from memory in front of Django (decide/hot_path.py).
from decide.hot_path import DecideHotPath  # noqa: E402 (needs the settings loaded above)

application = DecideHotPath(django_application)
