"""ML-class components (routed ``/ml/...``): inference with a scikit-learn model.

The model is trained once, when the module is imported (so before the server announces its
port): a standardizing logistic regression on the iris data set that ships inside
scikit-learn (``load_iris``; nothing is downloaded), with a fixed, stratified train/test split,
so every server process holds the same model and reports the same accuracy.

``predict`` classifies one flower, ``predict_batch`` many, ``classify_table`` every row of a
table blob (adding a label column, stored as a new blob), and ``model_info`` describes the
model. Serve with::

    stepflow-stream serve-components examples.components.ml_server:server --port 8103
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from stepflow_stream.sdk import ComponentError, ComponentServer, Context, RpcErrorCode

server = ComponentServer("ml", max_concurrency=16)

RANDOM_STATE = 42
TEST_SIZE = 0.3


@dataclass(frozen=True)
class TrainedModel:
    """A fitted classifier and what is known about it."""

    pipeline: Pipeline
    classes: list[str]
    feature_names: list[str]
    accuracy: float
    """Accuracy on the held-out split."""
    train_size: int
    test_size: int

    def predict(self, rows: list[list[float]]) -> list[Prediction]:
        """The class and class probabilities of each row (``len(feature_names)`` numbers)."""
        width = len(self.feature_names)
        for index, row in enumerate(rows):
            if len(row) != width:
                raise ComponentError(
                    f"row {index} has {len(row)} features; the model takes {width} "
                    f"({', '.join(self.feature_names)})",
                    code=RpcErrorCode.INVALID_INPUT,
                    retryable=False,
                )
        if not rows:
            return []
        probabilities = self.pipeline.predict_proba(np.asarray(rows, dtype=float))
        predictions = []
        for row in probabilities:
            best = int(np.argmax(row))
            predictions.append(
                Prediction(
                    label=self.classes[best],
                    class_index=best,
                    probabilities={
                        name: round(float(p), 4) for name, p in zip(self.classes, row, strict=True)
                    },
                )
            )
        return predictions


def train() -> TrainedModel:
    """Fit the iris model; deterministic (fixed split and solver)."""
    iris = load_iris()
    x_train, x_test, y_train, y_test = train_test_split(
        iris.data,
        iris.target,
        test_size=TEST_SIZE,
        random_state=RANDOM_STATE,
        stratify=iris.target,
    )
    pipeline = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=1000, random_state=RANDOM_STATE)
    )
    pipeline.fit(x_train, y_train)
    return TrainedModel(
        pipeline=pipeline,
        classes=[str(name) for name in iris.target_names],
        # "petal length (cm)" -> "petal_length"
        feature_names=[name.removesuffix(" (cm)").replace(" ", "_") for name in iris.feature_names],
        accuracy=round(float(pipeline.score(x_test, y_test)), 4),
        train_size=len(x_train),
        test_size=len(x_test),
    )


class Prediction(msgspec.Struct):
    label: str
    class_index: int
    probabilities: dict[str, float]
    """Per class, rounded to 4 places."""


MODEL = train()


# Components ---------------------------------------------------------------------------------


Features = Annotated[list[float], msgspec.Meta(min_length=4, max_length=4)]


class PredictInput(msgspec.Struct, forbid_unknown_fields=True):
    features: Features
    """sepal_length, sepal_width, petal_length, petal_width, in cm."""


@server.component(name="predict")
def predict(input: PredictInput) -> Prediction:
    """The species of one iris flower from its four measurements (cm)."""
    return MODEL.predict([input.features])[0]


class BatchInput(msgspec.Struct, forbid_unknown_fields=True):
    rows: list[Features]


class BatchPredictions(msgspec.Struct):
    predictions: list[Prediction]
    counts: dict[str, int]
    """Rows per predicted class, every class listed."""


@server.component(name="predict_batch")
def predict_batch(input: BatchInput) -> BatchPredictions:
    """The species of each row of measurements."""
    predictions = MODEL.predict(input.rows)
    return BatchPredictions(predictions=predictions, counts=_counts(predictions))


class ClassifyTableInput(msgspec.Struct, forbid_unknown_fields=True):
    dataset: str
    """The blob id of a table ``{columns, rows}`` holding the feature columns."""
    features: list[str] = msgspec.field(default_factory=lambda: list(MODEL.feature_names))
    """The columns to read the model's features from, in the model's order."""
    label_column: str = "species"


class ClassifiedTable(msgspec.Struct):
    dataset: str
    """The blob id of the input table with ``label_column`` added."""
    rows: int
    counts: dict[str, int]


@server.component(name="classify_table")
async def classify_table(input: ClassifyTableInput, context: Context) -> ClassifiedTable:
    """Label every row of a table blob and store the labelled table as a new blob."""
    table: Any = await context.get_blob(input.dataset)
    if not isinstance(table, dict) or not isinstance(table.get("rows"), list):
        raise _invalid("the dataset is not a table {columns: [...], rows: [[...], ...]}")
    columns = table.get("columns") or []
    missing = [name for name in input.features if name not in columns]
    if missing:
        raise _invalid(f"the dataset has no column {', '.join(missing)} (it has {columns})")
    picks = [columns.index(name) for name in input.features]
    try:
        features = [[float(row[i]) for i in picks] for row in table["rows"]]
    except (TypeError, ValueError, IndexError) as exc:
        raise _invalid(f"a feature value is not a number: {exc}") from None
    predictions = MODEL.predict(features)
    labelled = {
        "columns": [*columns, input.label_column],
        "rows": [
            [*row, prediction.label]
            for row, prediction in zip(table["rows"], predictions, strict=True)
        ],
    }
    return ClassifiedTable(
        dataset=await context.put_blob(labelled),
        rows=len(predictions),
        counts=_counts(predictions),
    )


class ModelInfo(msgspec.Struct):
    model: str
    dataset: str
    classes: list[str]
    feature_names: list[str]
    accuracy: float
    """On the held-out split, rounded to 4 places."""
    train_size: int
    test_size: int


@server.component(name="model_info")
def model_info() -> ModelInfo:
    """What the served model is and how well it did on its held-out split."""
    steps = " -> ".join(type(step).__name__ for _, step in MODEL.pipeline.steps)
    return ModelInfo(
        model=steps,
        dataset="iris (sklearn.datasets.load_iris)",
        classes=MODEL.classes,
        feature_names=MODEL.feature_names,
        accuracy=MODEL.accuracy,
        train_size=MODEL.train_size,
        test_size=MODEL.test_size,
    )


def _counts(predictions: list[Prediction]) -> dict[str, int]:
    counted = Counter(prediction.label for prediction in predictions)
    return {name: counted[name] for name in MODEL.classes}


def _invalid(message: str) -> ComponentError:
    return ComponentError(message, code=RpcErrorCode.INVALID_INPUT, retryable=False)
