"""Loading stepflow-config.yml (stepflow_stream.config.loader and model)."""

from __future__ import annotations

from pathlib import Path

import pytest

import stepflow_stream.config as config_package
from stepflow_stream.config import (
    Config,
    PluginConfig,
    RetryConfig,
    RuntimeConfig,
    StateStoreConfig,
    default_config,
    expand_env,
    find_config_file,
    load_config,
    parse_config,
    parse_config_document,
)
from stepflow_stream.core.source import JSONKey
from stepflow_stream.errors import ConfigError, Location

SPEC_CONFIG = """\
plugins:
  builtin: {type: builtin}
  cpu_components: {type: stepflow, url: "http://cpu-components-lb:8080"}
  mock:
    type: mock
    components:
      /one_output:
        input_schema: {type: object}
        output_schema: {type: object}
        behaviors:                      # keyed by exact input; keys may be YAML mappings
          {input: "a"}: {outcome: success, result: {output: b}}
routes:
  "/python/{*component}": [{plugin: cpu_components}]
  "/mock": [{plugin: mock}]             # a bare prefix is the same as "/mock/{*component}"
  "/{*component}": [{plugin: builtin}]
stateStore: {type: sqlite, databaseUrl: "sqlite:.stepflow/state.db"}
retry: {transportMaxRetries: 3, backoff: {type: exponential, minDelayMs: 100, maxDelayMs: 10000}}
"""


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(text, "cfg.yml", env or {})


