"""Built-in KD loss components and presets."""
