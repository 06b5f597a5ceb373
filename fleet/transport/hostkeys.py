"""Strict host-key checking over every known_hosts file OpenSSH would read: the one beside
the inventory, UserKnownHostsFile (~/.ssh/known_hosts) and GlobalKnownHostsFile. A key in
any of them is accepted, a different key of the same type in any of them is refused, and an
unknown key is refused whatever StrictHostKeyChecking says."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import paramiko
from paramiko.hostkeys import HostKeyEntry, InvalidHostKey

from fleet.errors import HostKeyError
from fleet.transport.sshconfig import Hop, parsed_once


class KnownHosts:
    """A known_hosts file, indexed by host name; hashed names (`|1|salt|hash`) are matched
    the way paramiko matches them."""

    def __init__(self, path: Path) -> None:
        self.by_name: dict[str, dict[str, paramiko.PKey]] = {}
        self.hashed = paramiko.HostKeys()
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                entry = HostKeyEntry.from_line(line, number)
            except (paramiko.SSHException, InvalidHostKey):
                continue  # as paramiko's loader: an entry it cannot read is no entry
            if entry is None or entry.key is None:
                continue
            key_type = entry.key.get_name()
            for name in entry.hostnames:
                if name.startswith("|1|"):
                    self.hashed.add(name, key_type, entry.key)
                else:  # the first entry for a name and key type wins, as in paramiko
                    self.by_name.setdefault(name, {}).setdefault(key_type, entry.key)

    def keys_of(self, name: str) -> dict[str, paramiko.PKey]:
        found = dict(self.by_name.get(name, {}))
        hashed = self.hashed.lookup(name) if len(self.hashed) else None
        for key_type, key in (hashed or {}).items():
            found.setdefault(key_type, key)
        return found


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's way of showing a key: SHA256:base64 without padding."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def key_name(hop: Hop) -> str:
    return hop.hostname if hop.port == 22 else f"[{hop.hostname}]:{hop.port}"


def known_keys(hop: Hop) -> list[tuple[Path, dict[str, paramiko.PKey]]]:
    """Each known_hosts file that exists, with its keys for this hop (each file parsed once
    per run, not once per device)."""
    name = key_name(hop)
    return [
        (path, parsed_once("known_hosts", path, KnownHosts).keys_of(name))
        for path in dict.fromkeys(hop.known_hosts)
        if path.is_file()
    ]


def trust(client: paramiko.SSHClient, hop: Hop) -> None:
    """Give `client` the hop's known keys, one per type (so that paramiko asks the server
    for a type it knows), and a policy that refuses a key none of the files has."""
    ours = client.get_host_keys()
    for _, keys in known_keys(hop):
        for key_type, key in keys.items():
            if ours.lookup(key_name(hop)) is None or key_type not in ours[key_name(hop)]:
                ours.add(key_name(hop), key_type, key)
    client.set_missing_host_key_policy(_Refuse(hop))


def check(hop: Hop, offered: paramiko.PKey) -> None:
    """Refuse `offered` unless a file knows it and none knows another key of its type."""
    name = key_name(hop)
    found = known_keys(hop)
    for path, keys in found:
        known = keys.get(offered.get_name())
        if known is not None and known != offered:
            raise HostKeyError(
                hop.device,
                f"{_named(hop)}host key of {name} CHANGED (known {fingerprint(known)} in {path},"
                f" offered {fingerprint(offered)}); if it was really reinstalled:"
                f" ssh-keygen -R '{name}' -f {path} and add the new key",
            )
    if any(offered.get_name() in keys for _, keys in found):
        return
    files = ", ".join(str(p) for p in dict.fromkeys(hop.known_hosts))
    ignored = f" ({hop.weak_checking} is not followed)" if hop.weak_checking else ""
    raise HostKeyError(
        hop.device,
        f"{_named(hop)}unknown host key {fingerprint(offered)} for {name} (not in {files})"
        f"{ignored}; compare it with `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on"
        f" that host, then: ssh-keyscan -p {hop.port} {hop.hostname} >> {hop.known_hosts[0]}",
    )


def _named(hop: Hop) -> str:
    return f"{hop.label} ({hop.where}): " if hop.label else ""


class _Refuse(paramiko.MissingHostKeyPolicy):
    """paramiko asks this when no file has a key of the offered type: `check` refuses it,
    naming the key, so the user can compare it with the host's own before trusting it."""

    def __init__(self, hop: Hop) -> None:
        self.hop = hop

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        check(self.hop, key)