def config_error(text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse(text, env)
    return caught.value


def test_public_names() -> None:
    assert sorted(config_package.__all__) == sorted(set(config_package.__all__))
    for name in config_package.__all__:
        assert hasattr(config_package, name), name


# The spec's example -------------------------------------------------------------------------


def test_spec_example() -> None:
    config = parse(SPEC_CONFIG)
    assert config.source == "cfg.yml"
    assert config.plugins["builtin"] == PluginConfig("builtin", "builtin", {})
    assert config.plugins["cpu_components"] == PluginConfig(
        "cpu_components", "stepflow", {"url": "http://cpu-components-lb:8080"}
    )
    mock = config.plugins["mock"]
    assert mock.type == "mock"
    behaviors = mock.settings["components"]["/one_output"]["behaviors"]
    assert behaviors[JSONKey({"input": "a"})] == {"outcome": "success", "result": {"output": "b"}}
    assert config.routes.patterns == ("/python/{*component}", "/mock", "/{*component}")
    assert config.routes.route("/mock/one_output", {"input": "a"}) == ("mock", "/one_output")
    assert config.routes.route("/python/udf", {}) == ("cpu_components", "/udf")
    assert config.routes.route("/builtin/eval", {}) == ("builtin", "/builtin/eval")
    assert config.state_store == StateStoreConfig("sqlite", "sqlite:.stepflow/state.db")
    assert config.retry == RetryConfig(3, 100, 10000, "exponential")
    assert config.runtime == RuntimeConfig("embedded", {})
    assert config.max_concurrency is None
    assert config.warnings == ()


def test_defaults_when_sections_are_absent() -> None:
    config = parse("plugins: {b: {type: builtin}}\nroutes: {/builtin: [{plugin: b}]}\n")
    assert config.state_store == StateStoreConfig("sqlite", None)
    assert config.retry == RetryConfig()
    assert config.runtime == RuntimeConfig()
    assert config.max_concurrency is None


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_empty_config_routes_builtins(text: str) -> None:
    config = parse(text)
    assert list(config.plugins) == ["builtin"]
    assert config.routes.route("/builtin/eval", {}) == ("builtin", "/eval")


def test_config_without_plugins_and_routes_keeps_the_default_routes() -> None:
    config = parse("stateStore: {type: inMemory}\n")
    assert config.state_store == StateStoreConfig("inMemory", None)
    assert config.routes.route("/builtin/put_blob", {}) == ("builtin", "/put_blob")


def test_default_config() -> None:
    config = default_config()
    assert config.plugins == {"builtin": PluginConfig("builtin", "builtin")}
    assert config.routes.patterns == ("/builtin/{*component}",)
    assert config.routes.route("/builtin/eval", {}) == ("builtin", "/eval")
    assert config.source == "<default>"
    with pytest.raises(ConfigError, match="no route for component '/python/udf'"):
        config.routes.check("/python/udf")


# Top level ----------------------------------------------------------------------------------


def test_unknown_top_level_keys_are_warnings() -> None:
    config = parse("workingDirectory: /tmp\nplugins: {b: {type: builtin}}\n"
                   "routes: {/b: [{plugin: b}]}\nblobStore: {type: x}\n")
    assert config.warnings == (
        "cfg.yml:1: unknown config key 'workingDirectory' ignored",
        "cfg.yml:4: unknown config key 'blobStore' ignored",
    )


def test_route_warnings_reach_the_config() -> None:
    config = parse("plugins: {b: {type: builtin}}\nroutes:\n  /b: [{plugin: b, typo: 1}]\n")
    assert config.warnings == ("cfg.yml:3: route '/b', rule 1: unknown key 'typo' ignored",)


def test_a_config_is_a_mapping() -> None:
    error = config_error("- plugins\n")
    assert error.reason == "a config is a mapping, got list"
    assert error.location.file == "cfg.yml"


def test_malformed_yaml_names_file_and_line() -> None:
    error = config_error("plugins:\n  b: {type: builtin\nroutes: {}\n")
    assert error.location.file == "cfg.yml"
    assert error.location.line == 3
    assert error.reason.startswith("malformed YAML")


def test_plugins_without_routes() -> None:
    error = config_error("plugins:\n  b: {type: builtin}\n")
    assert error.location.line == 1
    assert "'plugins' without 'routes'" in error.reason


def test_routes_without_plugins() -> None:
    error = config_error("routes:\n  /b: [{plugin: b}]\n")
    assert error.location.line == 2
    assert "unknown plugin 'b'; plugins: none are configured" in error.reason


def test_route_errors_name_route_plugin_and_line() -> None:
    error = config_error(
        "plugins:\n  builtin: {type: builtin}\n  mock: {type: mock}\n"
        "routes:\n  /mock:\n    - plugin: mokc\n"
    )
    assert str(error) == (
        "cfg.yml:6: route '/mock', rule 1 names unknown plugin 'mokc'; plugins: builtin, mock"
    )


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("plugins: [builtin]\nroutes: {}\n", 1, "'plugins' is a mapping"),
        ("plugins: {b: {type: builtin}}\nroutes: [/b]\n", 2, "'routes' is a mapping"),
        ("plugins: {b: {type: builtin}}\nroutes:\n  b: [{plugin: b}]\n", 3,
         "route key 'b' is not a path pattern starting with '/'"),
        ("plugins: {b: {type: builtin}}\nroutes:\n  /b: [{component: x}]\n", 3,
         "route '/b', rule 1 has no 'plugin'"),
        ("plugins: {b: {type: builtin}}\nroutes:\n  /{*x}/b: [{plugin: b}]\n", 3,
         "route '/{*x}/b' is not a valid pattern: '{*x}' must be the last segment"),
        ("plugins: {b: {type: builtin}}\nroutes:\n  /b: [{plugin: b, conditions: [1]}]\n", 3,
         "route '/b', rule 1: condition 1 is not {path, value}"),
    ],
)
def test_route_section_errors(text: str, line: int, reason: str) -> None:
    error = config_error(text)
    assert error.location.line == line
    assert reason in error.reason


# Plugins ------------------------------------------------------------------------------------


def test_plugin_settings_are_the_mapping_minus_type() -> None:
    config = parse(
        "plugins:\n  py:\n    type: stepflow\n    transport: http\n    url: http://x\n"
        "routes: {/py: [{plugin: py}]}\n"
    )
    assert config.plugins["py"] == PluginConfig(
        "py", "stepflow", {"transport": "http", "url": "http://x"}
    )


