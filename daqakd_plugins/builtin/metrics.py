"""Built-in ranking metrics."""
