"""Import numpy and every runtime the playbook installed; print each one's version.

Run by the role (tasks/venv.yml) with the venv's python, from a folder on the device where
the role has put it beside the agent's own table of runtime packages
(agents/fleet_agent/distributions.py); the arguments are the pip requirements it installed.
Exits 1 naming what does not import. Python 3.8+, standard library only.
"""

import importlib
import os
import re
import sys

from distributions import DISTRIBUTIONS  # the agent's table, copied beside this script

# Distribution, as pip normalizes its name -> the module it installs.
MODULES = {name: module for module, names in DISTRIBUTIONS.items() for name in names}


def module_name(requirement):
    """The module a requirement (a name with a version spec, or a wheel path) provides, if
    the agent uses it; None for anything else."""
    name = os.path.basename(requirement)
    if name.endswith(".whl"):
        name = name.split("-")[0]  # a wheel's file name spells its distribution with "_"
    name = re.split(r"[<>=!~;\[ @]", name)[0]
    return MODULES.get(re.sub(r"[-_.]+", "-", name).lower())


def main(requirements):
    failed = False
    for requirement in requirements:
        name = module_name(requirement)
        if name is None:
            print(f"{requirement}: installed (fleet's agent does not import it)")
            continue
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # an ImportError, or a wheel built for another numpy
            print(f"{name}: does not import: {exc}", file=sys.stderr)
            failed = True
            continue
        line = f"{name} {getattr(module, '__version__', '(no version)')}"
        if name == "onnxruntime":
            line += " providers: " + ", ".join(module.get_available_providers())
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
