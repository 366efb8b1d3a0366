"""Memory-class components (routed ``/data/...``): large tables travel as blobs, not as step
inputs and outputs.

A *table* is ``{"columns": [name, ...], "rows": [[value, ...], ...]}``. ``load_dataset``
generates a sales table (50,000 rows by default, the same rows for the same seed), stores it
with ``put_blob`` and returns only its blob id; ``aggregate`` reads a table blob with
``get_blob``, groups it, and returns a summary, with the full result stored as another table
blob when it has more groups than fit inline (so it can be aggregated again).

Blob ids are content hashes, so the same data gives the same id in every run. Serve with::

    stepflow-stream serve-components examples.components.memory_server:server --port 8102
"""

from __future__ import annotations

import random
from typing import Annotated, Any

import msgspec

from stepflow_stream.sdk import ComponentError, ComponentServer, RpcErrorCode, SyncContext

# Each execution holds a whole table in memory: few at a time.
server = ComponentServer("memory", max_concurrency=4)

SALES_COLUMNS = ["day", "region", "product", "channel", "units", "unit_price", "revenue"]
REGIONS = {"north": 0.30, "east": 0.25, "west": 0.20, "south": 0.15, "central": 0.10}
"""Regions and the share of orders each gets."""
PRODUCTS = {
    "widget": 4.50,
    "gadget": 12.00,
    "gizmo": 27.50,
    "doohickey": 8.25,
    "sprocket": 2.75,
    "flange": 15.00,
    "valve": 33.00,
    "bracket": 6.40,
}
"""Products and their list price; each order's price is within 10% of it."""
CHANNELS = ["online", "store", "partner"]

Table = dict[str, Any]


# Pure table functions -----------------------------------------------------------------------


def sales_table(rows: int, seed: int) -> Table:
    """A table of ``rows`` sales orders over one year, determined by ``seed``."""
    rng = random.Random(seed)
    regions = list(REGIONS)
    weights = list(REGIONS.values())
    products = list(PRODUCTS.items())
    data = []
    for _ in range(rows):
        region = rng.choices(regions, weights)[0]
        product, list_price = products[rng.randrange(len(products))]
        channel = CHANNELS[rng.randrange(len(CHANNELS))]
        units = 1 + int(rng.expovariate(0.25)) % 20
        price = round(list_price * rng.uniform(0.9, 1.1), 2)
        day = rng.randint(1, 365)
        data.append([day, region, product, channel, units, price, round(units * price, 2)])
    return {"columns": list(SALES_COLUMNS), "rows": data}


class Group(msgspec.Struct):
    """One group of an aggregation."""

    key: dict[str, Any]
    """The group-by columns and their values."""
    count: int
    sum: dict[str, float]
    mean: dict[str, float]


def group_table(table: Table, group_by: list[str], measures: list[str]) -> list[Group]:
    """Count, sum and mean of each measure per distinct value of the ``group_by`` columns,
    ordered by key. Raises :class:`ComponentError` (INVALID_INPUT) for a column the table
    lacks or a measure value that is not a number."""
    columns, rows = _checked_table(table)
    keys = [_column(columns, name) for name in group_by]
    values = [_column(columns, name) for name in measures]
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        key = tuple(row[i] for i in keys)
        try:
            totals = groups.get(key)
        except TypeError:  # a list or object can't be a key
            raise _invalid(f"a group-by value is not a scalar: {key!r}") from None
        if totals is None:
            totals = groups[key] = [0] * (len(values) + 1)
        totals[0] += 1
        for slot, i in enumerate(values, start=1):
            try:
                totals[slot] += row[i]
            except TypeError:
                raise _invalid(
                    f"column '{measures[slot - 1]}' holds {row[i]!r}, which is not a number"
                ) from None
    result = []
    for key in sorted(groups, key=_sort_key):
        count, *sums = groups[key]
        result.append(
            Group(
                key=dict(zip(group_by, key, strict=True)),
                count=count,
                sum={name: round(total, 2) for name, total in zip(measures, sums, strict=True)},
                mean={
                    name: round(total / count, 4)
                    for name, total in zip(measures, sums, strict=True)
                },
            )
        )
    return result


