"""The ``stepflow`` plugin: components run by a component server over Stepflow's HTTP protocol.

Settings (camelCase or snake_case)::

    url: http://cpu-components-lb:8080     # a running server (or load balancer), or:
    command: uv                            # start the server as a subprocess; it prints
    args: [run, my_components.py]          #   {"port": N} and is restarted if it dies
    env: {LOG_LEVEL: info}                 # added to the subprocess's environment
    timeoutMs: 60000                       # longest one call may take, callbacks included
    connectTimeoutMs: 5000                 # longest a TCP connect may take
    startupTimeoutMs: 30000                # command mode: time to print the port and be healthy
    stopGraceMs: 5000                      # command mode: SIGTERM to SIGKILL

Each call is ``POST`` of a JSON-RPC request; the answer is JSON, or an event stream carrying
the component's callbacks (answered from the step's ExecutionContext) and then the response.
Failures to reach the server (connection refused or reset before any response byte, HTTP 502
or 503) are retried with the config's ``retry`` backoff, then reported as UNREACHABLE; the
component may have run before a connection broke, so execution is at-least-once.

**Instance affinity.** For a step with an affinity key, the plugin remembers which instance
(``Stepflow-Instance-Id`` of the answer) served the key's last execute, for the 10,000 keys
used most recently, and sends that id as a ``Stepflow-Instance-Id`` request header with the
key's next execute, so that a load balancer in front of several instances routes it to the same
one (a server addressed directly executes it whatever the header). When the instance is gone,
the mapping is forgotten and the call sent again without the header, and the key then sticks to
whichever instance answers. It is gone when the request cannot be delivered (no connection, or
no response), or when the answer is HTTP 503 that does not come from that instance and whose
JSON body says so: ``"instanceGone": true`` in any object of it, or the instance's id in any
string. A 503 from the instance itself means it is busy: the call is retried with the header.

HTTP goes through the small client in ``_http11`` rather than httpx, for speed (see there).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections import OrderedDict
from typing import Any

import msgspec

from stepflow_stream.config import RetryConfig
from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.errors import ComponentError, ErrorCode
from stepflow_stream.plugins import _jsonrpc
from stepflow_stream.plugins._callbacks import CallbackResponder
from stepflow_stream.plugins._http11 import (
    BrokenResponse,
    ConnectFailed,
    HttpClient,
    HttpError,
    NoResponse,
    Response,
)
from stepflow_stream.plugins._sse import sse_data
from stepflow_stream.plugins._stepflow_settings import StepflowHttpSettings, parse_settings
from stepflow_stream.plugins._subprocess import ComponentServerProcess, ServerStartError
from stepflow_stream.plugins.base import ComponentInfo, ExecutionContext, Plugin, PluginOptions

__all__ = ["StepflowHttpPlugin", "StepflowHttpSettings", "parse_settings"]

logger = logging.getLogger(__name__)

_HEADERS = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
_INSTANCE_HEADER = "stepflow-instance-id"
_UNAVAILABLE_STATUSES = frozenset({502, 503})
# uvicorn closes idle connections after 5 s; dropping ours sooner avoids reusing a closing one.
_KEEPALIVE_EXPIRY = 4.0
_SETTLE_AFTER_CRASH = 2.0
AFFINITY_KEYS_KEPT = 10_000
"""Affinity keys whose instance the plugin remembers (the least recently used are dropped)."""


class _Unavailable(Exception):
    """The server could not be reached, or said it is at capacity: worth another try."""


class _InstanceGone(Exception):
    """A load balancer says the instance a call asked for is gone: send it to any other."""


class StepflowHttpPlugin(Plugin):
    """Runs components on a Stepflow component server; see the module docstring."""

    def __init__(
        self,
        options: PluginOptions,
        retry: RetryConfig | None = None,
        *,
        affinity_keys_kept: int = AFFINITY_KEYS_KEPT,
    ) -> None:
        self.name = options.name
        self.settings = parse_settings(options.name, options.settings)
        self.retry = retry or RetryConfig()
        self._url = self.settings.url
        self._server: ComponentServerProcess | None = None
        if self.settings.command is not None:
            self._server = ComponentServerProcess(
                options.name,
                self.settings.command,
                self.settings.args,
                self.settings.env,
                startup_timeout=self.settings.startup_timeout_ms / 1000,
                stop_grace=self.settings.stop_grace_ms / 1000,
                on_start=self._initialize,
            )
        self._timeout = self.settings.timeout_ms / 1000
        self._http = HttpClient(self.settings.connect_timeout_ms / 1000, _KEEPALIVE_EXPIRY)
        self._ids = itertools.count(1)
        self._components: list[ComponentInfo] | None = None
        self._instances: OrderedDict[str, str] = OrderedDict()
        """The instance that last served each affinity key, least recently used first."""
        self._affinity_keys_kept = affinity_keys_kept

    def __repr__(self) -> str:
        target = self._url or f"command {self.settings.command!r}"
        return f"StepflowHttpPlugin({self.name!r}, {target})"

    # Lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the server in command mode, else say hello to the one at ``url``.

        Neither is fatal: a server that is down now is retried, and reported, on each call."""
        try:
            if self._server is not None:
                await self._server.ensure_running(self._http)
            elif self._url is not None:
                await self._initialize(self._url)
        except (ServerStartError, _Unavailable) as exc:
            logger.warning("plugin '%s': %s (calls will try again)", self.name, exc)

    async def stop(self) -> None:
        """Stop the server (command mode) and close idle connections."""
        if self._server is not None:
            await self._server.stop()
        await self._http.aclose()

    async def _initialize(self, url: str) -> None:
        """Say ``initialize`` (then ``initialized``) to a server. Only an unreachable server is
        an error: one that answers, even with an error, can take calls."""
        try:
            result = await self._attempt(url, "initialize", {"runtime_protocol_version": 1}, None)
            notice = await self._http.request(
                "POST", url, _jsonrpc.notification("initialized", {}), _HEADERS
            )
            await notice.read()
        except (ComponentError, HttpError) as exc:
            logger.warning("plugin '%s': initialize at %s failed: %s", self.name, url, exc)
        else:
            logger.debug("plugin '%s': initialized %s: %s", self.name, url, result)

    # The port ---------------------------------------------------------------------------------

    async def list_components(self) -> list[ComponentInfo]:
        return await self.components()

    async def components(self, refresh: bool = False) -> list[ComponentInfo]:
        """What ``components/list`` reports, fetched once and then cached (``refresh`` to
        fetch again)."""
        if self._components is None or refresh:
            result = await self._call("components/list", {}, None)
            listed = result.get("components") if isinstance(result, dict) else None
            if not isinstance(listed, list):
                raise self._protocol_error("components/list answered without 'components'")
            self._components = [_component_info(item) for item in listed]
        return list(self._components)

    async def info(self, component: str) -> ComponentInfo:
        """What ``components/info`` reports of one component."""
        result = await self._call("components/info", {"component": component}, None)
        if not isinstance(result, dict) or not isinstance(result.get("info"), dict):
            raise self._protocol_error("components/info answered without 'info'")
        return _component_info(result["info"])

    async def execute(self, component: str, input: JSON, context: ExecutionContext) -> JSON:
        params = {
            "component": component,
            "input": input,
            "attempt": context.attempt,
            "observability": {"run_id": context.run_id, "step_id": context.step_id},
        }
        result = await self._call("components/execute", params, context, context.affinity_key)
        if not isinstance(result, dict) or "output" not in result:
            raise self._protocol_error("components/execute answered without 'output'")
        return result["output"]

    def instance_for(self, affinity_key: str) -> str | None:
        """The instance that executes with ``affinity_key`` are sent to, if one is known."""
        return self._instances.get(affinity_key)

    # Calls ------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        params: JSONObject,
        context: ExecutionContext | None,
        affinity: str | None = None,
    ) -> Any:
        """One JSON-RPC call, sent again (with backoff) while the server is unavailable, and at
        once, without the instance header, when the instance it asked for is gone."""
        failures = 0
        gone = False
        while True:
            instance = None if affinity is None or gone else self._instance(affinity)
            try:
                url = self._url if self._url is not None else await self._server_url()
                return await self._attempt(url, method, params, context, affinity, instance)
            except _InstanceGone:
                gone = True
                continue
            except _Unavailable as exc:
                failures += 1
                if failures > self.retry.transport_max_retries:
                    tries = f" (tried {failures} times)" if failures > 1 else ""
                    raise ComponentError(
                        ErrorCode.UNREACHABLE, f"{exc}{tries}", retryable=True
                    ) from None
            await asyncio.sleep(self._backoff(failures))

    async def _server_url(self) -> str:
        assert self._server is not None
        url = self._server.url
        if url is not None:
            return url
        try:
            return await self._server.ensure_running(self._http)
        except ServerStartError as exc:
            raise _Unavailable(str(exc)) from None

    def _instance(self, affinity: str) -> str | None:
        instance = self._instances.get(affinity)
        if instance is not None:
            self._instances.move_to_end(affinity)
        return instance

    def _remember(self, affinity: str, instance: str | None) -> None:
        """Stick ``affinity`` to the instance that answered its call (the newest one wins)."""
        if instance is None:
            return
        instances = self._instances
        instances[affinity] = instance
        instances.move_to_end(affinity)
        if len(instances) > self._affinity_keys_kept:
            instances.popitem(last=False)

    def _forget(self, affinity: str, instance: str) -> None:
        """Drop ``affinity``'s instance, unless another call has stuck it to a new one."""
        if self._instances.get(affinity) == instance:
            del self._instances[affinity]

    def _backoff(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure: exponential, with jitter."""
        retry = self.retry
        delay = retry.backoff_min_delay_ms
        if retry.backoff_type == "exponential":
            delay = min(retry.backoff_max_delay_ms, delay * 2 ** min(failures - 1, 30))
        return random.uniform(delay / 2, delay) / 1000

    async def _attempt(
        self,
        url: str,
        method: str,
        params: JSONObject,
        context: ExecutionContext | None,
        affinity: str | None = None,
        instance: str | None = None,
    ) -> Any:
        """One try of a call; ``instance`` (for the call's ``affinity`` key) goes in the
        ``Stepflow-Instance-Id`` header, and the instance that answers is remembered."""
        request_id = next(self._ids)
        body = _jsonrpc.request(request_id, method, params)
        headers = _HEADERS if instance is None else {**_HEADERS, _INSTANCE_HEADER: instance}
        try:
            async with asyncio.timeout(self._timeout):
                try:
                    response = await self._http.request("POST", url, body, headers)
                except (ConnectFailed, NoResponse) as exc:
                    if affinity is not None and instance is not None:
                        self._forget(affinity, instance)
                    if self._server is not None:
                        await self._server.settle(_SETTLE_AFTER_CRASH)
                    raise _Unavailable(self._unreachable(url, exc)) from None
                try:
                    if affinity is not None:
                        await self._check_instance(response, url, affinity, instance)
                    return await self._read(response, request_id, url, context)
                finally:
                    response.close()
        except TimeoutError:
            raise ComponentError(
                ErrorCode.TIMEOUT,
                f"component server '{self.name}' at {url} did not answer {method} within "
                f"{self.settings.timeout_ms} ms",
                retryable=True,
            ) from None
        except BrokenResponse as exc:
            # The server died while answering. Sending the call again is what a call that got
            # no answer at all gets too: execution is at-least-once either way.
            if affinity is not None and instance is not None:
                self._forget(affinity, instance)
            if self._server is not None:
                await self._server.settle(_SETTLE_AFTER_CRASH)
            raise _Unavailable(self._unreachable(url, exc)) from None

    async def _check_instance(
        self, response: Response, url: str, affinity: str, instance: str | None
    ) -> None:
        """Remember the instance that answered an affine call; raise :class:`_InstanceGone`
        when the answer says the one asked for is gone."""
        answered = response.headers.get(_INSTANCE_HEADER)
        if response.status not in _UNAVAILABLE_STATUSES:
            self._remember(affinity, answered)
            return
        if instance is None or response.status != 503 or answered == instance:
            return
        body = await response.read()
        try:
            document = msgspec.json.decode(body)
        except msgspec.DecodeError:
            document = None
        if not _says_gone(document, instance):
            raise _Unavailable(
                f"component server '{self.name}' at {url} answered HTTP {response.status}"
            )
        self._forget(affinity, instance)
        logger.info("plugin '%s': instance %s is gone; affinity key %r moves to another",
                    self.name, instance, affinity)
        raise _InstanceGone(instance)

    async def _read(
        self, response: Response, request_id: int, url: str, context: ExecutionContext | None
    ) -> Any:
        status = response.status
        if status in _UNAVAILABLE_STATUSES:
            await response.read()  # so the connection can be kept
            raise _Unavailable(f"component server '{self.name}' at {url} answered HTTP {status}")
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return await self._read_stream(response, request_id, url, context)
        body = await response.read()
        try:
            message = _jsonrpc.decode_message(body)
        except msgspec.DecodeError:
            raise ComponentError(
                ErrorCode.COMPONENT_FAILED,
                f"component server '{self.name}' at {url} answered HTTP {status} with "
                f"{body[:200]!r}, which is not a JSON-RPC message",
                retryable=status >= 500,
            ) from None
        return self._result(message, request_id)

    async def _read_stream(
        self, response: Response, request_id: int, url: str, context: ExecutionContext | None
    ) -> Any:
        instance = response.headers.get(_INSTANCE_HEADER)
        responder: CallbackResponder | None = None
        answering: set[asyncio.Task[None]] = set()
        try:
            async with contextlib.aclosing(sse_data(response.lines())) as events:
                async for data in events:
                    try:
                        message = _jsonrpc.decode_message(data)
                    except msgspec.DecodeError:
                        problem = f"an event is not a JSON-RPC message: {data[:200]}"
                        raise self._protocol_error(problem) from None
                    if message.method is None:
                        return self._result(message, request_id)
                    if message.id is None:
                        continue  # a notification: nothing to answer
                    if responder is None:
                        if context is None:
                            problem = f"{message.method} called back outside components/execute"
                            raise self._protocol_error(problem)
                        responder = CallbackResponder(context)
                    task = asyncio.create_task(self._answer(url, instance, responder, message))
                    answering.add(task)
                    task.add_done_callback(answering.discard)
            raise ComponentError(
                ErrorCode.UNREACHABLE,
                f"component server '{self.name}' at {url} ended the event stream without an "
                "answer (did it crash?)",
                retryable=True,
            )
        finally:
            for task in answering:
                task.cancel()
            if responder is not None:
                responder.cancel()

    async def _answer(
        self,
        url: str,
        instance: str | None,
        responder: CallbackResponder,
        message: _jsonrpc.RpcMessage,
    ) -> None:
        assert message.id is not None and message.method is not None
        body = await responder.answer(message.id, message.method, message.params)
        headers = _HEADERS if instance is None else {**_HEADERS, _INSTANCE_HEADER: instance}
        try:
            response = await self._http.request("POST", url, body, headers)
            reply = await response.read()
        except HttpError as exc:
            logger.warning("plugin '%s': could not answer callback %s: %s", self.name,
                           message.method, exc)
            return
        if response.status >= 400:
            logger.warning("plugin '%s': answer to callback %s got HTTP %d: %s", self.name,
                           message.method, response.status, reply[:200])

    def _result(self, message: _jsonrpc.RpcMessage, request_id: int) -> Any:
        if message.error is not None:
            raise _jsonrpc.component_error(message.error)
        if message.result is msgspec.UNSET or message.id != request_id:
            raise self._protocol_error(f"expected the result of request {request_id}, got "
                                       f"{msgspec.json.encode(message)[:200]!r}")
        return message.result

    def _protocol_error(self, problem: str) -> ComponentError:
        return ComponentError(
            ErrorCode.COMPONENT_FAILED,
            f"component server '{self.name}' broke the protocol: {problem}",
            retryable=False,
        )

    def _unreachable(self, url: str, exc: Exception) -> str:
        return f"component server '{self.name}' at {url} is unreachable: {exc}"


def _says_gone(document: JSON, instance: str) -> bool:
    """Whether a 503's JSON body says ``instance`` is gone: ``"instanceGone": true`` in any of
    its objects, or the instance's id in any of its strings."""
    if isinstance(document, dict):
        return document.get("instanceGone") is True or any(
            _says_gone(value, instance) for value in document.values()
        )
    if isinstance(document, list):
        return any(_says_gone(item, instance) for item in document)
    return isinstance(document, str) and instance in document


def _component_info(item: Any) -> ComponentInfo:
    if not isinstance(item, dict) or not isinstance(item.get("component"), str):
        raise ComponentError(ErrorCode.COMPONENT_FAILED,
                             f"a component info without 'component': {item!r}", retryable=False)
    description = item.get("description")
    input_schema = item.get("input_schema")
    output_schema = item.get("output_schema")
    return ComponentInfo(
        component=item["component"],
        description=description if isinstance(description, str) else None,
        input_schema=input_schema if isinstance(input_schema, dict) else None,
        output_schema=output_schema if isinstance(output_schema, dict) else None,
    )