@pytest.mark.parametrize("plugin_type", ["builtin", "mock", "stepflow", "kafka"])
def test_valid_plugin_types(plugin_type: str) -> None:
    config = parse(f"plugins: {{p: {{type: {plugin_type}}}}}\nroutes: {{/p: [{{plugin: p}}]}}\n")
    assert config.plugins["p"].type == plugin_type


def test_unknown_plugin_type_names_plugin_and_lists_types() -> None:
    error = config_error("plugins:\n  gpu:\n    type: grpc\nroutes: {/g: [{plugin: gpu}]}\n")
    assert error.location.line == 3
    assert error.reason == (
        "plugin 'gpu' has unknown type 'grpc'; valid types: builtin, mock, stepflow, kafka"
    )


def test_plugin_without_type() -> None:
    error = config_error("plugins:\n  gpu:\n    url: http://x\nroutes: {/g: [{plugin: gpu}]}\n")
    assert error.location.line == 3
    assert error.reason == (
        "plugin 'gpu' has no 'type'; valid types: builtin, mock, stepflow, kafka"
    )


def test_plugin_that_is_not_a_mapping() -> None:
    error = config_error("plugins:\n  gpu: stepflow\nroutes: {/g: [{plugin: gpu}]}\n")
    assert error.location.line == 2
    assert "plugin 'gpu' is a mapping with a 'type'" in error.reason


# State store, retry, runtime, concurrency --------------------------------------------------

BASE = "plugins: {b: {type: builtin}}\nroutes: {/b: [{plugin: b}]}\n"


def test_storage_config_is_an_alias_of_state_store() -> None:
    config = parse(BASE + "storageConfig: {type: postgres, databaseUrl: 'postgresql://db/x'}\n")
    assert config.state_store == StateStoreConfig("postgres", "postgresql://db/x")


def test_state_store_and_storage_config_together_is_an_error() -> None:
    error = config_error(BASE + "stateStore: {type: inMemory}\nstorageConfig: {type: inMemory}\n")
    assert error.location.line == 4
    assert "'stateStore' and 'storageConfig' are the same setting" in error.reason


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ("stateStore: {type: redis}",
         "'stateStore' type is 'redis'; valid types: sqlite, inMemory, postgres"),
        ("stateStore: {databaseUrl: x}",
         "'stateStore' has no 'type'; valid types: sqlite, inMemory, postgres"),
        ("stateStore: {type: postgres}", "'stateStore' of type postgres needs a databaseUrl"),
        ("stateStore: {type: sqlite, databaseUrl: 5}", "'stateStore' databaseUrl is a string"),
        ("stateStore: sqlite", "'stateStore' is a mapping"),
        ("retry: {transportMaxRetries: -1}", "'transportMaxRetries' is a non-negative integer"),
        ("retry: {transportMaxRetries: true}", "'transportMaxRetries' is a non-negative integer"),
        ("retry: {backoff: {type: random}}",
         "retry backoff type is 'random'; valid types: exponential, constant"),
        ("retry: {backoff: {minDelayMs: 500, maxDelayMs: 100}}",
         "retry backoff minDelayMs (500) is greater than maxDelayMs (100)"),
        ("retry: {backoff: 3}", "'backoff' is a mapping"),
        ("runtime: {type: spark}", "'runtime' type is 'spark'; valid types: embedded, kafka"),
        ("runtime: {topicPrefix: x}", "'runtime' has no 'type'; valid types: embedded, kafka"),
        ("maxConcurrency: 0", "'maxConcurrency' is a positive integer, got 0"),
        ("maxConcurrency: many", "'maxConcurrency' is a positive integer, got 'many'"),
    ],
)
def test_section_errors_name_line(section: str, reason: str) -> None:
    error = config_error(BASE + section + "\n")
    assert error.location.line == 3
    assert reason in error.reason


def test_retry_settings() -> None:
    config = parse(BASE + "retry:\n  transport_max_retries: 5\n  backoff: {type: constant, "
                   "min_delay_ms: 10, max_delay_ms: 20}\n")
    assert config.retry == RetryConfig(5, 10, 20, "constant")
    assert parse(BASE + "retry: {transportMaxRetries: 0}\n").retry == RetryConfig(0)


