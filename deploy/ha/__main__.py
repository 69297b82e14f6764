"""python -m deploy.ha up|down|status|drill

    up       install what is missing (apt-get patroni etcd-server), start etcd and a primary
             with a synchronous standby on loopback, create and migrate the `lab` database,
             and print Lab's DATABASE_URL as the last line
    down     stop the cluster and remove its folder
    status   the members, their roles and lag
    drill    the failover drill on a cluster of its own (free ports, removed afterwards):
             Lab behind its production front under load, the primary's postmaster killed,
             then a planned switchover; prints one JSON object as the last line

The cluster's folder is $LAB_HA_DIR (default /tmp/lab-ha-<uid>); its ports are $LAB_HA_PORTS
(default 5440,5441,8010,8011,2390,2391: PostgreSQL x2, Patroni REST x2, etcd client and peer).
"""

import argparse
import json
import os
import sys
from pathlib import Path

from deploy.ha.cluster import Cluster, ClusterError, Ports

# How the drill's Lab reaches the primary; the first is what `make ha-up` prints.
ROUTES = ("multi-host", "haproxy")


def _cluster() -> Cluster:
    ports = Ports.parse(os.environ["LAB_HA_PORTS"]) if os.environ.get("LAB_HA_PORTS") else None
    return Cluster(ports=ports)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.ha", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=("up", "down", "status", "drill"))
    parser.add_argument(
        "--keep", action="store_true", help="drill: leave its cluster running (for a look)"
    )
    parser.add_argument(
        "--route",
        choices=ROUTES,
        default=ROUTES[0],
        help="drill: how Lab finds the primary: libpq's multi-host URL (what Lab ships) or "
        "HAProxy checking Patroni's REST API (measured for comparison, docs/scaling.md §7)",
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            cluster = _cluster()
            cluster.up()
            print(cluster.status(), file=sys.stderr)
            print(f"DATABASE_URL={cluster.database_url}")
        elif args.command == "down":
            cluster = _cluster()
            cluster.down()
            print(f"stopped; removed {cluster.home}", file=sys.stderr)
        elif args.command == "status":
            cluster = _cluster()
            print(cluster.status())
            return 0 if cluster.running() else 1
        else:
            from deploy.ha.drill import run_drill

            report = run_drill(keep=args.keep, route=args.route)
            print(json.dumps(report["summary"]))
            return 0 if report["passed"] else 1
    except ClusterError as error:
        print(f"deploy.ha {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.exit(main())
