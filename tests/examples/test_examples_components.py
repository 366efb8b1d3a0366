"""The example components called directly, as plain Python (no server, no engine): their
text, table and model logic, their errors, and that the flows use only what they register."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from examples_support import SERVERS, flow_files, load_flow

from examples.components import cpu_server, memory_server, ml_server
from stepflow_stream.core.jsonvalue import JSON, content_id
from stepflow_stream.sdk import ComponentError, RpcErrorCode


class Blobs:
    """A stand-in SyncContext: blobs in a dict, under their content ids."""

    def __init__(self) -> None:
        self.stored: dict[str, JSON] = {}

    def put_blob(self, data: JSON, blob_type: str = "data") -> str:
        blob_id = content_id(data)
        self.stored[blob_id] = data
        return blob_id

    def get_blob(self, blob_id: str) -> JSON:
        return self.stored[blob_id]


class AsyncBlobs(Blobs):
    """A stand-in Context."""

    async def put_blob(self, data: JSON, blob_type: str = "data") -> str:  # type: ignore[override]
        return Blobs.put_blob(self, data, blob_type)

    async def get_blob(self, blob_id: str) -> JSON:  # type: ignore[override]
        return Blobs.get_blob(self, blob_id)


def invalid_input(raised: pytest.ExceptionInfo[ComponentError]) -> bool:
    return raised.value.code == RpcErrorCode.INVALID_INPUT and not raised.value.retryable


# The flows and the servers ------------------------------------------------------------------

ROUTES = {"/python/": "cpu", "/data/": "memory", "/ml/": "ml"}
MODULES = {"cpu": cpu_server, "memory": memory_server, "ml": ml_server}


def test_every_component_a_flow_names_is_registered_on_the_server_its_route_reaches() -> None:
    used = set()
    for path in flow_files():
        for step in load_flow(path).steps:
            prefix = next((p for p in ROUTES if step.component.startswith(p)), None)
            if prefix is None:
                assert step.component.startswith("/builtin/"), step.component
                continue
            server = MODULES[ROUTES[prefix]].server
            name = "/" + step.component.removeprefix(prefix)
            assert name in server.components, f"{path.name}: {step.component}"
            used.add(step.component)
    assert {"/python/slugify", "/data/aggregate", "/ml/classify_table"} <= used


def test_each_module_exposes_a_server_with_its_components() -> None:
    assert {name: module.__name__ for name, module in MODULES.items()} == {
        name: f"examples.components.{module}" for name, module in SERVERS.items()
    }
    assert cpu_server.server.components == ["/tokenize", "/keywords", "/slugify", "/summarize"]
    assert memory_server.server.components == ["/load_dataset", "/aggregate"]
    assert ml_server.server.components == [
        "/predict", "/predict_batch", "/classify_table", "/model_info"
    ]


# cpu_server ---------------------------------------------------------------------------------

TEXT = (
    "The journal keeps every event. A run is a fold of its journal!  Replays rebuild the run; "
    "nothing is lost.\nIsn't that the point? Journals, journals everywhere."
)


def test_words_are_lowercased_and_keep_inner_apostrophes() -> None:
    text = "Isn't it 2 o\u2019clock_now?"
    assert cpu_server.words(text) == ["isn't", "it", "2", "o'clock", "now"]


def test_sentences_split_at_terminal_punctuation_and_collapse_whitespace() -> None:
    assert cpu_server.sentences(TEXT) == [
        "The journal keeps every event.",
        "A run is a fold of its journal!",
        "Replays rebuild the run; nothing is lost.",
        "Isn't that the point?",
        "Journals, journals everywhere.",
    ]
    assert cpu_server.sentences('He said "stop." Then left.') == ['He said "stop."', "Then left."]
    assert cpu_server.sentences("   ") == []


def test_tokenize_counts() -> None:
    tokens = cpu_server.tokenize(cpu_server.TextInput("To be, or not to be."))
    assert tokens.words == ["to", "be", "or", "not", "to", "be"]
    assert tokens.counts == cpu_server.TokenCounts(
        characters=20, words=6, unique_words=4, sentences=1
    )


def test_keywords_rank_by_count_then_first_occurrence_without_stopwords() -> None:
    found = cpu_server.keywords(cpu_server.KeywordsInput(TEXT, top_k=3))
    assert [(k.word, k.count) for k in found.keywords] == [
        ("journal", 2), ("run", 2), ("journals", 2)
    ]
    # "isn't" is a stopword; "nothing" is not.
    assert found.content_words == 16
    assert found.keywords[0].score == round(2 / 16, 4)


def test_keywords_take_extra_stopwords_and_a_minimum_length() -> None:
    found = cpu_server.keywords(
        cpu_server.KeywordsInput(TEXT, top_k=2, min_length=5, stopwords=["Journal", "JOURNALS"])
    )
    assert [k.word for k in found.keywords] == ["keeps", "every"]


def test_keywords_of_a_text_without_content_words() -> None:
    found = cpu_server.keywords(cpu_server.KeywordsInput("It is what it is."))
    assert found.keywords == [] and found.content_words == 0


@pytest.mark.parametrize(
    ("text", "max_length", "expected"),
    [
        ("Héllo, Wörld!", 80, "hello-world"),
        ("  --Already--slugged--  ", 80, "already-slugged"),
        ("one two three four", 9, "one-two"),
        ("Supercalifragilistic", 5, "super"),
        ("¿¡!?", 80, ""),
    ],
)
def test_slug(text: str, max_length: int, expected: str) -> None:
    assert cpu_server.slug(text, max_length) == expected


def test_slugify_with_another_separator() -> None:
    result = cpu_server.slugify(cpu_server.SlugInput("Q3 Sales Report", separator="_"))
    assert result.slug == "q3_sales_report"


def test_summarize_picks_the_best_sentences_in_text_order() -> None:
    summary = cpu_server.summarize(cpu_server.SummarizeInput(TEXT, sentences=2))
    assert summary.total_sentences == 5
    assert summary.indices == sorted(summary.indices) and len(summary.indices) == 2
    assert summary.sentences == [cpu_server.sentences(TEXT)[i] for i in summary.indices]
    assert summary.summary == " ".join(summary.sentences)
    # The sentence made of the most frequent words wins a one-sentence summary.
    best = cpu_server.summarize(cpu_server.SummarizeInput(TEXT, sentences=1))
    assert best.sentences == ["Journals, journals everywhere."]


def test_summarize_asks_for_more_sentences_than_there_are() -> None:
    summary = cpu_server.summarize(cpu_server.SummarizeInput("Only one.", sentences=5))
    assert summary.sentences == ["Only one."] and summary.indices == [0]
    empty = cpu_server.summarize(cpu_server.SummarizeInput(""))
    assert empty.summary == "" and empty.total_sentences == 0


def test_inputs_are_validated_by_their_types() -> None:
    with pytest.raises(msgspec.ValidationError, match="sentences"):
        msgspec.convert({"text": "x", "sentences": 0}, cpu_server.SummarizeInput)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"text": "x", "topk": 3}, cpu_server.KeywordsInput)


# memory_server ------------------------------------------------------------------------------


def test_sales_table_is_determined_by_its_seed() -> None:
    table = memory_server.sales_table(2_000, seed=3)
    assert table == memory_server.sales_table(2_000, seed=3)
    assert table != memory_server.sales_table(2_000, seed=4)
    assert table["columns"] == memory_server.SALES_COLUMNS
    assert len(table["rows"]) == 2_000
    for day, region, product, channel, units, price, revenue in table["rows"]:
        assert 1 <= day <= 365 and 1 <= units <= 20
        assert region in memory_server.REGIONS and channel in memory_server.CHANNELS
        list_price = memory_server.PRODUCTS[product]
        assert abs(price - list_price) <= list_price / 10 + 0.005  # rounded to cents
        assert revenue == round(units * price, 2)


def test_group_table_counts_sums_and_means_in_key_order() -> None:
    table = {
        "columns": ["shop", "day", "units", "price"],
        "rows": [["b", 1, 2, 1.5], ["a", 2, 1, 2.0], ["b", 1, 4, 0.5], ["a", 1, 3, 1.0]],
    }
    groups = memory_server.group_table(table, ["shop"], ["units", "price"])
    assert groups == [
        memory_server.Group({"shop": "a"}, 2, {"units": 4, "price": 3.0},
                            {"units": 2.0, "price": 1.5}),
        memory_server.Group({"shop": "b"}, 2, {"units": 6, "price": 2.0},
                            {"units": 3.0, "price": 1.0}),
    ]
    by_two = memory_server.group_table(table, ["day", "shop"], ["units"])
    assert [g.key for g in by_two] == [
        {"day": 1, "shop": "a"}, {"day": 1, "shop": "b"}, {"day": 2, "shop": "a"}
    ]
    everything = memory_server.group_table(table, [], ["units"])
    assert everything == [memory_server.Group({}, 4, {"units": 10}, {"units": 2.5})]


@pytest.mark.parametrize(
    ("table", "group_by", "measures", "message"),
    [
        ({"columns": ["a"], "rows": [[1]]}, ["b"], ["a"], "no column 'b'"),
        ({"columns": ["a"], "rows": [[1]]}, ["a"], ["c"], "no column 'c'"),
        ({"columns": ["a", "b"], "rows": [["x", "7"]]}, ["a"], ["b"], "'7', which is not"),
        ({"columns": ["a", "b"], "rows": [["x"]]}, ["a"], ["b"], "row 0"),
        ([["a"], [1]], ["a"], ["a"], "not a table"),
        ({"columns": ["a", "b"], "rows": [[[1], 2]]}, ["a"], ["b"], "not a scalar"),
    ],
)
def test_group_table_rejects_what_it_cannot_group(
    table: Any, group_by: list[str], measures: list[str], message: str
) -> None:
    with pytest.raises(ComponentError, match=message) as raised:
        memory_server.group_table(table, group_by, measures)
    assert invalid_input(raised)


def test_load_dataset_stores_the_table_as_a_blob() -> None:
    blobs = Blobs()
    loaded = memory_server.load_dataset(memory_server.LoadDatasetInput(rows=500, seed=1), blobs)
    assert loaded.rows == 500 and loaded.columns == memory_server.SALES_COLUMNS
    assert blobs.stored[loaded.dataset] == memory_server.sales_table(500, 1)


def test_aggregate_returns_small_results_inline() -> None:
    blobs = Blobs()
    dataset = memory_server.load_dataset(memory_server.LoadDatasetInput(rows=3_000), blobs)
    request = memory_server.AggregateInput(
        dataset.dataset, ["channel"], ["units", "revenue"], order_by="revenue", top=1
    )
    result = memory_server.aggregate(request, blobs)
    assert result.groups == 3 and result.rows == 3_000 and result.result_blob is None
    assert result.result is not None
    assert [g.key["channel"] for g in result.result] == sorted(memory_server.CHANNELS)
    assert result.top == [max(result.result, key=lambda g: g.sum["revenue"])]
    assert result.totals.count == 3_000
    assert result.totals.sum["units"] == sum(g.sum["units"] for g in result.result)
    assert len(blobs.stored) == 1


def test_aggregate_stores_a_large_result_as_a_table_that_aggregates_again() -> None:
    blobs = Blobs()
    dataset = memory_server.load_dataset(memory_server.LoadDatasetInput(rows=3_000), blobs)
    daily = memory_server.aggregate(
        memory_server.AggregateInput(dataset.dataset, ["region", "day"], ["units"],
                                     inline_limit=10),
        blobs,
    )
    assert daily.result is None and daily.result_blob is not None
    stored = blobs.stored[daily.result_blob]
    assert isinstance(stored, dict)
    assert stored["columns"] == ["region", "day", "count", "sum_units", "mean_units"]
    assert len(stored["rows"]) == daily.groups > 10
    again = memory_server.aggregate(
        memory_server.AggregateInput(daily.result_blob, ["region"], ["count", "sum_units"]),
        blobs,
    )
    direct = memory_server.group_table(blobs.stored[dataset.dataset], ["region"], ["units"])
    assert again.result is not None
    assert [g.sum["sum_units"] for g in again.result] == [g.sum["units"] for g in direct]
    assert [g.sum["count"] for g in again.result] == [g.count for g in direct]


def test_aggregate_order_by_must_be_a_measure() -> None:
    request = memory_server.AggregateInput("x", ["region"], ["units"], order_by="revenue")
    with pytest.raises(ComponentError, match="order_by") as raised:
        memory_server.aggregate(request, Blobs())
    assert invalid_input(raised)


# ml_server ----------------------------------------------------------------------------------

SETOSA, VERSICOLOR, VIRGINICA = [5.1, 3.5, 1.4, 0.2], [5.9, 2.8, 4.3, 1.3], [6.7, 3.0, 5.2, 2.3]


def test_the_model_is_trained_on_iris_and_scores_well_on_its_held_out_split() -> None:
    info = ml_server.model_info()
    assert info.classes == ["setosa", "versicolor", "virginica"]
    assert info.feature_names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert (info.train_size, info.test_size) == (105, 45)
    assert 0.85 <= info.accuracy <= 1.0


def test_training_is_deterministic() -> None:
    again = ml_server.train()
    assert again.accuracy == ml_server.MODEL.accuracy
    assert again.predict([VERSICOLOR]) == ml_server.MODEL.predict([VERSICOLOR])


def test_predict_gives_the_class_and_probabilities() -> None:
    for features, label in [(SETOSA, "setosa"), (VERSICOLOR, "versicolor"),
                            (VIRGINICA, "virginica")]:
        prediction = ml_server.predict(ml_server.PredictInput(features))
        assert prediction.label == label
        assert ml_server.MODEL.classes[prediction.class_index] == label
        assert list(prediction.probabilities) == ml_server.MODEL.classes
        assert abs(sum(prediction.probabilities.values()) - 1) < 1e-3
        assert max(prediction.probabilities.values()) == prediction.probabilities[label]


def test_predict_batch_counts_every_class() -> None:
    batch = ml_server.predict_batch(ml_server.BatchInput([SETOSA, SETOSA, VIRGINICA]))
    assert [p.label for p in batch.predictions] == ["setosa", "setosa", "virginica"]
    assert batch.counts == {"setosa": 2, "versicolor": 0, "virginica": 1}
    assert ml_server.predict_batch(ml_server.BatchInput([])).counts == {
        "setosa": 0, "versicolor": 0, "virginica": 0
    }


def test_predict_needs_four_features() -> None:
    with pytest.raises(msgspec.ValidationError, match="length >= 4"):
        msgspec.convert({"features": [1, 2, 3]}, ml_server.PredictInput)
    with pytest.raises(ComponentError, match="row 1 has 3 features") as raised:
        ml_server.MODEL.predict([SETOSA, [1.0, 2.0, 3.0]])
    assert invalid_input(raised)


async def test_classify_table_adds_a_label_column_in_a_new_blob() -> None:
    blobs = AsyncBlobs()
    table = {
        "columns": ["id", "petal_width", "petal_length", "sepal_width", "sepal_length"],
        "rows": [[1, 0.2, 1.4, 3.5, 5.1], [2, 2.3, 5.2, 3.0, 6.7]],
    }
    dataset = await blobs.put_blob(table)
    result = await ml_server.classify_table(
        ml_server.ClassifyTableInput(dataset, label_column="kind"), blobs
    )
    assert result.rows == 2
    assert result.counts == {"setosa": 1, "versicolor": 0, "virginica": 1}
    assert blobs.stored[result.dataset] == {
        "columns": [*table["columns"], "kind"],
        "rows": [[1, 0.2, 1.4, 3.5, 5.1, "setosa"], [2, 2.3, 5.2, 3.0, 6.7, "virginica"]],
    }


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"columns": ["sepal_length"], "rows": [[1.0]]}, "no column sepal_width"),
        ({"columns": ml_server.MODEL.feature_names, "rows": [["a", 1, 1, 1]]}, "not a number"),
        ("just text", "not a table"),
    ],
)
async def test_classify_table_rejects_what_it_cannot_read(table: JSON, message: str) -> None:
    blobs = AsyncBlobs()
    dataset = await blobs.put_blob(table)
    with pytest.raises(ComponentError, match=message) as raised:
        await ml_server.classify_table(ml_server.ClassifyTableInput(dataset), blobs)
    assert invalid_input(raised)
