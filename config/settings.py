"""Settings for Lab, read from the environment (see the configuration table in README.md)."""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

# SECRET_KEY signs what Lab reads back (decide.config's cache entries). Unset, it is read
# from SECRET_KEY_FILE, which `make serve` creates once with a random key (deploy/serve.py);
# without either, the key below, printed in this source for anyone to read: config.wsgi refuses
# to serve on it unless DEBUG is on (docs/operations.md, "SECRET_KEY").
DEVELOPMENT_SECRET_KEY = "lab-insecure-development-key-change-me"
SECRET_KEY_FILE = Path(env.str("SECRET_KEY_FILE", default=str(BASE_DIR / ".secret_key")))


def _key_from_file(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""


SECRET_KEY = (
    env.str("SECRET_KEY", default="") or _key_from_file(SECRET_KEY_FILE) or DEVELOPMENT_SECRET_KEY
)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.staticfiles",
    "corsheaders",
    "ninja",
    "lab",
]

MIDDLEWARE = [
    "config.middleware.RequestIdMiddleware",
    # The Host check first: nothing, not even a CORS preflight, answers another host.
    "config.middleware.HttpContractMiddleware",
    # Before anything else that can answer, so that preflights and errors carry CORS headers.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the interactive API docs' assets (see "Static files" below).
    "whitenoise.middleware.WhiteNoiseMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# --- Database: DATABASE_URL, or the embedded SQLite file in the project folder.
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'lab.sqlite3'}"),
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=300)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASE_STATEMENT_TIMEOUT_MS = env.int("DATABASE_STATEMENT_TIMEOUT_MS", default=5000)
# The CSV export's statements (lab/analysis/export.py): its first fetch sorts every unit.
EXPORT_STATEMENT_TIMEOUT_MS = env.int("EXPORT_STATEMENT_TIMEOUT_MS", default=120_000)
# How long a signed plot link of a JSON answer opens its picture (lab/analysis/links.py).
PLOT_LINK_MAX_AGE_SECONDS = env.int("PLOT_LINK_MAX_AGE_SECONDS", default=3600)
POSTGRESQL_ENGINE = "lab.postgresql"
_prepare = env.str("DATABASE_PREPARE_THRESHOLD", default="2").strip().lower()
DATABASE_PREPARE_THRESHOLD = None if _prepare in ("none", "off", "") else int(_prepare)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "options", f"-c statement_timeout={DATABASE_STATEMENT_TIMEOUT_MS}"
    )
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)
    # Django's backend, waiting up to this long for a server that accepts writes when a new
    # connection finds none (a switchover's handover): lab/postgresql/base.py.
    DATABASES["default"]["ENGINE"] = POSTGRESQL_ENGINE
    # psycopg's prepare_threshold for the hot path's statements (decide/store.py): "none"
    # turns server-side prepared statements off, what transaction pooling on PgBouncer older
    # than 1.21 needs (docs/scaling.md §4).
    DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", DATABASE_PREPARE_THRESHOLD)
    DATABASES["default"]["RECONNECT_WAIT_SECONDS"] = env.float(
        "DATABASE_RECONNECT_WAIT_SECONDS", default=3.0
    )
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets decide read while an admin bulk write is in progress.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].setdefault(
        "init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
    )
    DATABASES["default"]["OPTIONS"].setdefault("transaction_mode", "IMMEDIATE")
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)

# --- Analysis reads on a streaming replica (lab/replica.py, docs/operations.md "Replica
# reads"): results, factorial, control chart and measurement lists read there while it
# answers and lags at most DATABASE_REPLICA_MAX_LAG_SECONDS; the primary otherwise.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
DATABASE_REPLICA_MAX_LAG_SECONDS = env.float("DATABASE_REPLICA_MAX_LAG_SECONDS", default=30.0)
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = env.db_url_config(DATABASE_REPLICA_URL)
    DATABASES["replica"]["CONN_MAX_AGE"] = DATABASES["default"]["CONN_MAX_AGE"]
    DATABASES["replica"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["replica"].setdefault("OPTIONS", {})
    DATABASES["replica"]["OPTIONS"].setdefault(
        "options", f"-c statement_timeout={DATABASE_STATEMENT_TIMEOUT_MS}"
    )
    # A replica that does not answer soon is skipped for the primary, not waited for.
    DATABASES["replica"]["OPTIONS"].setdefault("connect_timeout", 2)
    # Tests: the replica is the test database itself (pytest-django creates none for it).
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
DATABASE_ROUTERS = ["lab.replica.AnalysisReadRouter"]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Caches: REDIS_URL, or an in-process cache. Every cache is a named alias.
# "default" serves general use; "decide" holds compiled product configs for the hot path.
REDIS_URL = env.str("REDIS_URL", default="")
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=0.05)
# Prefix of every cache key. Not needed for correctness: cached configs are keyed by random
# config versions that no other database produces (docs/decide.md, "The config cache").
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="lab")


