"""Assembly above the layers: the worker, the embedded stack, the migration runner."""
