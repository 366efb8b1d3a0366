"""``/create_messages`` and ``/openai``: building a chat and sending it to OpenAI."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.error
import urllib.request

from stepflow_stream.core.jsonvalue import JSON, JSONObject
from stepflow_stream.errors import ComponentError, ErrorCode
from stepflow_stream.plugins.base import ExecutionContext
from stepflow_stream.plugins.builtin._component import STRING, Settings, component, object_schema
from stepflow_stream.plugins.builtin._inputs import Input, invalid

_OPENAI_TIMEOUT_S = 120.0


@component(
    "/create_messages",
    "Build a chat message list from optional system instructions and a user prompt.",
    object_schema(
        {"system_instructions": {"type": ["string", "null"]}, "user_prompt": STRING},
        ["user_prompt"],
    ),
    object_schema(
        {
            "messages": {
                "type": "array",
                "items": object_schema({"role": STRING, "content": STRING}, ["role", "content"]),
            }
        },
        ["messages"],
    ),
)
async def create_messages(input: JSON, context: ExecutionContext, settings: Settings) -> JSON:
    args = Input("/create_messages", input)
    system = args.optional_string("system_instructions")
    prompt = args.string("user_prompt", "the user's message")
    messages: list[JSON] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    return {"messages": messages}


@component(
    "/openai",
    "Chat completion with OpenAI (needs OPENAI_API_KEY and network access).",
    object_schema(
        {
            "messages": {"type": "array"},
            "model": STRING,
            "temperature": {"type": "number"},
            "max_tokens": {"type": "integer", "minimum": 1},
        },
        ["messages"],
    ),
    object_schema({"response": STRING}, ["response"]),
)
async def openai(input: JSON, context: ExecutionContext, settings: Settings) -> JSON:
    args = Input("/openai", input)
    messages = args.array("messages", "the chat, e.g. from /create_messages")
    for index, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise invalid(
                "/openai", f"messages[{index}] must be an object with string 'role' and 'content'"
            )
    body: JSONObject = {
        "model": args.optional_string("model") or settings.openai_model,
        "messages": messages,
    }
    temperature = args.optional_number("temperature")
    if temperature is not None:
        body["temperature"] = temperature
    max_tokens = args.optional_positive_int("max_tokens")
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    api_key = settings.openai_api_key or os.environ.get("OPENAI_API_KEY")
    if not api_key:
        raise ComponentError(
            ErrorCode.COMPONENT_FAILED,
            "/openai needs an API key: set OPENAI_API_KEY or the plugin's openai_api_key",
            retryable=False,
        )
    url = settings.openai_base_url.rstrip("/") + "/chat/completions"
    reply = await asyncio.to_thread(_post_json, url, body, api_key)
    try:
        return {"response": reply["choices"][0]["message"]["content"]}
    except (KeyError, IndexError, TypeError):
        raise ComponentError(
            ErrorCode.COMPONENT_FAILED, "/openai: unexpected response shape", retryable=False
        ) from None


def _post_json(url: str, body: JSONObject, api_key: str) -> JSON:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode("utf-8"),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=_OPENAI_TIMEOUT_S) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read(500).decode("utf-8", "replace")
        raise ComponentError(
            ErrorCode.COMPONENT_FAILED,
            f"/openai: HTTP {exc.code}: {detail}",
            retryable=exc.code == 429 or exc.code >= 500,
        ) from None
    except TimeoutError:
        raise ComponentError(ErrorCode.TIMEOUT, "/openai: request timed out") from None
    except urllib.error.URLError as exc:
        raise ComponentError(ErrorCode.UNREACHABLE, f"/openai: {exc.reason}") from None
    except ValueError as exc:
        raise ComponentError(
            ErrorCode.COMPONENT_FAILED, f"/openai: response is not JSON: {exc}", retryable=False
        ) from None
