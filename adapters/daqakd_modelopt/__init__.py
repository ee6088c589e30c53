"""daqakd adapter for modelopt. Registered through the `daqakd` entry point (see pyproject.toml)."""
