"""fleet.toml plus FLEET_ environment variables, validated into typed objects at load time.

Secrets (InfluxDB password and token) come only from the environment or from a file, and live
in a `Secret` whose repr and str are `***`, so they cannot leak into logs, errors or results.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from fleet.errors import ConfigError
from fleet.yamlfile import is_line, read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

CONFIG_NAME = "fleet.toml"

Dialect = Literal["v1", "v2"]


class Secret:
    """A password or token: usable by code through `reveal()`, shown to people as `***`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__


@dataclass(frozen=True)
class InfluxConfig:
    url: str
    dialect: Dialect = "v1"
    database: str = "fleet"  # v1 dialect
    retention_policy: str = ""  # v1 dialect; empty: the database's default policy
    bucket: str = "fleet"  # v2 dialect
    org: str = ""  # v2 dialect
    user: str = ""  # v1 dialect with authentication
    password: Secret | None = None
    token: Secret | None = None
    batch_size: int = 5000
    timeout_s: float = 10.0
    retry_total_s: float = 15.0  # the longest a push keeps retrying a server that is down
    # During a run, what is stored is sent this often (fleet.results.stream).
    stream_interval_s: float = 3.0
    gzip: bool = True  # compress writes; off saves CPU on both ends when InfluxDB is on this host

    @property
    def sink(self) -> str:
        """Names the destination, so the spool knows what was sent where."""
        if self.dialect == "v1":
            return f"influx-v1 {self.url} db={self.database} rp={self.retention_policy}"
        return f"influx-v2 {self.url} org={self.org} bucket={self.bucket}"


@dataclass(frozen=True)
class Config:
    path: Path | None  # the fleet.toml it came from, None when only the environment was used
    influx: InfluxConfig | None  # None when no InfluxDB URL is configured
    warnings: tuple[str, ...] = ()  # settings that work but should change; the CLI shows them

    def require_influx(self) -> InfluxConfig:
        if self.influx is None:
            where = self.path or CONFIG_NAME
            raise ConfigError(
                f"{where}: no InfluxDB configured; set FLEET_INFLUX_URL or write"
                ' [influx] url = "http://HOST:8086" in fleet.toml'
            )
        return self.influx


