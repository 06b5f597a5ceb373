"""One exception tree for everything fleet expects to go wrong.

    FleetError                 str(e) is one line naming the file/device and the fix
     ├── ConfigError           bad inventory, suite, config or model input
     ├── DeviceError           a device cannot be reached or its agent failed
     │    └── HostKeyError     unknown or changed SSH host key
     ├── ConversionError       a converter failed on a model variant
     └── SinkError             the result database refused or is unreachable

The CLI maps every FleetError to exit code 2; anything else is a bug (exit 3).
"""

from __future__ import annotations


class FleetError(Exception):
    """An expected failure; its message is shown to the user as one line."""


class ConfigError(FleetError):
    """Invalid user input: inventory, suite, configuration or model file."""


class DeviceError(FleetError):
    """A device could not be used: unreachable, refused, or its agent failed. `kind` says
    which, for the records of the cases it could not run (one of DEVICE_ERROR_KINDS)."""

    def __init__(self, device: str, message: str, kind: str = "error") -> None:
        super().__init__(f"{device}: {message}")
        self.device = device
        self.kind = kind


# What went wrong with a device, as its failed cases record it.
DEVICE_ERROR_KINDS = (
    "unreachable",  # no connection
    "login",  # the device answered but refused the login (or the key file is missing)
    "host_key",  # unknown or changed host key
    "connection_lost",  # the connection broke mid-run
    "agent_lost",  # the agent died (a signal, or a Python without numpy / a runtime)
    "timeout",  # the device stopped answering (no heartbeat)
    "disk_full",  # no space left on the device
    "busy",  # another run holds the device
    "interrupted",  # the run was stopped (Ctrl-C, SIGTERM)
    "error",  # anything else: the message says what
)


class HostKeyError(DeviceError):
    """The device's SSH host key is unknown or changed."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(device, message, kind="host_key")


class ConversionError(FleetError):
    """Converting a model to a variant failed."""


class SinkError(FleetError):
    """Results could not be written to an external database."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what CI and systemd send), raised where Ctrl-C raises KeyboardInterrupt so
    that one path stops a run and stores what it got; exit code 143."""

    exit_code = 143