def test_unknown_keys_in_sections_are_warnings() -> None:
    config = parse(BASE + "stateStore: {type: sqlite, autoMigrate: true}\n"
                   "retry: {backoff: {type: exponential, jitter: true}}\n")
    assert config.warnings == (
        "cfg.yml:3: unknown stateStore key 'autoMigrate' ignored",
        "cfg.yml:4: unknown retry.backoff key 'jitter' ignored",
    )


def test_runtime_settings() -> None:
    config = parse(BASE + "runtime: {type: kafka, bootstrapServers: 'k:9092', topicPrefix: sf}\n")
    assert config.runtime == RuntimeConfig("kafka", {"bootstrapServers": "k:9092",
                                                     "topicPrefix": "sf"})


def test_max_concurrency() -> None:
    assert parse(BASE + "maxConcurrency: 8\n").max_concurrency == 8
    assert parse(BASE + "max_concurrency: 2\n").max_concurrency == 2
    assert parse(BASE + "maxConcurrency: null\n").max_concurrency is None


# Environment variables ---------------------------------------------------------------------


def test_expand_env_replaces_variables() -> None:
    env = {"HOST": "db", "PORT": "5432"}
    assert expand_env("url: pg://${HOST}:${PORT}/x\n", env) == "url: pg://db:5432/x\n"


def test_expand_env_defaults() -> None:
    text = "a: ${A:-one}\nb: ${B:-}\nc: ${C:-x y}\n"
    assert expand_env(text, {}) == "a: one\nb: \nc: x y\n"
    assert expand_env(text, {"A": "set", "B": "", "C": "z"}) == "a: set\nb: \nc: z\n"


def test_expand_env_set_but_empty_without_default_is_empty() -> None:
    assert expand_env("a: '${A}'", {"A": ""}) == "a: ''"


def test_missing_variable_names_variable_file_and_line() -> None:
    with pytest.raises(ConfigError) as caught:
        expand_env("a: 1\nb: ${API_URL}\n", {}, "cfg.yml")
    error = caught.value
    assert error.location.file == "cfg.yml"
    assert error.location.line == 2
    assert error.reason == (
        "environment variable 'API_URL' is not set (write ${API_URL:-default} to give a default)"
    )


def test_comment_lines_are_not_expanded() -> None:
    text = "# url: ${UNSET}\n  # ${ALSO_UNSET}\na: ${A}\n"
    assert expand_env(text, {"A": "1"}) == "# url: ${UNSET}\n  # ${ALSO_UNSET}\na: 1\n"


def test_dollar_dollar_brace_is_a_literal() -> None:
    assert expand_env("a: $${HOME}", {}) == "a: ${HOME}"


@pytest.mark.parametrize("reference", ["${A:default}", "${1A}", "${A", "${}"])
def test_malformed_reference(reference: str) -> None:
    with pytest.raises(ConfigError, match="malformed variable reference") as caught:
        expand_env(f"a: 1\nb: {reference}\n", {"A": "x"}, "cfg.yml")
    assert caught.value.location.line == 2


def test_text_without_references_is_unchanged() -> None:
    text = "a: $HOME and $ and {x}\n"
    assert expand_env(text, {}) is text


def test_parse_config_expands_before_parsing() -> None:
    text = (
        "plugins:\n  py: {type: stepflow, url: '${PY_URL:-http://localhost:8080}'}\n"
        "routes: {/py: [{plugin: py}]}\nmaxConcurrency: ${MAXC:-4}\n"
    )
    assert parse(text).plugins["py"].settings == {"url": "http://localhost:8080"}
    config = parse(text, {"PY_URL": "http://py:9", "MAXC": "16"})
    assert config.plugins["py"].settings == {"url": "http://py:9"}
    assert config.max_concurrency == 16


