"""The boards this machine is not, for the sysinfo and live tests: real outputs of their files
and tools (`fixtures/sysinfo`), and fake vendor tools first on PATH that print them."""

import os
import stat
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "sysinfo"


def fixture(name):
    return (FIXTURES / name).read_text()


def fake_tool(directory, name, script):
    """An executable standing in for a board's vendor tool, which this machine lacks."""
    tool = directory / name
    tool.write_text("#!/bin/sh\n" + script)
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)


@pytest.fixture(name="tools")
def tools_on_path(tmp_path, monkeypatch):
    """A directory of fake vendor tools put first on PATH."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", "{}{}{}".format(directory, os.pathsep, os.environ["PATH"]))
    return directory


def vcgencmd(tools, throttled_fixture="vcgencmd_get_throttled.txt"):
    fake_tool(
        tools,
        "vcgencmd",
        'case "$1" in\n'
        '  measure_temp) cat "{}" ;;\n'
        '  get_throttled) cat "{}" ;;\n'
        "  *) exit 2 ;;\n"
        "esac\n".format(FIXTURES / "vcgencmd_measure_temp.txt", FIXTURES / throttled_fixture),
    )
