"""Render the nginx front's configuration from deploy/nginx/*.template.

    render_site(listen=..., upstreams=[...], max_body_size=..., limits=...) -> str  the site
    write_config(run_dir, listen=..., upstreams=[...], max_body_size=...) -> Path nginx.conf
    nginx_command(config) -> list[str]                                    nginx in the foreground

The templates use `${LAB_...}` placeholders only, so the nginx image's envsubst renders the
same site file (deploy/compose.yaml); nginx's own `$variables` are left alone.
"""

import grp
import os
import pwd
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

TEMPLATES = Path(__file__).resolve().parent / "nginx"
SITE_TEMPLATE = TEMPLATES / "lab.conf.template"
MAIN_TEMPLATE = TEMPLATES / "nginx.conf.template"
_PLACEHOLDER = re.compile(r"\$\{(LAB_[A-Z_]+)\}")
# What `listen` may say: a port, host:port, or [ipv6]:port (no options, no spaces).
_LISTEN = re.compile(r"(?:(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):)?[0-9]{1,5}")
_UPSTREAM = re.compile(r"unix:/[^\s;{}]+|[A-Za-z0-9.-]+:[0-9]{1,5}|\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}")
# What a browser sends as Origin (scheme://host[:port]), the only form CORS_ALLOWED_ORIGINS
# holds; anything else could not match a browser's header and could break the config.
_ORIGIN = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
# An nginx regex no Origin header can match: with no allowed origin, no CORS header is added.
NO_ORIGIN = "^$"


def render(template: Path, values: dict[str, str]) -> str:
    text = template.read_text()
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise ValueError(f"{template.name}: no value for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


@dataclass(frozen=True)
class RateLimits:
    """Requests per second, and the burst above it, per client key on decide and OFREP and
    per API token on the admin API (docs/operations.md, "Rate limits")."""

    decide_rate: int = 1000
    decide_burst: int = 2000
    admin_rate: int = 20
    admin_burst: int = 40

    ENV: ClassVar[dict[str, str]] = {
        "decide_rate": "LAB_DECIDE_RATE",
        "decide_burst": "LAB_DECIDE_BURST",
        "admin_rate": "LAB_ADMIN_RATE",
        "admin_burst": "LAB_ADMIN_BURST",
    }

    def __post_init__(self):
        for name in self.ENV:
            value = getattr(self, name)
            minimum = 1 if name.endswith("rate") else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{self.ENV[name]} must be a whole number >= {minimum}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RateLimits":
        environ = os.environ if environ is None else environ
        values = {}
        for name, variable in cls.ENV.items():
            text = environ.get(variable, "").strip()
            if text:
                if not text.isdigit():
                    raise ValueError(f"{variable} must be a whole number, not {text!r}")
                values[name] = int(text)
        return cls(**values)

    def placeholders(self) -> dict[str, str]:
        return {variable: str(getattr(self, name)) for name, variable in self.ENV.items()}


def cors_origin_pattern(origins: Sequence[str]) -> str:
    """The nginx regex matching exactly the Origin headers in `origins` (Lab's
    CORS_ALLOWED_ORIGINS), so that the errors nginx answers itself carry the CORS headers
    Lab's own answers carry, and a browser's client can read them."""
    for origin in origins:
        if not _ORIGIN.fullmatch(origin):
            raise ValueError(
                f"CORS_ALLOWED_ORIGINS: not an origin a browser sends: {origin!r} "
                "(scheme://host[:port], no path)"
            )
    if not origins:
        return NO_ORIGIN
    return "^(?:" + "|".join(re.escape(origin) for origin in origins) + ")$"


def render_site(
    *,
    listen: str,
    upstreams: Sequence[str],
    max_body_size: int,
    limits: RateLimits | None = None,
    cors_origins: Sequence[str] = (),
) -> str:
    """The http-context site: nginx on `listen`, in front of each gunicorn in `upstreams`
    (`unix:/path.sock` or `host:port`; several are balanced round-robin), with `limits`
    (RateLimits' defaults when not given); the errors nginx answers itself carry CORS
    headers for `cors_origins`."""
    if not _LISTEN.fullmatch(listen):
        raise ValueError(f"not an address nginx can listen on: {listen!r} (HOST:PORT)")
    if not upstreams:
        raise ValueError("at least one upstream gunicorn is needed")
    for upstream in upstreams:
        if not _UPSTREAM.fullmatch(upstream):
            raise ValueError(f"not an upstream address: {upstream!r} (unix:/path or HOST:PORT)")
    if max_body_size < 1:
        raise ValueError("max_body_size must be at least 1 byte")
    servers = "\n    ".join(f"server {upstream};" for upstream in upstreams)
    return render(
        SITE_TEMPLATE,
        {
            "LAB_LISTEN": listen,
            "LAB_UPSTREAM_SERVERS": servers,
            "LAB_MAX_BODY_SIZE": str(max_body_size),
            "LAB_CORS_ORIGIN_PATTERN": cors_origin_pattern(cors_origins),
            **(limits or RateLimits()).placeholders(),
        },
    )


def write_config(
    run_dir: Path,
    *,
    listen: str,
    upstreams: Sequence[str],
    max_body_size: int,
    limits: RateLimits | None = None,
    cors_origins: Sequence[str] = (),
) -> Path:
    """nginx.conf and lab.conf in `run_dir`, which also holds nginx's pid and temp files."""
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "lab.conf").write_text(
        render_site(
            listen=listen,
            upstreams=upstreams,
            max_body_size=max_body_size,
            limits=limits,
            cors_origins=cors_origins,
        )
    )
    config = run_dir / "nginx.conf"
    config.write_text(
        render(MAIN_TEMPLATE, {"LAB_RUN_DIR": str(run_dir), "LAB_USER_DIRECTIVE": _user()})
    )
    return config


def _user() -> str:
    """Started by root, nginx would switch its workers to `nobody`: keep the invoking user.
    Otherwise the directive is meaningless (nginx warns), so it is left out."""
    if os.geteuid() != 0:
        return "# (not root: nginx's workers run as the invoking user)"
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"user {user} {group};"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(path).exists()),
        None,
    )


def nginx_command(config: Path, binary: str | None = None) -> list[str]:
    """nginx in the foreground (`daemon off` is in the config), its prefix the run folder
    and its start-up errors on stderr rather than in /var/log/nginx."""
    binary = binary or nginx_binary()
    if binary is None:
        raise FileNotFoundError("nginx is not installed")
    return [binary, "-p", str(config.parent), "-c", str(config), "-e", "stderr"]
