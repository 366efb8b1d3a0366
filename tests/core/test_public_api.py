"""The public API is what ``stepflow_stream.__all__`` lists: guard it against accidents."""

import stepflow_stream


def test_public_api_is_exactly_the_documented_names() -> None:
    assert sorted(stepflow_stream.__all__) == [
        "ComponentError", "ConfigError", "ErrorCode", "ErrorInfo", "Flow", "FlowError",
        "FlowResult", "InputError", "JournalError", "RunNotFoundError", "StepflowError",
        "UserInputError", "__version__", "parse_flow", "parse_flow_text",
    ]
    for name in stepflow_stream.__all__:
        assert hasattr(stepflow_stream, name), name


def test_every_error_says_whether_it_is_retryable() -> None:
    errors = [stepflow_stream.FlowError("x"), stepflow_stream.ComponentError("C", "m"),
              stepflow_stream.ComponentError("C", "m", retryable=False)]
    assert [e.retryable for e in errors] == [False, True, False]
    assert all(isinstance(e, stepflow_stream.StepflowError) for e in errors)
