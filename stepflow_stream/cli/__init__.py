"""The ``stepflow-stream`` command line."""