# fleet.toml key in [influx] -> environment variable that overrides it.
_ENV = {
    "url": "FLEET_INFLUX_URL",
    "dialect": "FLEET_INFLUX_DIALECT",
    "database": "FLEET_INFLUX_DB",
    "retention_policy": "FLEET_INFLUX_RP",
    "bucket": "FLEET_INFLUX_BUCKET",
    "org": "FLEET_INFLUX_ORG",
    "user": "FLEET_INFLUX_USER",
}
# Each number's largest value: NaN, infinity or 1e308 would reach the HTTP client as a
# timeout that never ends or a batch that never fills.
_NUMBERS = {
    "batch_size": 1_000_000,
    "timeout_s": 3600,
    "retry_total_s": 86_400,
    "stream_interval_s": 3600,
}
_SWITCHES = {"gzip": "FLEET_INFLUX_GZIP"}
_SECRETS = ("password", "token")
# A token or password file holds one line; a bigger file is the wrong one (or /dev/zero).
_MAX_SECRET_BYTES = 64 * 1024
_MAX_SETTING = 4096
_KNOWN = (*_ENV, *_NUMBERS, *_SWITCHES, *(f"{name}_file" for name in _SECRETS))


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read `path` (or ./fleet.toml if it exists) and apply FLEET_ environment overrides."""
    env = os.environ if env is None else env
    if path is None and Path(CONFIG_NAME).is_file():
        path = Path(CONFIG_NAME)
    table: dict[str, object] = {}
    text = ""
    if path is not None:
        text, table = _read(path)
    where = _Where(path, text)
    settings = dict(table)
    for key, var in (*_ENV.items(), *_SWITCHES.items()):
        if env.get(var):
            settings[key] = env[var]
            where.env[key] = var
    if not settings.get("url"):
        return Config(path, None)
    influx = _influx(settings, env, where)
    return Config(path, influx, _cleartext(influx, where))


def _cleartext(influx: InfluxConfig, where: _Where) -> tuple[str, ...]:
    """A token or password sent over plain http:// to another machine can be read on the way."""
    secret = "token" if influx.token else "password" if influx.password else ""
    host = urlsplit(influx.url).hostname or ""
    if not secret or urlsplit(influx.url).scheme != "http" or _loopback(host):
        return ()
    return (
        f"{where('url')}: the InfluxDB {secret} goes to {host} unencrypted over http://;"
        " use an https:// URL",
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Where:
    """Turns a setting's name into where it came from: `fleet.toml:7` or an environment variable."""

    def __init__(self, path: Path | None, text: str) -> None:
        self.path, self.text = path, text
        self.env: dict[str, str] = {}

    def __call__(self, key: str) -> str:
        if key in self.env:
            return f"{self.env[key]} (environment)"
        line = _line_of(self.text, key)
        return f"{self.path}:{line}: influx.{key}" if line else f"{self.path}: influx.{key}"


def _read(path: Path) -> tuple[str, dict[str, object]]:
    text = read_text(path)
    try:
        document = tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, or an integer of more than 4300 digits
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    for section in document:
        if section != "influx":
            raise ConfigError(
                f"{path}:{_line_of(text, section)}: unknown section [{section}];"
                " fleet.toml has only [influx]"
            )
    table = document.get("influx", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}:{_line_of(text, 'influx')}: influx must be a [influx] table")
    for key in table:
        if key in _SECRETS:
            raise ConfigError(
                f"{path}:{_line_of(text, key)}: influx.{key} must not be written in fleet.toml;"
                f" use {key}_file = PATH or the FLEET_INFLUX_{key.upper()} environment variable"
            )
        if key not in _KNOWN:
            raise ConfigError(
                f"{path}:{_line_of(text, key)}: unknown key influx.{key};"
                f" known keys: {', '.join(_KNOWN)}"
            )
    return text, table


def _line_of(text: str, key: str) -> int:
    """The first line that sets `key = ...` or opens the table `[key]`, 0 if none does."""
    pattern = re.compile(rf"^\s*\[?\s*{re.escape(key)}\s*[=\]]")
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            return number
    return 0


def _influx(settings: Mapping[str, object], env: Mapping[str, str], where: _Where) -> InfluxConfig:
    text = {key: _string(settings, key, where) for key in _ENV if key in settings}
    if "user" in text:
        _check_header_text(text["user"], f"{where('user')}: the InfluxDB user")
        if ":" in text["user"]:
            raise ConfigError(
                f"{where('user')}: the InfluxDB user must not contain ':', where HTTP basic"
                " authentication ends the user name"
            )
    url = text["url"].rstrip("/")
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise ConfigError(
            f"{where('url')}: the URL must not hold credentials; put them in"
            " FLEET_INFLUX_USER and FLEET_INFLUX_PASSWORD, not in the URL"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"{where('url')}: {url!r} is not an http(s) URL; write it like http://localhost:8086"
        )
    dialect = text.get("dialect", "v1")
    if dialect not in ("v1", "v2"):
        raise ConfigError(
            f"{where('dialect')}: dialect must be v1 (InfluxDB 1.x, 2.x, 3.x /write) or v2"
            f" (influxdb-client: 2.x, 3.x), got {dialect!r}"
        )
    numbers = {key: _positive(settings, key, where) for key in _NUMBERS if key in settings}
    gzip = _switch(settings, "gzip", where) if "gzip" in settings else True
    return InfluxConfig(
        url=url,
        dialect="v1" if dialect == "v1" else "v2",
        database=text.get("database", "fleet"),
        retention_policy=text.get("retention_policy", ""),
        bucket=text.get("bucket", "fleet"),
        org=text.get("org", ""),
        user=text.get("user", ""),
        password=_secret("password", settings, env, where),
        token=_secret("token", settings, env, where),
        batch_size=int(numbers.get("batch_size", 5000)),
        timeout_s=float(numbers.get("timeout_s", 10.0)),
        retry_total_s=float(numbers.get("retry_total_s", 15.0)),
        stream_interval_s=float(numbers.get("stream_interval_s", 3.0)),
        gzip=gzip,
    )


def _string(settings: Mapping[str, object], key: str, where: _Where) -> str:
    value = settings[key]
    if not isinstance(value, str):
        # The type only: the value of `user` is as private as the password beside it.
        raise ConfigError(f"{where(key)} must be a string in quotes, got {type(value).__name__}")
    if value and not is_line(value, _MAX_SETTING):
        raise ConfigError(
            f"{where(key)} must be one line of text (at most {_MAX_SETTING} characters, no"
            " control characters)"
        )
    return value


def _check_header_text(value: str, what: str) -> None:
    """A token, user or password travels in an HTTP header: Latin-1 and no line break, or
    the HTTP client fails with the value in its message (or the header is split). The
    message names the position, never the value."""
    for index, char in enumerate(value):
        if not (" " <= char <= "~" or "\xa0" <= char <= "\xff"):
            raise ConfigError(
                f"{what} has a character HTTP headers cannot carry at position {index + 1} (a"
                " control character such as a line break, or one outside Latin-1); set it"
                " again without it"
            )


def _positive(settings: Mapping[str, object], key: str, where: _Where) -> float:
    value = settings[key]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= _NUMBERS[key]  # False for NaN too
    ):
        raise ConfigError(
            f"{where(key)} must be a positive number up to {_NUMBERS[key]}, got {value!r}"
        )
    if key == "batch_size" and not isinstance(value, int):
        raise ConfigError(f"{where(key)} must be a whole number, got {value!r}")
    return float(value)