def groups_as_table(groups: list[Group], group_by: list[str], measures: list[str]) -> Table:
    """Groups as a table: the key columns, ``count``, then ``sum_<m>`` and ``mean_<m>``."""
    columns = [
        *group_by,
        "count",
        *(f"sum_{name}" for name in measures),
        *(f"mean_{name}" for name in measures),
    ]
    rows = [
        [
            *group.key.values(),
            group.count,
            *(group.sum[name] for name in measures),
            *(group.mean[name] for name in measures),
        ]
        for group in groups
    ]
    return {"columns": columns, "rows": rows}


def _checked_table(table: Any) -> tuple[list[str], list[list[Any]]]:
    if (
        not isinstance(table, dict)
        or not isinstance(table.get("columns"), list)
        or not isinstance(table.get("rows"), list)
    ):
        raise _invalid("the dataset is not a table {columns: [...], rows: [[...], ...]}")
    width = len(table["columns"])
    for index, row in enumerate(table["rows"]):
        if not isinstance(row, list) or len(row) != width:
            raise _invalid(f"row {index} of the dataset does not have {width} values")
    return table["columns"], table["rows"]


def _column(columns: list[str], name: str) -> int:
    if name not in columns:
        raise _invalid(f"the dataset has no column '{name}' (it has {', '.join(columns)})")
    return columns.index(name)


def _sort_key(key: tuple[Any, ...]) -> tuple[tuple[int, Any], ...]:
    # Numbers before text, so mixed columns sort without a TypeError.
    return tuple((0, value) if isinstance(value, int | float) else (1, str(value)) for value in key)


def _invalid(message: str) -> ComponentError:
    return ComponentError(message, code=RpcErrorCode.INVALID_INPUT, retryable=False)


# Components ---------------------------------------------------------------------------------


class LoadDatasetInput(msgspec.Struct, forbid_unknown_fields=True):
    rows: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 50_000
    seed: int = 7


class Dataset(msgspec.Struct):
    dataset: str
    """The blob id of the table."""
    rows: int
    columns: list[str]


@server.component(name="load_dataset")
def load_dataset(input: LoadDatasetInput, context: SyncContext) -> Dataset:
    """Generate the sales table for ``seed`` and store it as a blob."""
    table = sales_table(input.rows, input.seed)
    blob_id = context.put_blob(table)
    return Dataset(dataset=blob_id, rows=input.rows, columns=table["columns"])


class AggregateInput(msgspec.Struct, forbid_unknown_fields=True):
    dataset: str
    """The blob id of a table."""
    group_by: list[str]
    measures: Annotated[list[str], msgspec.Meta(min_length=1)]
    order_by: str | None = None
    """The measure whose sum ranks ``top``; the first measure by default."""
    top: Annotated[int, msgspec.Meta(ge=0)] = 5
    inline_limit: Annotated[int, msgspec.Meta(ge=0)] = 50
    """More groups than this are stored as a blob instead of returned in ``result``."""


class Totals(msgspec.Struct):
    count: int
    sum: dict[str, float]


class Aggregate(msgspec.Struct):
    dataset: str
    rows: int
    groups: int
    totals: Totals
    top: list[Group]
    """The groups with the largest sum of ``order_by``, largest first."""
    result: list[Group] | None
    """Every group, ordered by key, when there are at most ``inline_limit``."""
    result_blob: str | None
    """Otherwise the blob id of every group as a table (see :func:`groups_as_table`)."""


@server.component(name="aggregate")
def aggregate(input: AggregateInput, context: SyncContext) -> Aggregate:
    """Group a table blob and report counts, sums and means of the measures."""
    order_by = input.order_by or input.measures[0]
    if order_by not in input.measures:
        raise _invalid(f"order_by '{order_by}' is not one of the measures")
    table = context.get_blob(input.dataset)
    groups = group_table(table, input.group_by, input.measures)
    rows = sum(group.count for group in groups)
    totals = Totals(
        count=rows,
        sum={
            name: round(sum(group.sum[name] for group in groups), 2) for name in input.measures
        },
    )
    # sorted() is stable: equal sums stay in key order.
    top = sorted(groups, key=lambda group: -group.sum[order_by])[: input.top]
    inline = len(groups) <= input.inline_limit
    result_blob = None
    if not inline:
        result_blob = context.put_blob(groups_as_table(groups, input.group_by, input.measures))
    return Aggregate(
        dataset=input.dataset,
        rows=rows,
        groups=len(groups),
        totals=totals,
        top=top,
        result=groups if inline else None,
        result_blob=result_blob,
    )