def _cache(prefix: str) -> dict:
    if not REDIS_URL:
        return {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"lab-{prefix}",
            "KEY_PREFIX": f"{CACHE_KEY_PREFIX}:{prefix}",
        }
    return {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{CACHE_KEY_PREFIX}:{prefix}",
        "TIMEOUT": None,
        "OPTIONS": {
            "CLIENT_CLASS": "django_redis.client.DefaultClient",
            "PARSER_CLASS": "redis.connection._HiredisParser",
            "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            # Errors are raised and handled (counted, then the database answers) by the
            # callers, so that a Redis outage is visible in metrics and never a 5xx.
            "IGNORE_EXCEPTIONS": False,
        },
    }


CACHES = {"default": _cache("lab"), "decide": _cache("decide")}

# --- Known units in memory (decide.memory, docs/decide.md "Known units in memory"): each
# worker answers units it has decided from memory, invalidated by PostgreSQL LISTEN/NOTIFY.
# PostgreSQL only. Per worker process: a ceiling in MiB on what it remembers (estimated
# conservatively, least recently used evicted first) and a count of units; the entries'
# lifetime in seconds (a bound for writes no trigger sees).
DECIDE_KNOWN_UNITS = env.bool("DECIDE_KNOWN_UNITS", default=True)
DECIDE_KNOWN_UNITS_MAX_MIB = env.float("DECIDE_KNOWN_UNITS_MAX_MIB", default=32.0)
DECIDE_KNOWN_UNITS_MAX = env.int("DECIDE_KNOWN_UNITS_MAX", default=20_000)
DECIDE_KNOWN_UNITS_TTL = env.float("DECIDE_KNOWN_UNITS_TTL", default=3600.0)
# Where the listener connects when DATABASE_URL goes through a transaction-pooling PgBouncer
# (LISTEN needs a session of its own); DATABASE_URL's database when empty.
DECIDE_KNOWN_UNITS_LISTEN_URL = env.str("DECIDE_KNOWN_UNITS_LISTEN_URL", default="")
# Known-unit decisions answered in front of Django's middleware and ninja, with the same
# answers and headers (decide/hot_path.py, docs/decide.md "The hot path").
DECIDE_HOT_PATH = env.bool("DECIDE_HOT_PATH", default=True)

# --- Static files: the only ones are the Swagger UI assets of /api/v1/docs and
# /api/admin/v1/docs, shipped inside django-ninja. WhiteNoise serves them from the installed
# packages through Django's finders, so the embedded default, gunicorn, the nginx front and
# the Docker image need no collectstatic step and no file server (docs/operations.md).
STATIC_URL = "static/"
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = False
# --- CORS (django-cors-headers): browsers on these origins may call OFREP and decide, e.g.
# the OpenFeature web provider in a page. None by default; see docs/decide.md ("Browsers").
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])
# Only the client-key endpoints: the admin API is never offered to other origins.
CORS_URLS_REGEX = r"^/(ofrep/v1/.*|api/v1/decide(/batch)?)$"
CORS_ALLOW_METHODS = ("POST", "OPTIONS")
CORS_ALLOW_HEADERS = ("authorization", "content-type", "if-none-match", "x-api-key", "x-request-id")
# ETag: the web provider polls with If-None-Match, which needs it readable cross-origin.
CORS_EXPOSE_HEADERS = ("etag", "retry-after", "x-request-id")
CORS_PREFLIGHT_MAX_AGE = 3600

# --- Bodies: the bulk endpoints take up to 10,000 rows; larger bodies answer 413.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=8 * 1024 * 1024)

USE_TZ = True
TIME_ZONE = "UTC"
LANGUAGE_CODE = "en-us"
USE_I18N = False

NINJA_PAGINATION_PER_PAGE = 100
NINJA_PAGINATION_MAX_LIMIT = 1000

# Development-only endpoints (the no-op ceiling the load tests compare decide against).
LAB_BENCHMARK_ENDPOINTS = env.bool("LAB_BENCHMARK_ENDPOINTS", default=False)

# --- Logs: one JSON object per line on stdout, each with the request id.
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "config.logging.RequestIdFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s %(request_id)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            # ISO 8601 in UTC with its offset, whatever the host's time zone.
            "timestamp": "time",
        }
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "json",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"level": "ERROR"},
        "lab.access": {"level": env.str("ACCESS_LOG_LEVEL", default="INFO")},
    },
}
