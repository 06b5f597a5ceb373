"""What the agent tells the controller about a device: its facts and its runtime packages.

``collect()`` runs every probe (``probes.py``) for the ``sysinfo`` event and never raises;
``runtimes_installed()`` lists the runtime packages for the ``hello`` event. The parsers are in
``facts_parse.py``, the readers used while a case runs in ``live.py``.
"""

from typing import Dict

from fleet_agent import distributions
from fleet_agent.facts_parse import UNAVAILABLE, Facts
from fleet_agent.probes import PROBES


def collect() -> Facts:
    """All facts about this device; never raises."""
    facts: Facts = {}
    for keys, probe in PROBES:
        try:
            found = probe()
        except Exception:  # best-effort by design: a broken probe must not end the run
            found = {}
        for key in keys:
            facts.setdefault(key, UNAVAILABLE)
        for key, value in found.items():
            # An earlier probe's real value (cpuinfo's board Model) is kept over "unavailable".
            if value != UNAVAILABLE or key not in facts:
                facts[key] = value
    return facts


def runtimes_installed() -> Dict[str, str]:
    """Runtime packages installed here, with versions, for the hello event: from the names of
    their metadata folders (``distributions.installed``). Importing them would cost the agent
    seconds and hundreds of MB; ``importlib.metadata`` tens of milliseconds."""
    return distributions.installed()
