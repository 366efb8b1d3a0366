import pytest

from stepflow_stream.core.flow import is_flow_document, parse_flow_text
from stepflow_stream.core.source import JSONKey, parse_document
from stepflow_stream.errors import FlowError

HEADER = "schema: https://stepflow.org/schemas/v1/flow.json\n"


def test_loads_stepflow_flow_with_aliases_and_schemas() -> None:
    flow = parse_flow_text(HEADER + """
name: demo
input_schema: {type: object, required: [x]}
schemas:
  type: object
  properties:
    output: {type: integer}
    steps:
      properties:
        a: {type: object}
steps:
  - id: a
    component: /builtin/noop
    input: {x: {$input: x}}
    on_error: {action: retry, max_retries: 5}
    must_execute: true
output: 1
""", "demo.yaml")
    assert flow.name == "demo"
    assert flow.steps[0].on_error.action == "retry"
    assert flow.steps[0].on_error.max_retries == 5
    assert flow.steps[0].must_execute
    assert flow.input_schema is not None and flow.input_schema.violations({})
    assert flow.output_schema is not None and flow.output_schema.violations("x")
    assert flow.steps[0].output_schema is not None
    assert flow.steps[0].line == 13


def test_unknown_keys_warn_with_line() -> None:
    flow = parse_flow_text(HEADER + "steps: []\nsurprise: 1\noutput: 2\n", "w.yaml")
    assert any("w.yaml:3" in w and "surprise" in w for w in flow.warnings)


def test_flow_id_is_content_address_of_document() -> None:
    a = parse_flow_text("steps: []\noutput: 1\n")
    b = parse_flow_text('{"steps": [], "output": 1}')
    c = parse_flow_text("steps: []\noutput: 2\n")
    assert a.flow_id == b.flow_id != c.flow_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("steps: [\n  {id: a\n", r"bad\.yaml:\d+: malformed YAML"),
        ("steps:\n  - id: a\n    component: /x/y\n    input: {$step: zz}\noutput: 1\n",
         "bad.yaml:2, step 'a': step 'a' references unknown step 'zz'"),
        ("steps:\n  - {id: a, component: /x, input: {$step: b}}\n"
         "  - {id: b, component: /x, input: {$step: a}}\noutput: 1\n",
         "steps '.' and '.' form a cycle"),
        ("steps:\n  - {id: a, component: /x}\n  - {id: a, component: /x}\noutput: 1\n",
         "duplicate step id 'a'"),
        ("steps:\n  - {id: a, component: nope}\n", "'component' is a path starting with '/'"),
        ("steps: []\noutput: {$step: ghost}\n", "the flow output references unknown step 'ghost'"),
        ("steps:\n  - {id: a, component: /x, onError: {action: shrug}}\n",
         "onError action must be"),
        ("steps:\n  - {id: a, component: /x, input: {$if: 1}}\n", "needs a 'then' branch"),
        ("steps: 3\n", "'steps' is a list"),
    ],
)
def test_errors_name_file_line_and_step(text: str, expected: str) -> None:
    with pytest.raises(FlowError, match=expected):
        parse_flow_text(text, "bad.yaml")


def test_cycle_error_names_both_steps() -> None:
    text = ("steps:\n  - {id: a, component: /x, input: {$step: c}}\n"
            "  - {id: b, component: /x, input: {$step: a}}\n"
            "  - {id: c, component: /x, input: {$step: b}}\noutput: 1\n")
    with pytest.raises(FlowError) as info:
        parse_flow_text(text, "cyc.yaml")
    message = str(info.value)
    assert "cycle" in message and "a" in message and "->" in message


def test_mapping_keys_load_as_json_keys() -> None:
    doc = parse_document('behaviors:\n  {input: "a"}: {outcome: success}\n  plain: 1\n')
    behaviors = doc["behaviors"]
    assert behaviors[JSONKey({"input": "a"})] == {"outcome": "success"}
    assert behaviors["plain"] == 1


def test_is_flow_document() -> None:
    assert is_flow_document({"schema": "https://stepflow.org/schemas/v1/flow.json"})
    assert is_flow_document({"steps": []})
    assert not is_flow_document({"plugins": {}})
