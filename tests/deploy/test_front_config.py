"""The nginx front's configuration (deploy/front.py, deploy/nginx/): rendered for one or
several gunicorns, refusing what nginx could not parse, and accepted by `nginx -t`."""

import os
import subprocess

import pytest

from deploy import front

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
LIMIT = 8 * 1024 * 1024


def test_render_site__two_gunicorns__one_server_line_each():
    site = front.render_site(
        listen="0.0.0.0:8080",
        upstreams=["unix:/run/lab/a.sock", "10.0.0.2:8000"],
        max_body_size=LIMIT,
    )

    assert "listen 0.0.0.0:8080;" in site
    assert "server unix:/run/lab/a.sock;" in site
    assert "server 10.0.0.2:8000;" in site
    assert f"client_max_body_size {LIMIT};" in site
    assert "${LAB_" not in site
    # nginx's own variables are left for nginx
    assert "$proxy_add_x_forwarded_for" in site


@pytest.mark.parametrize(
    "listen", ["", "127.0.0.1:80; include /etc/passwd", "host :80", "localhost:http"]
)
def test_render_site__listen_nginx_could_misread__refused(listen):
    with pytest.raises(ValueError, match="listen"):
        front.render_site(listen=listen, upstreams=["unix:/x.sock"], max_body_size=LIMIT)


@pytest.mark.parametrize("upstream", ["", "unix:/x.sock; evil", "http://x:80", "x"])
def test_render_site__bad_upstream__refused(upstream):
    with pytest.raises(ValueError, match="upstream"):
        front.render_site(listen="127.0.0.1:8000", upstreams=[upstream], max_body_size=LIMIT)


def test_render_site__no_upstream__refused():
    with pytest.raises(ValueError, match="upstream"):
        front.render_site(listen="127.0.0.1:8000", upstreams=[], max_body_size=LIMIT)


def test_write_config__nginx_accepts_it(tmp_path):
    binary = front.nginx_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("CI=true but nginx is not installed (.ci/run installs it)")
        pytest.skip("nginx is not installed")
    config = front.write_config(
        tmp_path / "run",
        listen="127.0.0.1:23099",
        upstreams=[f"unix:{tmp_path}/gunicorn.sock"],
        max_body_size=LIMIT,
    )

    checked = subprocess.run(
        [*front.nginx_command(config, binary), "-t"], capture_output=True, text=True, timeout=30
    )

    assert checked.returncode == 0, checked.stderr
    assert str(tmp_path / "run" / "nginx.pid") in config.read_text()


def test_compose__nginx_renders_the_same_site_as_make_serve_production():
    """deploy/compose.yaml feeds the same template to the nginx image's envsubst."""
    import yaml

    compose = yaml.safe_load((front.TEMPLATES.parent / "compose.yaml").read_text())
    nginx = compose["services"]["nginx"]
    mounted = {volume.split(":")[0]: volume.split(":")[1] for volume in nginx["volumes"]}
    assert mounted["./nginx/lab.conf.template"].startswith("/etc/nginx/templates/")
    env = nginx["environment"]

    by_envsubst = front.render(front.SITE_TEMPLATE, env)

    assert by_envsubst == front.render_site(
        listen=env["LAB_LISTEN"],
        upstreams=["lab:8000"],
        max_body_size=int(env["LAB_MAX_BODY_SIZE"]),
    )
    # gunicorn is reachable only through nginx, and runs the production config
    assert "ports" not in compose["services"]["lab"]
    assert compose["services"]["lab"]["environment"]["GUNICORN_BIND"] == "0.0.0.0:8000"


@pytest.mark.parametrize(
    "origin",
    [
        "https://line.example/",
        "https://line.example/path",
        "line.example",
        "https://line.example;}",
        "https://line example",
        "ftp://line.example",
        "*",
    ],
)
def test_cors_origin_pattern__not_an_origin__refused_by_name(origin):
    with pytest.raises(ValueError, match="CORS_ALLOWED_ORIGINS"):
        front.cors_origin_pattern([origin])


