"""A device as fleet uses it, built from a host's resolved variables, and the checks that
turn a bad variable into a one-line error naming the file and line it came from."""

from __future__ import annotations

import getpass
import re
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet import paths, yamlfile
from fleet.errors import ConfigError
from fleet.inventory.gpu import GPU_VARS, gpu_settings

DEVICE_CLASSES = ("pi", "jetson", "mac", "gpu", "x86", "lab", "local")
LOCAL = "local"
# Relative to the login directory: SFTP and remote commands both start there.
DEFAULT_WORKDIR = ".cache/fleet-agent"

# A host's name is how runs, results and files refer to it, so it is a plain word (like a
# DNS name): no '/', '..' on its own, quotes, spaces or shell characters. Addresses with
# ':' (IPv6, `host:port`) go in ansible_host and ansible_port.
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
HOST_RULE = "letters, digits, '.', '_' or '-', starting with a letter or digit"
# What ssh takes as an address: a DNS name, an ssh_config alias or an IP address.
_ADDRESS = re.compile(r"[A-Za-z0-9:][A-Za-z0-9._:%-]{0,252}")
# A login name, as POSIX systems and macOS allow it (and user@domain for directories).
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@-]{0,63}")
# Tags are selectors of --devices, which splits at ','.
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")
_MAX_PATH = 4096

_FLEET_VARS = {"fleet_class", "fleet_python", "fleet_workdir", "fleet_tags", *GPU_VARS}
_SSH_ARGS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
# Read by ansible/provision.yml only; allowed here so one inventory serves both.
_PROVISIONING_VARS = {
    "fleet_venv",
    "fleet_base_python",
    "fleet_runtimes",
    "fleet_cuda",
    "fleet_onnxruntime_wheel",
    "fleet_skip_packages",
    "fleet_authorized_key",
    "fleet_authorized_keys_file",
}


@dataclass(frozen=True)
class Device:
    name: str
    host: str
    port: int = 22
    user: str | None = None
    key_file: str | None = None
    device_class: str = "x86"
    python: str = "python3"
    workdir: str = DEFAULT_WORKDIR
    tags: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts
    # ansible_ssh_common_args then ansible_ssh_extra_args, split as a shell would: ssh's own
    # options (-o ProxyJump=..., -J), read by the SSH transport; where the first was set.
    ssh_args: tuple[str, ...] = ()
    ssh_args_from: str = ""
    source: str = ""  # file:line the device was declared at, for error messages
    # Which GPU of its host the device measures on (fleet_gpu): a server with several GPUs
    # is several devices. None: the host's default (and no per-GPU lock).
    gpu: int | None = None
    # The host's own provider and options (fleet_provider, fleet_provider_options), as
    # written: they beat the suite's and its class's (fleet.suite.providers checks them
    # against the suite's runtimes at plan time), and where each was set.
    provider: str | None = None
    provider_options: tuple[tuple[str, object], ...] = ()
    provider_source: str = ""
    options_source: str = ""

    @property
    def is_local(self) -> bool:
        return self.name == LOCAL


def local_device() -> Device:
    """The built-in device: this machine, reached without SSH."""
    return Device(
        name=LOCAL,
        host="localhost",
        user=getpass.getuser(),
        device_class=LOCAL,
        python=sys.executable,
        workdir=str(paths.cache_dir() / "local-device"),
        groups=(LOCAL,),
        source="built-in",
    )


def check_host_name(name: str, where: str) -> None:
    if not HOST_NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: host name {yamlfile.show(name)} must be {HOST_RULE};"
            " put an address with ':' in ansible_host"
        )


