"""The decide API's real traffic mix, for locust (FastHttpUser).

    python manage.py seed_benchmark --assignments 30000 > /tmp/seed.json
    LAB_SEED_JSON=/tmp/seed.json locust -f load_tests/locustfile.py --headless \
        -u 20 -r 5 -t 2m --host http://127.0.0.1:8000 --csv /tmp/lab-locust

Deciders (weights per 100 requests): 60 decide for a known unit, 15 decide for a new unit,
20 OFREP single flag, 4 batch of 100 new units, 1 batch of 1000 new units. One operator
(only when an admin token is given) toggles a variant between disabled and enabled every
LAB_TOGGLE_EVERY seconds through the admin API, so the config cache is exercised under load.

Configuration (environment):
- LAB_SEED_JSON: the JSON line printed by `manage.py seed_benchmark` (file path); it
  provides every value below, and an explicit variable wins over it.
- LAB_CLIENT_KEY: the decide client key (`lck_...`), required.
- LAB_ADMIN_TOKEN: an admin API token (`lab_...`) of the product's owner; no operator without.
- LAB_PRODUCT: the product key (default "bench").
- LAB_TOGGLE: "<experiment>/<variant>" the operator toggles (default "exp-c/c2").
- LAB_TOGGLE_EVERY: seconds between toggles (default 5).
- LAB_KNOWN_UNITS, LAB_UNIT_PREFIX, LAB_UNIT_DIGITS: the seeded units `<prefix><n>` with n in
  [0, LAB_KNOWN_UNITS), zero-padded to LAB_UNIT_DIGITS (defaults 0, "bench-", 9). With 0,
  "known" units are units this process decided for earlier.
- LAB_OFREP_FLAG: the experiment OFREP evaluates (default: the first seeded experiment).
- LAB_USER_RPS: when set, each decider is paced at this many requests per second
  (locust's constant_throughput); otherwise deciders send back to back.
- LAB_HOST: the default --host (default http://127.0.0.1:8000).
"""

import itertools
import json
import os
import random
import uuid

from locust import FastHttpUser, constant, constant_throughput, task


def _settings() -> dict:
    seed = {}
    if os.environ.get("LAB_SEED_JSON"):
        with open(os.environ["LAB_SEED_JSON"]) as handle:
            lines = [line for line in handle.read().splitlines() if line.strip()]
        seed = json.loads(lines[-1])
    known = seed.get("known_units", {})
    toggle = seed.get("toggle", {})
    experiments = list(seed.get("experiments", {})) or ["exp-a"]
    env = os.environ.get
    return {
        "client_key": env("LAB_CLIENT_KEY", seed.get("client_key", "")),
        "admin_token": env("LAB_ADMIN_TOKEN", seed.get("admin_token", "")),
        "product": env("LAB_PRODUCT", seed.get("product", "bench")),
        "toggle": env(
            "LAB_TOGGLE", f"{toggle.get('experiment', 'exp-c')}/{toggle.get('variant', 'c2')}"
        ),
        "toggle_every": float(env("LAB_TOGGLE_EVERY", "5")),
        "known_units": int(env("LAB_KNOWN_UNITS", known.get("count", 0))),
        "unit_prefix": env("LAB_UNIT_PREFIX", known.get("prefix", "bench-")),
        "unit_digits": int(env("LAB_UNIT_DIGITS", known.get("digits", 9))),
        "ofrep_flag": env("LAB_OFREP_FLAG", experiments[0]),
        "user_rps": float(env("LAB_USER_RPS", "0")),
        "host": env("LAB_HOST", "http://127.0.0.1:8000"),
    }


SETTINGS = _settings()
RUN = uuid.uuid4().hex[:8]
_sequence = itertools.count()


def new_unit() -> str:
    return f"locust-{RUN}-{next(_sequence)}"


class Decider(FastHttpUser):
    """A production client: decides for units as they come through the line."""

    host = SETTINGS["host"]
    weight = 1
    wait_time = constant_throughput(SETTINGS["user_rps"]) if SETTINGS["user_rps"] else constant(0)

    def on_start(self) -> None:
        if not SETTINGS["client_key"]:
            raise RuntimeError("set LAB_CLIENT_KEY or LAB_SEED_JSON (see the docstring)")
        self.headers = {
            "Authorization": f"Bearer {SETTINGS['client_key']}",
            "Content-Type": "application/json",
        }
        self.seen: list[str] = []

    def known_unit(self) -> str:
        if SETTINGS["known_units"]:
            number = random.randrange(SETTINGS["known_units"])
            return f"{SETTINGS['unit_prefix']}{number:0{SETTINGS['unit_digits']}d}"
        if not self.seen:
            self.decide(new_unit(), "decide new")
        return random.choice(self.seen)

    def decide(self, unit: str, name: str) -> None:
        with self.client.post(
            "/api/v1/decide",
            json={"unit": unit},
            headers=self.headers,
            name=name,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            body = response.json()
            if body.get("unit") != unit or not isinstance(body.get("variants"), dict):
                response.failure(f"unexpected body: {response.text[:200]}")
                return
            if len(self.seen) < 1000:
                self.seen.append(unit)

    @task(60)
    def decide_known(self) -> None:
        self.decide(self.known_unit(), "decide known")

    @task(15)
    def decide_new(self) -> None:
        self.decide(new_unit(), "decide new")

    @task(20)
    def ofrep(self) -> None:
        flag = SETTINGS["ofrep_flag"]
        with self.client.post(
            f"/ofrep/v1/evaluate/flags/{flag}",
            json={"context": {"targetingKey": self.known_unit()}},
            headers=self.headers,
            name="ofrep flag",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif response.json().get("key") != flag:
                response.failure(f"unexpected body: {response.text[:200]}")

    def batch(self, size: int) -> None:
        units = [new_unit() for _ in range(size)]
        with self.client.post(
            "/api/v1/decide/batch",
            json={"units": units},
            headers=self.headers,
            name=f"batch {size}",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            decisions = response.json().get("decisions", [])
            if [d.get("unit") for d in decisions] != units:
                response.failure("the decisions do not match the units, in order")

    @task(4)
    def batch_100(self) -> None:
        self.batch(100)

    @task(1)
    def batch_1000(self) -> None:
        self.batch(1000)


class Operator(FastHttpUser):
    """One operator closing and reopening a variant every few seconds (admin API)."""

    host = SETTINGS["host"]
    fixed_count = 1
    # Without an admin token there is no operator: locust never picks an abstract class.
    abstract = not SETTINGS["admin_token"]
    wait_time = constant(SETTINGS["toggle_every"])

    def on_start(self) -> None:
        experiment, _, variant = SETTINGS["toggle"].partition("/")
        self.path = (
            f"/api/admin/v1/products/{SETTINGS['product']}/experiments/{experiment}"
            f"/variants/{variant}"
        )
        self.headers = {
            "Authorization": f"Bearer {SETTINGS['admin_token']}",
            "Content-Type": "application/json",
        }
        self.statuses = itertools.cycle(["disabled", "enabled"])

    def set_status(self, status: str) -> None:
        with self.client.request(
            "PATCH",
            self.path,
            json={"status": status},
            headers=self.headers,
            name=f"admin variant {status}",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
            elif response.json().get("status") != status:
                response.failure(f"unexpected body: {response.text[:200]}")

    @task
    def toggle(self) -> None:
        self.set_status(next(self.statuses))

    def on_stop(self) -> None:
        self.set_status("enabled")