def test_cors_origin_pattern__matches_exactly_the_listed_origins():
    import re

    pattern = front.cors_origin_pattern(["https://line.example", "http://127.0.0.1:8080"])

    for origin in ("https://line.example", "http://127.0.0.1:8080"):
        assert re.fullmatch(pattern, origin)
    for origin in ("https://lineXexample", "https://line.example.evil", "http://127.0.0.1:80"):
        assert not re.search(pattern, origin)
    assert not re.search(front.cors_origin_pattern([]), "https://line.example")


def test_front__gunicorn_not_answering__503_json_with_retry_after(tmp_path):
    """nginx's own errors are JSON like Lab's: here its upstream socket does not exist.
    An allowed origin can read them (CORS headers); another origin gets none."""
    import http.client
    import json
    import socket
    import time

    binary = front.nginx_binary()
    if binary is None:
        if IN_CI:
            pytest.fail("CI=true but nginx is not installed (.ci/run installs it)")
        pytest.skip("nginx is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = front.write_config(
        tmp_path / "run",
        listen=f"127.0.0.1:{port}",
        upstreams=[f"unix:{tmp_path}/nobody-listens.sock"],
        max_body_size=LIMIT,
        cors_origins=["https://line.example"],
    )
    nginx = subprocess.Popen(
        front.nginx_command(config, binary), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def decide(origin=None):
        headers = {"Host": "localhost", **({"Origin": origin} if origin else {})}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/api/v1/decide", body=b"{}", headers=headers)
        response = conn.getresponse()
        return response, response.read()

    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response, body = decide()
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.1)
        allowed, _ = decide("https://line.example")
        other, _ = decide("https://elsewhere.example")
    finally:
        nginx.terminate()
        nginx.wait(20)

    assert response.status == 503
    assert response.getheader("Content-Type") == "application/json"
    assert response.getheader("Retry-After") == "1"
    assert "retry" in json.loads(body)["detail"]
    assert response.getheader("Access-Control-Allow-Origin") is None
    assert allowed.status == 503
    assert allowed.getheader("Access-Control-Allow-Origin") == "https://line.example"
    assert "retry-after" in allowed.getheader("Access-Control-Expose-Headers")
    assert other.status == 503
    assert other.getheader("Access-Control-Allow-Origin") is None
    assert other.getheader("Access-Control-Expose-Headers") is None


def test_rate_limits__defaults__in_the_rendered_site():
    site = front.render_site(
        listen="127.0.0.1:8000", upstreams=["unix:/x.sock"], max_body_size=LIMIT
    )

    assert "zone=lab_decide:10m rate=1000r/s" in site
    assert "zone=lab_decide burst=2000 nodelay" in site
    assert "zone=lab_admin:2m rate=20r/s" in site
    assert "zone=lab_admin burst=40 nodelay" in site


def test_rate_limits__from_env__overrides_and_refuses_what_nginx_would_misread():
    limits = front.RateLimits.from_env({"LAB_DECIDE_RATE": "50", "LAB_ADMIN_BURST": "0"})
    assert (limits.decide_rate, limits.decide_burst, limits.admin_burst) == (50, 2000, 0)
    for bad in ({"LAB_DECIDE_RATE": "0"}, {"LAB_ADMIN_RATE": "5r/s"}, {"LAB_DECIDE_BURST": "-1"}):
        with pytest.raises(ValueError, match="LAB_"):
            front.RateLimits.from_env(bad)


def test_upstream_keepalive__nginx_closes_idle_connections_before_gunicorn_does():
    # Given the shipped front and gunicorn settings
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    site = front.render_site(
        listen="127.0.0.1:8000", upstreams=["unix:/x.sock"], max_body_size=LIMIT
    )
    upstream = site[site.index("upstream lab_gunicorn") :].split("}", 1)[0]
    nginx_idle = re.search(r"keepalive_timeout (\d+)s;", upstream)
    gunicorn = re.search(r"^keepalive = (\d+)$", (root / "gunicorn.conf.py").read_text(), re.M)
    # Then nginx gives up an idle connection to gunicorn first: a request nginx sends on a
    # connection gunicorn is closing is reset, and nginx never sends a POST (a decide) again
    assert nginx_idle and gunicorn
    assert int(nginx_idle.group(1)) < int(gunicorn.group(1))