def test_parse_config_missing_variable() -> None:
    error = config_error(BASE + "stateStore: {type: postgres, databaseUrl: '${DB_URL}'}\n")
    assert str(error).startswith("cfg.yml:3: environment variable 'DB_URL' is not set")


def test_parse_config_document_expands_string_values() -> None:
    document = {
        "plugins": {"m": {"type": "mock", "components": {"/c": {"url": "${U:-x}"}}}},
        "routes": {"/m": [{"plugin": "m"}]},
    }
    config = parse_config_document(document, "flow.yaml (test.config)", {"U": "y"})
    assert config.plugins["m"].settings == {"components": {"/c": {"url": "y"}}}
    assert parse_config_document(document).plugins["m"].settings == {
        "components": {"/c": {"url": "${U:-x}"}}
    }
    with pytest.raises(ConfigError, match="'U' is not set"):
        parse_config_document({**document, "x": "${U}"}, "t", {})


# Files --------------------------------------------------------------------------------------


def test_find_config_next_to_the_flow(tmp_path: Path) -> None:
    flows = tmp_path / "project" / "flows"
    flows.mkdir(parents=True)
    flow = flows / "f.yaml"
    flow.write_text("steps: []\n")
    config = flows / "stepflow-config.yml"
    config.write_text("{}\n")
    (tmp_path / "project" / "stepflow-config.yml").write_text("{}\n")
    assert find_config_file(flow, tmp_path) == config


def test_find_config_above_the_flow(tmp_path: Path) -> None:
    flows = tmp_path / "project" / "flows" / "deep"
    flows.mkdir(parents=True)
    config = tmp_path / "project" / "stepflow-config.yaml"
    config.write_text("{}\n")
    assert find_config_file(flows / "f.yaml", tmp_path / "elsewhere") == config


def test_find_config_prefers_yml_to_yaml(tmp_path: Path) -> None:
    (tmp_path / "stepflow-config.yaml").write_text("{}\n")
    (tmp_path / "stepflow-config.yml").write_text("{}\n")
    assert find_config_file(tmp_path / "f.yaml", tmp_path) == tmp_path / "stepflow-config.yml"


def test_find_config_for_a_flow_directory(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "stepflow-config.yml").write_text("{}\n")
    assert find_config_file(flows, tmp_path / "x") == flows / "stepflow-config.yml"


def test_find_config_relative_flow_path_is_relative_to_cwd(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "stepflow-config.yml").write_text("{}\n")
    found = find_config_file(Path("flows/f.yaml"), tmp_path)
    assert found is not None
    assert found.resolve() == (tmp_path / "flows" / "stepflow-config.yml").resolve()


def test_find_config_falls_back_to_cwd(tmp_path: Path) -> None:
    flows = tmp_path / "a" / "flows"
    cwd = tmp_path / "b"
    flows.mkdir(parents=True)
    cwd.mkdir()
    found = find_config_file(flows / "f.yaml", cwd)
    assert found is None or tmp_path not in found.parents  # a stray file above tmp_path
    (cwd / "stepflow-config.yml").write_text("{}\n")
    assert find_config_file(flows / "f.yaml", cwd) == cwd / "stepflow-config.yml"
    assert find_config_file(None, cwd) == cwd / "stepflow-config.yml"


def test_find_config_without_any_file(tmp_path: Path) -> None:
    assert find_config_file(None, tmp_path) is None


def test_load_config(tmp_path: Path) -> None:
    path = tmp_path / "stepflow-config.yml"
    path.write_text(SPEC_CONFIG.replace("http://cpu-components-lb:8080", "${CPU_URL}"))
    config = load_config(path, {"CPU_URL": "http://cpu:1"})
    assert config.source == str(path)
    assert config.plugins["cpu_components"].settings == {"url": "http://cpu:1"}
    with pytest.raises(ConfigError) as caught:
        load_config(path, {})
    assert caught.value.location == Location(str(path), 3)


def test_load_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yml"
    with pytest.raises(ConfigError, match="cannot read config file") as caught:
        load_config(path, {})
    assert caught.value.location.file == str(path)
