"""Admin plane: REST API, persistence and operators' console."""
