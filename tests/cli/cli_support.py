"""Running the real ``stepflow-stream`` command as a subprocess, and checking what it says."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
COMMAND = [sys.executable, "-m", "stepflow_stream.cli.main"]


@dataclass(frozen=True)
class Result:
    """What one command did: its exit code and everything it printed."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return (f"$ stepflow-stream {' '.join(self.args)}\nexit code {self.code}\n"
                f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}")

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines()]


class CLI:
    """``stepflow-stream`` run in one working directory (so its journal lands there)."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def __call__(self, *args: str | Path, timeout: float = 30) -> Result:
        argv = tuple(str(a) for a in args)
        done = subprocess.run([*COMMAND, *argv], cwd=self.cwd, capture_output=True,
                              text=True, encoding="utf-8", timeout=timeout, check=False)
        result = Result(argv, done.returncode, done.stdout, done.stderr)
        assert "Traceback" not in result.stdout + result.stderr, str(result)
        return result

    def popen(self, *args: str | Path, **kwargs: Any) -> subprocess.Popen[str]:
        return subprocess.Popen([*COMMAND, *(str(a) for a in args)], cwd=self.cwd, text=True,
                                encoding="utf-8", **kwargs)

    def ok(self, *args: str | Path) -> Result:
        """Run a command that must succeed quietly (exit 0, nothing on stderr)."""
        result = self(*args)
        assert result.code == 0, str(result)
        assert result.stderr == "", str(result)
        return result


def copy_data(target: Path) -> Path:
    """The flow fixtures, copied into ``target`` (which becomes the working directory)."""
    shutil.copytree(DATA, target, dirs_exist_ok=True)
    return target


def assert_bad_input(result: Result, *fragments: str) -> str:
    """Exit code 2, nothing on stdout, and exactly one stderr line ``error: ...`` holding every
    fragment (the file and line, step or field, and what was expected). Returns the line."""
    assert result.code == 2, str(result)
    assert result.stdout == "", str(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr\n{result}"
    line = lines[0]
    assert line.startswith("error: "), str(result)
    missing = [f for f in fragments if f not in line]
    assert not missing, f"the message does not mention {missing}\n{result}"
    return line
