import pytest

from stepflow_stream.core.paths import PathSyntaxError, parse_path

DOC = {"a": {"b": [10, 20, {"c": "deep"}]}, "odd key": 1, "list": [{"x": 1}, {"x": 2}]}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a", {"b": [10, 20, {"c": "deep"}]}),
        ("$", DOC),
        ("$.a.b[0]", 10),
        ("$.a.b[-1].c", "deep"),
        ("$['odd key']", 1),
        ('$["a"]["b"][1]', 20),
        ("$.list[*].x", [1, 2]),
        ("$.missing", None),
        ("$.a.b[7]", None),
        ("$.a.b.c", None),
        ("odd key", 1),
    ],
)
def test_select(path: str, expected: object) -> None:
    assert parse_path(path).select(DOC) == expected


@pytest.mark.parametrize("path", ["$.", "$[", "$.a[x]", "$..a", "$.a['b"])
def test_bad_paths_name_the_character(path: str) -> None:
    with pytest.raises(PathSyntaxError, match="at character"):
        parse_path(path)
