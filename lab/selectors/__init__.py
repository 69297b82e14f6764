"""Reads, one module per resource. Every lookup is scoped to the tenant, so another
tenant's object answers 404 exactly like one that does not exist."""
