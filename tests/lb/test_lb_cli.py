"""``lb``'s arguments."""

from __future__ import annotations

import argparse

import pytest

from stepflow_stream.cli import lb


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    lb.add_arguments(parser)
    return parser.parse_args(argv)


def test_arguments_and_defaults() -> None:
    args = _parse("--upstream", "ml.components.svc:8000", "--resolver", "127.0.0.1:5353",
                  "--interval", "0.5")
    assert args.upstream == ("ml.components.svc", 8000)
    assert args.resolver == ("127.0.0.1", 5353)
    assert args.interval == 0.5
    assert (args.host, args.port) == ("127.0.0.1", lb.DEFAULT_PORT)
    assert _parse("--upstream", "[::1]:9000").upstream == ("::1", 9000)


@pytest.mark.parametrize("argv", [
    ["--upstream", "components"],
    ["--upstream", "components:http"],
    ["--upstream", ":8000"],
    ["--upstream", "c:8000", "--interval", "0"],
    ["--upstream", "c:8000", "--resolver", "127.0.0.1"],
])
def test_bad_arguments_are_rejected(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        _parse(*argv)
