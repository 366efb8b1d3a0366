"""Journal adapters: where events (memory, SQLite, Postgres) and run state snapshots are kept,
and the Avro encoding of events."""
