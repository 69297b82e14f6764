"""The wiring of Lab: settings, URLs, the WSGI application and the HTTP plumbing every API
shares (JSON errors, request ids, the Host check, logs). It may import every other package;
no package of the domain or the APIs imports its wiring (docs/architecture.md)."""
