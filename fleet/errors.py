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
    """A device could not be used: unreachable, refused, or its agent failed."""

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device


class HostKeyError(DeviceError):
    """The device's SSH host key is unknown or changed."""


class ConversionError(FleetError):
    """Converting a model to a variant failed."""


class SinkError(FleetError):
    """Results could not be written to an external database."""
