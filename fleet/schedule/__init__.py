"""Scheduled runs with the machinery people already run: a systemd service + timer pair, or a
crontab line where there is no systemd (`fleet schedule`; docs/nightly.md).

Both start one command, `fleet run SUITE ... --exclusive NAME --if-busy skip|wait`, so a
run that finds the previous one still going skips or waits (fleet/runlock.py) instead of
piling up. Every argument is written the way its reader parses it: systemd's command-line
quoting for ExecStart= (specifiers `%` and variables `$` doubled), shlex for the shell that
cron starts. Secrets never go into a unit file (every user can read /etc/systemd/system and
~/.config): the service reads them from an EnvironmentFile= of mode 600.

The modules: `command` (what a schedule runs, checked now), `times` (the calendar and the
delay), `units` (the systemd service and timer, and their check), `systemd` (installing,
listing and removing them here), `cron` (the crontab line); `checks` and `tools` below.
"""