def _switch(settings: Mapping[str, object], key: str, where: _Where) -> bool:
    """true or false in fleet.toml; true/false, 1/0, yes/no or on/off in the environment."""
    value = settings[key]
    if isinstance(value, bool):
        return value
    words = {"true": True, "1": True, "yes": True, "on": True}
    words |= {"false": False, "0": False, "no": False, "off": False}
    if isinstance(value, str) and value.strip().lower() in words:
        return words[value.strip().lower()]
    raise ConfigError(f"{where(key)} must be true or false, got {value!r}")


def _secret(
    name: str, settings: Mapping[str, object], env: Mapping[str, str], where: _Where
) -> Secret | None:
    """The environment variable wins, then its _FILE variant, then `<name>_file` in fleet.toml."""
    var = f"FLEET_INFLUX_{name.upper()}"
    if env.get(var):
        _check_header_text(env[var], f"{var} (environment): the InfluxDB {name}")
        return Secret(env[var])
    if env.get(f"{var}_FILE"):
        origin, file = f"{var}_FILE (environment)", env[f"{var}_FILE"]
    elif f"{name}_file" in settings:
        origin, file = where(f"{name}_file"), _string(settings, f"{name}_file", where)
        # A relative path in fleet.toml means relative to that file, not to the shell's folder.
        file = str((where.path or Path()).parent / Path(file).expanduser())
    else:
        return None
    value = _read_secret(Path(file).expanduser(), f"{origin}: cannot read the {name} file {file!r}")
    _check_header_text(value, f"{origin}: the InfluxDB {name} in {file!r}")
    return Secret(value)


def _read_secret(file: Path, cannot: str) -> str:
    """The one line of a token or password file. No exception is chained: a decoding
    error carries the file's bytes."""
    try:
        with file.open("rb") as handle:
            data = handle.read(_MAX_SECRET_BYTES + 1)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        reason = getattr(exc, "strerror", None) or "not a path"
        raise ConfigError(f"{cannot} ({reason}); fix the path") from None
    if len(data) > _MAX_SECRET_BYTES:
        raise ConfigError(f"{cannot} (larger than {_MAX_SECRET_BYTES // 1024} KiB); fix the path")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{cannot} (not UTF-8 text); fix the path") from None
