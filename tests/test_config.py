"""fleet.toml + FLEET_ environment: typed settings, one-line errors, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet.config import InfluxConfig, Secret, load_config
from fleet.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def test_no_url_means_no_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    assert config.path is None
    assert config.influx is None


def test_file_in_working_folder_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(
        tmp_path,
        '[influx]\nurl = "http://127.0.0.1:8086/"\ndatabase = "lab"\n'
        'retention_policy = "week"\nbatch_size = 100\nretry_total_s = 2.5\n',
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    assert config.path == Path("fleet.toml")
    assert config.influx == InfluxConfig(
        url="http://127.0.0.1:8086",
        database="lab",
        retention_policy="week",
        batch_size=100,
        retry_total_s=2.5,
    )


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[influx]\nurl = "http://file:8086"\ndialect = "v1"\n')
    env = {
        "FLEET_INFLUX_URL": "https://env:8443",
        "FLEET_INFLUX_DIALECT": "v2",
        "FLEET_INFLUX_BUCKET": "nightly",
        "FLEET_INFLUX_ORG": "lab",
        "FLEET_INFLUX_TOKEN": "tok-123",
    }
    influx = load_config(path, env=env).influx
    assert influx is not None
    assert (influx.url, influx.dialect, influx.bucket, influx.org) == (
        "https://env:8443",
        "v2",
        "nightly",
        "lab",
    )
    assert influx.token is not None
    assert influx.token.reveal() == "tok-123"
    assert influx.sink == "influx-v2 https://env:8443 org=lab bucket=nightly"


def test_environment_alone_is_enough(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"FLEET_INFLUX_URL": "http://127.0.0.1:1", "FLEET_INFLUX_DB": "x", "FLEET_INFLUX_RP": "y"}
    influx = load_config(None, env=env).influx
    assert influx is not None
    assert influx.sink == "influx-v1 http://127.0.0.1:1 db=x rp=y"


def test_gzip_is_on_unless_turned_off(tmp_path: Path) -> None:
    url = '[influx]\nurl = "http://h:8086"\n'
    assert load_config(write(tmp_path, url), env={}).require_influx().gzip is True
    path = write(tmp_path, url + "gzip = false\n")
    assert load_config(path, env={}).require_influx().gzip is False
    on = load_config(path, env={"FLEET_INFLUX_GZIP": "yes"}).require_influx()
    off = load_config(None, env={"FLEET_INFLUX_URL": "http://h", "FLEET_INFLUX_GZIP": "0"})
    assert (on.gzip, off.require_influx().gzip) == (True, False)


def test_secrets_come_from_files_and_never_show(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "password").write_text("hunter2\n")
    token_file = tmp_path / "token"
    token_file.write_text("tok-secret")
    # A relative *_file in fleet.toml is relative to fleet.toml, not to the shell's folder.
    path = write(
        tmp_path,
        '[influx]\nurl = "http://h:8086"\nuser = "fleet"\npassword_file = "secrets/password"\n',
    )
    influx = load_config(path, env={"FLEET_INFLUX_TOKEN_FILE": str(token_file)}).influx
    assert influx is not None
    assert influx.password is not None
    assert influx.token is not None
    assert influx.password.reveal() == "hunter2"
    assert influx.token.reveal() == "tok-secret"
    shown = f"{influx} {influx!r} {influx.password} {[influx.token]}"
    assert "hunter2" not in shown
    assert "tok-secret" not in shown
    assert "password=***" in shown
    assert str(Secret("x")) == repr(Secret("x")) == "***"


def test_environment_secret_beats_its_file(tmp_path: Path) -> None:
    env = {
        "FLEET_INFLUX_URL": "http://h:8086",
        "FLEET_INFLUX_PASSWORD": "from-env",
        "FLEET_INFLUX_PASSWORD_FILE": str(tmp_path / "missing"),
    }
    influx = load_config(write(tmp_path, ""), env=env).influx
    assert influx is not None
    assert influx.password is not None
    assert influx.password.reveal() == "from-env"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('[influx]\nurl = "http://h"\ntoken = "abc"\n', {}, "fleet.toml:3: influx.token must not"),
        ('[influx]\nurl = "http://h"\n\ndatbase = "x"\n', {}, "fleet.toml:4: unknown key influx"),
        ('[influx]\nurl = "ftp://h"\n', {}, "fleet.toml:2: influx.url: 'ftp://h' is not an http"),
        ('[influx]\nurl = "http://h"\ndialect = "v3"\n', {}, "fleet.toml:3: influx.dialect:"),
        ('[influx]\nurl = "http://h"\nbatch_size = 0\n', {}, "fleet.toml:3: influx.batch_size"),
        ('[influx]\nurl = "http://h"\nbatch_size = 2.5\n', {}, "must be a whole number"),
        ('[influx]\nurl = "http://h"\ndatabase = 5\n', {}, "fleet.toml:3: influx.database must"),
        ('[influx]\nurl = "http://h"\ngzip = "some"\n', {}, "fleet.toml:3: influx.gzip must be"),
        ("", {"FLEET_INFLUX_URL": "http://h", "FLEET_INFLUX_GZIP": "2"}, "FLEET_INFLUX_GZIP (env"),
        ('[influxdb]\nurl = "http://h"\n', {}, "fleet.toml:1: unknown section [influxdb]"),
        ('[influx\nurl = "http://h"\n', {}, "fleet.toml: invalid TOML"),
        ("", {"FLEET_INFLUX_URL": "localhost:8086"}, "FLEET_INFLUX_URL (environment): "),
        ("", {"FLEET_INFLUX_URL": "http://u:pw@h:8086"}, "FLEET_INFLUX_PASSWORD, not in the URL"),
        (
            '[influx]\nurl = "http://h"\ntoken_file = "nope"\n',
            {},
            "fleet.toml:3: influx.token_file: cannot read the token file",
        ),
    ],
)
def test_bad_settings_name_file_line_and_fix(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path, env=env)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert "pw" not in str(error.value).replace("FLEET_INFLUX_PASSWORD", "")


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"fleet\.toml: cannot read"):
        load_config(tmp_path / "fleet.toml", env={})


@pytest.mark.parametrize(
    ("url", "secret", "warned"),
    [
        ("http://influx.lab:8086", "FLEET_INFLUX_TOKEN", True),
        ("http://10.0.0.5:8086", "FLEET_INFLUX_PASSWORD", True),
        ("https://influx.lab:8086", "FLEET_INFLUX_TOKEN", False),
        ("http://localhost:8086", "FLEET_INFLUX_TOKEN", False),
        ("http://127.0.0.1:8086", "FLEET_INFLUX_PASSWORD", False),
        ("http://[::1]:8086", "FLEET_INFLUX_TOKEN", False),
        ("http://influx.lab:8086", "", False),  # nothing secret to read
    ],
)
def test_a_secret_sent_in_clear_text_to_another_machine_is_warned_about(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, secret: str, warned: bool
) -> None:
    monkeypatch.chdir(tmp_path)  # no fleet.toml
    env = {"FLEET_INFLUX_URL": url, "FLEET_INFLUX_USER": "fleet"}
    if secret:
        env[secret] = "s3cret-value"
    config = load_config(None, env=env)
    if not warned:
        assert config.warnings == ()
        return
    (warning,) = config.warnings
    kind = "token" if secret.endswith("TOKEN") else "password"
    host = url.split("//")[1].split(":")[0]
    assert warning == (
        f"FLEET_INFLUX_URL (environment): the InfluxDB {kind} goes to {host} unencrypted"
        " over http://; use an https:// URL"
    )
    assert "s3cret-value" not in warning


SECRET = "s3cr3t-MARKER"


# Issue 12, defect 10: a secret HTTP cannot carry is refused at load, and never shown.
@pytest.mark.parametrize(
    ("env", "files", "message"),
    [
        (
            {"FLEET_INFLUX_TOKEN": f"{SECRET}\r\nX-Injected: 1"},
            {},
            "FLEET_INFLUX_TOKEN (environment): the InfluxDB token has a character HTTP headers"
            f" cannot carry at position {len(SECRET) + 1}",
        ),
        (
            {"FLEET_INFLUX_USER": "fleet", "FLEET_INFLUX_PASSWORD": f"{SECRET}€"},
            {},
            "FLEET_INFLUX_PASSWORD (environment): the InfluxDB password has a character",
        ),
        (
            {"FLEET_INFLUX_PASSWORD_FILE": "pw"},
            {"pw": f"{SECRET}\x00tail\n"},
            "FLEET_INFLUX_PASSWORD_FILE (environment): the InfluxDB password in",
        ),
        (
            {"FLEET_INFLUX_TOKEN_FILE": "big"},
            {"big": SECRET * 10_000},
            "cannot read the token file 'big' (larger than 64 KiB)",
        ),
        ({"FLEET_INFLUX_USER": f"{SECRET}\n"}, {}, "FLEET_INFLUX_USER (environment) must be one"),
        ({"FLEET_INFLUX_USER": f"{SECRET}ß€"}, {}, "the InfluxDB user has a character"),
        ({"FLEET_INFLUX_USER": f"{SECRET}:x"}, {}, "the InfluxDB user must not contain ':'"),
    ],
)
def test_bad_secrets_are_refused_without_being_shown(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    files: dict[str, str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(None, env={"FLEET_INFLUX_URL": "https://h:8086", **env})
    assert message in str(error.value)
    shown = f"{error.value} {error.value!r} {error.value.__cause__} {error.value.__context__}"
    assert SECRET not in shown
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[influx]\nurl = "http://h"\ntimeout_s = nan\n', "fleet.toml:3: influx.timeout_s must"),
        ('[influx]\nurl = "http://h"\nretry_total_s = inf\n', "up to 86400, got inf"),
        ('[influx]\nurl = "http://h"\nbatch_size = 10000000000\n', "influx.batch_size must"),
        ("[influx]\nurl = " + "[" * 3000 + "\n", "fleet.toml: invalid TOML: nested too deeply"),
        ("[influx]\nbatch_size = " + "1" * 5000 + "\n", "fleet.toml: invalid TOML: Exceeds"),
        ('[influx]\nurl = "http://h"\ndatabase = "a\\nb"\n', "influx.database must be one line"),
        ('[influx]\nurl = "http://h"\n[influx]\nurl = "http://i"\n', "fleet.toml: invalid TOML"),
    ],
)
def test_malformed_config_values_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text), env={})
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_an_oversized_config_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "#" * (2 * 1024 * 1024))
    with pytest.raises(ConfigError, match=r"fleet.toml: larger than 1 MiB"):
        load_config(path, env={})
