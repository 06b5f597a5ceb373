"""`fleet run` options that choose and pace devices: --parallel, --shard, --retries, --wait."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from fleet.cli import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "suites" / "smoke.yaml")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--parallel", "0"], "0 is not in the range x>=1"),
        (["--shard", "5/4"], "'5/4': use K/N with 1 <= K <= N"),
        (["--shard", "two"], "'two': use K/N"),
        (["--retries", "-1"], "-1 is not in the range"),
        (["--wait", "-5"], "-5.0 is not in the range"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], problem: str) -> None:
    result = CliRunner().invoke(main, ["run", SMOKE, "--plan", *args])
    assert result.exit_code == 2
    assert problem in result.output


def test_shards_of_a_plan_cover_every_device_once(tmp_path: Path) -> None:
    hosts = {f"pi-{i}": {"ansible_host": f"10.0.0.{i}"} for i in range(12)}
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": hosts}}))
    planned = []
    for k in (1, 2, 3):
        argv = ["run", SMOKE, "--inventory", str(inventory), "--shard", f"{k}/3", "--plan"]
        result = CliRunner().invoke(main, argv)
        assert result.exit_code == 0, result.output
        planned += [line.split()[0] for line in result.output.splitlines() if line[:1] != " "]
    assert sorted(planned) == sorted(hosts)
