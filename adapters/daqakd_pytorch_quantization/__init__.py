"""daqakd adapter for pytorch_quantization. Registered through the `daqakd` entry point (see pyproject.toml)."""
