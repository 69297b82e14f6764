"""Lab's production front: the nginx configuration and the command that runs it (make
serve-production). See docs/operations.md, "The production front"."""
