"""The Host names `make serve` and `make serve-production` answer (deploy/serve.py): Django
refuses any Host not in ALLOWED_HOSTS, so BIND's address is added when it is a specific one,
and a wildcard BIND says which names are answered and how to add others."""

import pytest

from deploy.serve import allowed_hosts

DEFAULT = ["localhost", "127.0.0.1", "[::1]", "testserver"]


@pytest.fixture
def defaults(settings, monkeypatch):
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    settings.ALLOWED_HOSTS = list(DEFAULT)
    return settings


def test_allowed_hosts__specific_address__added_to_the_defaults(defaults):
    assert allowed_hosts("10.0.0.5") == (",".join([*DEFAULT, "10.0.0.5"]), None)


def test_allowed_hosts__ipv6_address__added_in_brackets_as_a_host_header_sends_it(defaults):
    assert allowed_hosts("fd00::5")[0].endswith(",[fd00::5]")


def test_allowed_hosts__loopback__already_answered(defaults):
    assert allowed_hosts("127.0.0.1") == (None, None)


@pytest.mark.parametrize("wildcard", ["0.0.0.0", "::"])
def test_allowed_hosts__wildcard__says_which_names_and_how_to_add_others(defaults, wildcard):
    hosts, notice = allowed_hosts(wildcard)
    assert hosts is None
    assert "localhost, 127.0.0.1, [::1], testserver" in notice
    assert "ALLOWED_HOSTS=" in notice and "400" in notice


def test_allowed_hosts__set_by_the_user__kept_and_a_missing_bind_address_named(
    defaults, monkeypatch
):
    monkeypatch.setenv("ALLOWED_HOSTS", "lab.example.com")
    defaults.ALLOWED_HOSTS = ["lab.example.com"]
    hosts, notice = allowed_hosts("10.0.0.5")
    assert hosts is None
    assert "10.0.0.5" in notice and "lab.example.com" in notice


def test_allowed_hosts__any_host_allowed__nothing_to_say(defaults):
    defaults.ALLOWED_HOSTS = ["*"]
    assert allowed_hosts("0.0.0.0") == (None, None)