def build_device(
    name: str,
    hvars: Mapping[str, Any],
    origins: Mapping[str, str],
    groups: tuple[str, ...],
    where: str,
    folder: Path,
) -> Device:
    """The device of host `name` from its resolved variables; `origins` says where each
    variable was set (file:line), `where` where the host was declared, `folder` the
    inventory file's folder (relative key files and known_hosts)."""

    def at(key: str) -> str:
        return origins.get(key, where)

    if name == LOCAL:
        raise ConfigError(f"{where}: 'local' is the built-in device; rename this host")
    for key in hvars:
        if key.startswith("fleet_") and key not in _FLEET_VARS | _PROVISIONING_VARS:
            raise ConfigError(
                f"{at(key)}: unknown variable {yamlfile.show(key)} for host {name!r};"
                f" fleet knows {', '.join(sorted(_FLEET_VARS))}"
            )
    device_class = hvars.get("fleet_class", "x86")
    if device_class not in DEVICE_CLASSES:
        raise ConfigError(
            f"{at('fleet_class')}: fleet_class {yamlfile.show(device_class)} of {name!r} is not"
            f" one of {', '.join(DEVICE_CLASSES)}"
        )
    port = hvars.get("ansible_port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(
            f"{at('ansible_port')}: ansible_port of {name!r} must be a port number from 1 to"
            f" 65535, not {yamlfile.show(port)}"
        )
    tags = hvars.get("fleet_tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ConfigError(f"{at('fleet_tags')}: fleet_tags of {name!r} must be a list of strings")
    for tag in tags:
        if not _TAG.fullmatch(tag):
            raise ConfigError(
                f"{at('fleet_tags')}: tag {yamlfile.show(tag)} of {name!r} must be 1-64 letters,"
                " digits, '.', '_', ':', '+' or '-', starting with a letter or digit"
            )
    host = _text(hvars, "ansible_host", at, _ADDRESS, "a host name or IP address")
    user = _text(hvars, "ansible_user", at, _USER, "a login name")
    key_file = _path(hvars, "ansible_ssh_private_key_file", at)
    if key_file is not None:
        key_path = Path(key_file).expanduser()
        if not key_path.is_absolute():  # Ansible resolves it against the inventory's folder
            key_path = folder / key_path
        key_file = str(key_path)
    known_hosts = folder / "known_hosts"
    ssh_args = [arg for key in _SSH_ARGS for arg in _split(hvars, key, at)]
    return Device(
        name=name,
        host=host or name,
        port=port,
        user=user,
        key_file=key_file,
        device_class=device_class,
        python=_path(hvars, "fleet_python", at) or "python3",
        workdir=_path(hvars, "fleet_workdir", at) or DEFAULT_WORKDIR,
        tags=tuple(tags),
        groups=groups,
        known_hosts=known_hosts if known_hosts.exists() else None,
        ssh_args=tuple(ssh_args),
        ssh_args_from=next((at(key) for key in _SSH_ARGS if key in hvars), ""),
        source=where,
        **gpu_settings(name, hvars, at),
    )


def _split(hvars: Mapping[str, Any], key: str, at: Callable[[str], str]) -> list[str]:
    """ssh options written as on its command line, split as Ansible splits them."""
    value = hvars.get(key)
    if value is None:
        return []
    if not isinstance(value, str):
        raise ConfigError(f"{at(key)}: {key} must be text, e.g. '-o ProxyJump=user@bastion:2222'")
    try:
        return shlex.split(value)
    except ValueError as exc:
        raise ConfigError(f"{at(key)}: {key} {value!r}: {exc}; fix its quotes") from None


def _text(
    hvars: Mapping[str, Any],
    key: str,
    at: Callable[[str], str],
    pattern: re.Pattern[str],
    what: str,
) -> str | None:
    """A variable that must be a plain word, as it becomes part of an SSH login; None when
    the host has none."""
    value = hvars.get(key)
    if value is None or (isinstance(value, str) and pattern.fullmatch(value)):
        return value
    raise ConfigError(f"{at(key)}: {key} must be {what}, not {yamlfile.show(value)}")


def _path(hvars: Mapping[str, Any], key: str, at: Callable[[str], str]) -> str | None:
    """A path here or on the device: one line of text (commands quote it); None when the
    host has none."""
    value = hvars.get(key)
    if value is None or yamlfile.is_line(value, _MAX_PATH):
        return value
    raise ConfigError(
        f"{at(key)}: {key} must be a path (text without control characters),"
        f" not {yamlfile.show(value)}"
    )
