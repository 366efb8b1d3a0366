"""Shared by every test directory (each has its own conftest.py besides): the fixtures of
real local services, ``kafka_bootstrap`` and ``postgres_url`` (see ``infra_fixtures.py``)."""

pytest_plugins = ["infra_fixtures"]
