"""daqakd adapter for nncf. Registered through the `daqakd` entry point (see pyproject.toml)."""
