"""The Kafka building blocks of the distributed runtime: topic names and their creation, the
record format of commands and journal events, and reading and writing the journal topic."""
