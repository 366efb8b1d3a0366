"""Turning a failed connection to Kafka or PostgreSQL into one clear, retryable error."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import asyncpg
from aiokafka.errors import KafkaConnectionError, KafkaError

from stepflow_stream.distributed.options import DistributedOptions
from stepflow_stream.errors import ServiceUnavailableError

__all__ = ["reaching_kafka", "reaching_postgres"]


@contextlib.asynccontextmanager
async def reaching_kafka(options: DistributedOptions) -> AsyncIterator[None]:
    try:
        yield
    except (KafkaConnectionError, KafkaError, OSError) as exc:
        raise ServiceUnavailableError(
            f"cannot reach Kafka at {options.bootstrap_servers} (runtime.bootstrapServers): "
            f"{_reason(exc)}"
        ) from None


@contextlib.asynccontextmanager
async def reaching_postgres(options: DistributedOptions) -> AsyncIterator[None]:
    try:
        yield
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise ServiceUnavailableError(
            f"cannot reach PostgreSQL at {_without_password(options.database_url)} "
            f"(stateStore.databaseUrl): {_reason(exc)}"
        ) from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.removeprefix("KafkaConnectionError: ")


def _without_password(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)
