"""Entry point: `python agent.pyz serve|worker|version`."""

import sys

from fleet_agent import __version__
from fleet_agent.protocol import PROTOCOL


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "serve":
        from fleet_agent.serve import serve

        return serve(sys.stdin, sys.stdout)
    if command == "worker":
        from fleet_agent.worker import work

        return work(sys.stdin, sys.stdout)
    if command == "version":
        print("fleet-agent {} protocol {}".format(__version__, PROTOCOL))
        return 0
    sys.stderr.write("usage: agent.pyz serve|worker|version\n")
    return 2


if __name__ == "__main__":
    sys.exit(main())
