"""daqakd adapter for brevitas. Registered through the `daqakd` entry point (see pyproject.toml)."""
