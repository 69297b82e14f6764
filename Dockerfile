# Lab: the service image. gunicorn's workers must not face clients directly: run it
# behind nginx with deploy/compose.yaml (docs/operations.md, "The Docker image"):
#   export SECRET_KEY=<a long random value, kept>
#   docker compose -f deploy/compose.yaml up --build -d
#   docker compose -f deploy/compose.yaml run --rm lab python manage.py create_api_token admin
# The API docs' assets are served by the image itself (WhiteNoise), nothing to collect.

FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY lab/ lab/
COPY decide/ decide/
COPY admin_api/ admin_api/
COPY config/ config/
COPY rules/ rules/
# Lab and every dependency as wheels: the runtime stage needs no compiler and no index.
RUN pip wheel --wheel-dir /wheels .


FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_URL=sqlite:////data/lab.sqlite3 \
    DEBUG=false \
    LOG_LEVEL=INFO \
    GUNICORN_BIND=0.0.0.0:8000
RUN groupadd --system --gid 10001 lab \
    && useradd --system --uid 10001 --gid lab --home-dir /app --no-create-home lab \
    && mkdir -p /app /data \
    && chown lab:lab /data
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels lab \
    && rm -rf /wheels
WORKDIR /app
COPY manage.py gunicorn.conf.py ./
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "config.wsgi:application"]
