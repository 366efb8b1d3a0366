from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import CLI, copy_data


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh working directory holding the flow fixtures of ``tests/cli/data``."""
    return copy_data(tmp_path)


@pytest.fixture
def cli(workdir: Path) -> CLI:
    return CLI(workdir)
