"""Journal adapters: where events are kept (memory, SQLite), and their Avro encoding."""
