"""The ``gateway`` config section and token matching (pure), and the ``gateway`` command
serving a config's API (a real process on the local Kafka and PostgreSQL)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gateway_support import TOKENS

from gateway.auth import find_token
from gateway.settings import GatewaySettings, Token, gateway_settings, parse_gateway_settings
from stepflow_stream.errors import ConfigError

DIGEST = hashlib.sha256(b"t").hexdigest()


def test_defaults_without_a_section() -> None:
    assert parse_gateway_settings(None) == GatewaySettings()


def test_a_section_is_read() -> None:
    settings = parse_gateway_settings({
        "maxBodyBytes": 10, "waitTimeoutSeconds": 2.5,
        "tokens": [{"name": "ci", "sha256": DIGEST.upper(), "tenant": "a"}],
    })
    assert settings == GatewaySettings((Token("ci", DIGEST, "a"),), 10, 2.5)


@pytest.mark.parametrize(("section", "field"), [
    ({"maxBodyBytes": 0}, "gateway.maxBodyBytes"),
    ({"maxBodyBytes": "1mb"}, "gateway.maxBodyBytes"),
    ({"waitTimeoutSeconds": True}, "gateway.waitTimeoutSeconds"),
    ({"tokens": {"name": "x"}}, "gateway.tokens"),
    ({"tokens": [{"name": "x", "sha256": "abc"}]}, "gateway.tokens[0].sha256"),
    ({"tokens": [{"sha256": DIGEST}]}, "gateway.tokens[0].name"),
    ({"tokens": [{"name": "x", "sha256": DIGEST, "tenant": 3}]}, "gateway.tokens[0].tenant"),
    ({"tokens": [{"name": "x", "sha256": DIGEST, "role": "admin"}]}, "gateway.tokens[0]"),
    ({"token": []}, "gateway.token"),
])
def test_a_bad_section_names_the_field(section: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_gateway_settings(section, "c.yml")
    assert raised.value.location.field == field
    assert str(raised.value).startswith("c.yml")


def test_tokens_match_by_hash() -> None:
    tokens = [Token("one", DIGEST), Token("two", hashlib.sha256(b"u").hexdigest(), "b")]
    assert find_token(tokens, "u") == tokens[1]
    assert find_token(tokens, "t") == tokens[0]
    assert find_token(tokens, "v") is None


def test_the_section_is_read_from_a_config_file_with_env_expanded(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("gateway:\n  maxBodyBytes: ${LIMIT}\n")
    assert gateway_settings(path, {"LIMIT": "77"}).max_body_bytes == 77


def test_the_gateway_command_serves_the_api(standalone_config: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    script = ("import argparse, sys; from stepflow_stream.cli import gateway; "
              "p = argparse.ArgumentParser(); gateway.add_arguments(p); "
              "sys.exit(gateway.command(p.parse_args(sys.argv[1:])))")
    process = subprocess.Popen(
        [sys.executable, "-c", script, "--config", str(standalone_config), "--port", str(port),
         "--log-level", "warning"], env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the gateway exited"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.1)
        runs = httpx.get(f"http://127.0.0.1:{port}/api/v1/runs",
                         headers={"Authorization": f"Bearer {TOKENS['admin']}"}, timeout=5)
    finally:
        process.terminate()
        process.wait(10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert runs.status_code == 200
