"""Plugins: where component calls go (builtin, mock, and the HTTP and Kafka plugins later)."""
