"""Hostile input (issue 12, defects 6 and 10, and "Done when": the security tests).

Every user string that becomes part of a path or a command is refused at load time unless
it is a plain word, so nothing can leave its folder or reach a shell; a secret that HTTP
cannot carry is refused when the configuration loads, and no error, traceback, log or
file written by the command shows it.
"""

from __future__ import annotations

import os
import posixpath
import shlex
import subprocess
import sys
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.config import load_config
from fleet.errors import ConfigError
from fleet.inventory import load_inventory
from fleet.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "zoo" / "digits_mlp.onnx"

HOSTILE = [
    "../../tmp/x",
    "..",
    ".",
    "a/b",
    "/etc/passwd",
    "a\\b",
    "a'b",
    'a"b',
    "a b",
    "$(touch /tmp/pwned)",
    "`touch /tmp/pwned`",
    "a;rm -rf ~",
    "a|b",
    "a\nb",
    "a\rb",
    "a\x00b",
    "-oProxyCommand=x",
    "~root",
    "x" * 300,
    "",
    "é",
]
QUICK = settings(
    max_examples=100,
    deadline=timedelta(seconds=10),
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def suite_file(
    tmp_path: Path,
    name: str = "s",
    model: str = "m",
    variant: str = "onnx:fp32",
    file: str = str(MODEL),
    **measure: object,
) -> Path:
    path = tmp_path / "suite.yaml"
    suite = {
        "name": name,
        "measure": measure,
        "models": [{"name": model, "path": file, "variants": [variant]}],
    }
    path.write_text(yaml.safe_dump(suite, allow_unicode=True), encoding="utf-8")
    return path


def inventory_file(tmp_path: Path, host: str = "h", **hvars: object) -> Path:
    path = tmp_path / "inventory.yaml"
    document = {"all": {"hosts": {host: hvars}}}
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def refused(load: Callable[[], object]) -> str:
    with pytest.raises(ConfigError) as error:
        load()
    message = str(error.value)
    assert len(message.splitlines()) == 1, message
    assert ".yaml:" in message, f"no file:line in {message!r}"
    return message


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_suite_and_model_names_are_refused(tmp_path: Path, value: str) -> None:
    assert "the suite name must" in refused(lambda: load_suite(suite_file(tmp_path, name=value)))
    assert "a model name must" in refused(lambda: load_suite(suite_file(tmp_path, model=value)))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_variants_and_providers_are_refused(tmp_path: Path, value: str) -> None:
    assert "variant" in refused(lambda: load_suite(suite_file(tmp_path, variant=value)))
    assert "measure.provider" in refused(lambda: load_suite(suite_file(tmp_path, provider=value)))


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_host_names_and_logins_are_refused(tmp_path: Path, value: str) -> None:
    assert "host name" in refused(lambda: load_inventory(inventory_file(tmp_path, host=value)))
    for key in ("ansible_host", "ansible_user"):
        hostile = inventory_file(tmp_path, **{key: value})
        assert f"{key} must be" in refused(lambda: load_inventory(hostile))  # noqa: B023
    tags = inventory_file(tmp_path, fleet_tags=[value])
    assert "tag" in refused(lambda: load_inventory(tags))


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\u2028b", ""])
def test_paths_with_control_characters_are_refused(tmp_path: Path, value: str) -> None:
    for key in ("fleet_python", "fleet_workdir", "ansible_ssh_private_key_file"):
        hostile = inventory_file(tmp_path, **{key: value})
        assert f"{key} must be a path" in refused(lambda: load_inventory(hostile))  # noqa: B023
    suite = suite_file(tmp_path, file=value)
    assert "'path' must be a file path" in refused(lambda: load_suite(suite))


@QUICK
@given(name=st.text(max_size=80) | st.sampled_from(HOSTILE))
def test_an_accepted_model_name_stays_inside_its_folder(tmp_path: Path, name: str) -> None:
    """Whatever name passes the suite's check, the agent's `outputs/<run>/<model>.npy` is a
    file directly inside the run's folder and the name needs no shell quoting."""
    try:
        suite = load_suite(suite_file(tmp_path, model=name))
    except ConfigError:
        return
    (model,) = suite.models
    outputs = "work/outputs/run1"
    joined = posixpath.normpath(f"{outputs}/{model.name}.npy")
    assert posixpath.dirname(joined) == outputs
    assert shlex.quote(model.name) == model.name


@QUICK
@given(name=st.text(max_size=80) | st.sampled_from(HOSTILE))
def test_an_accepted_host_name_is_a_plain_word(tmp_path: Path, name: str) -> None:
    try:
        inventory = load_inventory(inventory_file(tmp_path, host=name))
    except ConfigError:
        return
    for device in inventory.devices.values():
        assert "/" not in device.name and device.name not in (".", "..")
        assert shlex.quote(device.name) == device.name


# --- secrets --------------------------------------------------------------------------------

MARKER = "Zq7-SECRET-MARKER"
# Characters an HTTP header cannot carry: control characters, and anything past Latin-1.
UNSENDABLE = st.sampled_from(["\r\n", "\n", "\r", "\x00", "\x7f", "\x85", "€", "\u2028", "😀"])


def everything_shown(error: BaseException) -> str:
    """What a user or a log could ever see of an error: its text, repr and the traceback
    with every chained exception, as the CLI's debug log would write it."""
    return f"{error} {error!r} " + "".join(traceback.format_exception(error))


@QUICK
@given(
    before=st.text(max_size=10),
    bad=UNSENDABLE,
    after=st.text(max_size=10),
    variable=st.sampled_from(["FLEET_INFLUX_TOKEN", "FLEET_INFLUX_PASSWORD", "FLEET_INFLUX_USER"]),
)
def test_an_unsendable_secret_is_refused_and_never_shown(
    before: str, bad: str, after: str, variable: str
) -> None:
    env = {"FLEET_INFLUX_URL": "https://influx.example:8086", "FLEET_INFLUX_USER": "fleet"}
    env[variable] = f"{MARKER}{before}{bad}{after}"
    with pytest.raises(ConfigError) as error:
        load_config(None, env=env)
    assert len(str(error.value).splitlines()) == 1
    assert MARKER not in everything_shown(error.value)


def test_an_unsendable_secret_in_a_file_is_refused_and_never_shown(tmp_path: Path) -> None:
    (tmp_path / "token").write_bytes(f"{MARKER}\r\nX-Injected: yes\n".encode())
    (tmp_path / "password").write_bytes(MARKER.encode() + b"\xff\xfe")
    for variable in ("FLEET_INFLUX_TOKEN_FILE", "FLEET_INFLUX_PASSWORD_FILE"):
        file = tmp_path / variable.split("_")[2].lower()
        env = {"FLEET_INFLUX_URL": "https://h:8086", "FLEET_INFLUX_USER": "u", variable: str(file)}
        with pytest.raises(ConfigError) as error:
            load_config(None, env=env)
        assert MARKER not in everything_shown(error.value)


def test_a_sendable_secret_is_kept_and_never_shown() -> None:
    env = {
        "FLEET_INFLUX_URL": "https://influx.example:8086",
        "FLEET_INFLUX_USER": "fleet",
        "FLEET_INFLUX_PASSWORD": f"{MARKER} ünïcode-in-latin1 ÿ",
    }
    config = load_config(None, env=env)
    influx = config.require_influx()
    assert influx.password is not None and influx.password.reveal() == env["FLEET_INFLUX_PASSWORD"]
    assert MARKER not in f"{config} {config!r} {influx} {config.warnings}"


@pytest.mark.parametrize(
    "secrets",
    [
        {"FLEET_INFLUX_TOKEN": f"{MARKER}\r\nX-Injected: yes"},
        {"FLEET_INFLUX_USER": "fleet", "FLEET_INFLUX_PASSWORD": f"{MARKER}€"},
    ],
    ids=["token-crlf", "password-not-latin1"],
)
def test_the_cli_refuses_a_bad_secret_without_printing_or_logging_it(
    tmp_path: Path, secrets: dict[str, str]
) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env |= {"FLEET_HOME": str(home), "FLEET_CACHE": str(tmp_path / "cache")}
    env |= {"FLEET_INFLUX_URL": "https://127.0.0.1:9", **secrets}
    proc = subprocess.run(
        [sys.executable, "-m", "fleet", "results", "push", "--store", str(home / "r.sqlite")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "the InfluxDB" in line and "set it again" in line
    assert MARKER not in proc.stdout + proc.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(MARKER.encode() in p.read_bytes() for p in written), written
