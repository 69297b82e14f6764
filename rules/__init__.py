"""Pure rules of Lab: no Django, no project imports (docs/architecture.md)."""
