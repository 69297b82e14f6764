"""Django's PostgreSQL backend, waiting briefly for a primary when none accepts a connection."""
