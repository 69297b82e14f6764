"""Lab on a Patroni cluster: `python -m deploy.ha up|down|status|drill` (docs/operations.md,
"High availability")."""
