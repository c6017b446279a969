"""pydantic request schemas: every body is validated here before any handler logic runs."""
