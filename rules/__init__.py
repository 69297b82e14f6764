"""Pure rules of Lab: no Django, no project imports (docs/contract.md)."""
