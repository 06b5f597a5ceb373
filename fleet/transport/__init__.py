"""Transports: how the controller reaches a device (SSH, or a subprocess for `local`)."""

from fleet.inventory import Device
from fleet.transport.base import Process, Transport
from fleet.transport.local import LocalTransport
from fleet.transport.ssh import SSHTransport

__all__ = ["LocalTransport", "Process", "SSHTransport", "Transport", "connect"]


def connect(device: Device) -> Transport:
    """The transport for a device: a subprocess for the built-in one, SSH for the rest."""
    if device.is_local:
        return LocalTransport(device)
    return SSHTransport(device)
