"""The builtin plugin itself: its settings and the table of its components."""

from __future__ import annotations

import copy
from pathlib import Path

from stepflow_stream.core.jsonvalue import JSON
from stepflow_stream.errors import ComponentError, ConfigError, ErrorCode
from stepflow_stream.plugins.base import ComponentInfo, ExecutionContext, Plugin, PluginOptions
from stepflow_stream.plugins.builtin._benchmarks import noop, sleep
from stepflow_stream.plugins.builtin._blobs import get_blob, put_blob
from stepflow_stream.plugins.builtin._chat import create_messages, openai
from stepflow_stream.plugins.builtin._component import Component, Settings
from stepflow_stream.plugins.builtin._files import load_file
from stepflow_stream.plugins.builtin._inputs import json_type
from stepflow_stream.plugins.builtin._subflows import eval_flow, iterate_flow, map_flow

_COMPONENTS: dict[str, Component] = {
    builtin.name: builtin
    for builtin in (
        create_messages,
        put_blob,
        get_blob,
        eval_flow,
        map_flow,
        iterate_flow,
        load_file,
        noop,
        sleep,
        openai,
    )
}


class BuiltinPlugin(Plugin):
    """Stepflow's builtin components. ``/load_file`` reads only below ``base_dir``.

    Settings (all optional): ``openai_api_key`` (else the ``OPENAI_API_KEY`` environment
    variable at call time), ``openai_base_url``, ``openai_model``.
    """

    def __init__(self, options: PluginOptions, *, base_dir: Path) -> None:
        self.name = options.name
        self._settings = Settings(
            base_dir=base_dir,
            openai_api_key=_setting(options, "openai_api_key"),
            openai_base_url=_setting(options, "openai_base_url") or "https://api.openai.com/v1",
            openai_model=_setting(options, "openai_model") or "gpt-4o-mini",
        )

    def has_component(self, component: str) -> bool:
        return component in _COMPONENTS

    async def list_components(self) -> list[ComponentInfo]:
        return [
            ComponentInfo(
                component=name,
                description=builtin.description,
                input_schema=copy.deepcopy(builtin.input_schema),
                output_schema=copy.deepcopy(builtin.output_schema),
            )
            for name, builtin in _COMPONENTS.items()
        ]

    async def execute(self, component: str, input: JSON, context: ExecutionContext) -> JSON:
        builtin = _COMPONENTS.get(component)
        if builtin is None:
            offered = ", ".join(sorted(_COMPONENTS))
            raise ComponentError(
                ErrorCode.VALIDATION_FAILED,
                f"builtin plugin '{self.name}' has no component '{component}' "
                f"(it offers {offered})",
                retryable=False,
            )
        return await builtin.handler(input, context, self._settings)


def _setting(options: PluginOptions, key: str) -> str | None:
    value = options.settings.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(
            f"plugin '{options.name}': setting '{key}' must be a string, got {json_type(value)}"
        )
    return value
