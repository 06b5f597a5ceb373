"""Scheduled runs: the systemd units and crontab line `fleet schedule` writes, and the run
lock (`fleet run --exclusive`) that keeps two scheduled runs from overlapping.

The units are checked by the real `systemd-analyze verify` (Debian's systemd package,
scripts/install-system-deps; no running systemd needed), with the real fleet console script
as ExecStart. The overlap tests start two real `fleet run` processes at once on the built-in
`local` device, one of them through the crontab line run by sh with cron's bare environment.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from test_cli_startup import HEAVY, imported

from fleet import runlock
from fleet.cli import main
from fleet.cli.run import run
from fleet.errors import ConfigError
from fleet.results.store import Store
from fleet.schedule.command import make_schedule
from fleet.schedule.cron import cron_fields, crontab_line
from fleet.schedule.times import _normalize, calendar
from fleet.schedule.units import exec_line, service_unit, timer_unit, units, verify

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "suites" / "smoke.yaml"
# Characters each reader of a unit or a crontab line takes apart: a space, both quotes, a
# backslash, a specifier (%), a variable ($), a shell glob and separators.
AWKWARD = "we ird \"q\" 'q' back\\slash 100% $HOME *;&"


@pytest.fixture(autouse=True)
def _analyze_installed() -> None:
    assert shutil.which("systemd-analyze"), "scripts/install-system-deps installs systemd"


def write_suite(folder: Path, name: str = "nightly", min_seconds: float = 0.0) -> Path:
    """The smoke suite with its paths made absolute, in `folder`; long enough, with
    `min_seconds`, that a second run started meanwhile finds the first still going."""
    data = yaml.safe_load(SMOKE.read_text())
    data["name"] = name
    data["measure"] = {
        "warmup_iterations": 5,
        "min_iterations": 20,
        "min_seconds": min_seconds,
        "max_seconds": max(min_seconds, 1.0) + 1,
        "repetitions": 1,
        "threads": 1,
        "batch": 1,
    }
    data.pop("budgets", None)
    for model in data["models"]:
        model["path"] = str((SMOKE.parent / model["path"]).resolve())
        model["dataset"] = str((SMOKE.parent / model["dataset"]).resolve())
    folder.mkdir(parents=True, exist_ok=True)
    suite = folder / "nightly.yaml"
    suite.write_text(yaml.safe_dump(data, sort_keys=False))
    return suite


def systemd_argv(line: str) -> list[str]:
    """ExecStart= read back as systemd.service(5) describes it: words split on spaces, a
    double-quoted word with C escapes, "\\;" a lone semicolon, then %% and $$ undoubled."""
    words, i = [], 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        if line[i] == '"':
            word, i = "", i + 1
            while line[i] != '"':
                word += line[i + 1] if line[i] == "\\" else line[i]
                i += 2 if line[i] == "\\" else 1
            i += 1
        else:
            end = line.find(" ", i) if " " in line[i:] else len(line)
            word, i = line[i:end], end
            word = ";" if word == "\\;" else word
        words.append(word.replace("%%", "%").replace("$$", "$"))
    return words


def setting(unit: str, key: str) -> list[str]:
    return [line.partition("=")[2] for line in unit.splitlines() if line.startswith(f"{key}=")]


# ---- the units -------------------------------------------------------------------------


@pytest.mark.parametrize("user", [False, True], ids=["system", "user"])
def test_units_pass_systemd_analyze_verify(tmp_path: Path, fleet_home: Path, user: bool) -> None:
    folder = tmp_path / AWKWARD
    suite = write_suite(folder)
    plan = make_schedule(
        suite,
        at="*-*-* 02:00",
        user=user,
        randomized_delay="15min",
        workdir=folder,
        env=["FLEET_INFLUX_URL=https://influx.lab:8086", f"FLEET_NOTE={AWKWARD}"],
        env_file=folder / "secrets.env",
        run_options=["--parallel", "4"],
        environ={},
    )
    files = units(plan)
    assert sorted(files) == ["fleet-nightly.service", "fleet-nightly.timer"]
    assert verify(files, user) == []

    service, timer = files["fleet-nightly.service"], files["fleet-nightly.timer"]
    script = str(Path(sys.executable).parent / "fleet")  # the real console script
    assert systemd_argv(setting(service, "ExecStart")[0]) == [
        script,
        "run",
        str(suite),
        "--store",
        str(fleet_home / "results.sqlite"),
        "--parallel",
        "4",
        "--exclusive",
        "nightly",
        "--if-busy",
        "skip",
    ]
    assert setting(service, "Type") == ["oneshot"]
    assert setting(service, "StandardOutput") == ["journal"]
    assert setting(service, "WorkingDirectory") == [str(folder).replace("%", "%%")]
    environment = [systemd_argv(value)[0] for value in setting(service, "Environment")]
    assert f"FLEET_HOME={fleet_home}" in environment
    assert f"FLEET_NOTE={AWKWARD}" in environment
    assert setting(service, "EnvironmentFile") == [f"-{folder / 'secrets.env'}".replace("%", "%%")]
    assert ("Wants=network-online.target" in service) is not user
    assert setting(timer, "OnCalendar") == ["*-*-* 02:00:00"]
    assert setting(timer, "Persistent") == ["true"]
    assert setting(timer, "RandomizedDelaySec") == ["15min"]
    assert setting(timer, "Unit") == ["fleet-nightly.service"]


def test_verify_catches_a_broken_unit(tmp_path: Path, fleet_home: Path) -> None:
    plan = make_schedule(write_suite(tmp_path), at="daily", workdir=tmp_path, environ={})
    files = units(plan)
    files[plan.service] = files[plan.service].replace("Type=oneshot", "Type=once")
    assert any("Type" in line or "type" in line for line in verify(files, False) or [])
    missing = units(plan)
    missing[plan.service] = missing[plan.service].replace(plan.argv[0], "/nonexistent/fleet")
    assert any("not executable" in line for line in verify(missing, False) or [])


@pytest.mark.parametrize(
    "argv",
    [
        ["/usr/bin/fleet", "run", "plain"],
        ["/opt/my fleet/bin/fleet", AWKWARD, ";", "", "%n", "$$", "${X}", 'a"b\\"c', "é"],
    ],
)
def test_exec_start_reads_back_as_the_same_argv(argv: list[str]) -> None:
    assert systemd_argv(exec_line(argv)) == argv


def test_no_secret_goes_into_a_unit(tmp_path: Path, fleet_home: Path) -> None:
    suite = write_suite(tmp_path)
    for name in ("FLEET_INFLUX_TOKEN", "FLEET_INFLUX_PASSWORD", "API_KEY", "MY_SECRET"):
        with pytest.raises(ConfigError, match=rf"--env {name}: a secret must not be written"):
            make_schedule(suite, at="daily", env=[f"{name}=x"], environ={})
    # A file that holds one is fine: only its path goes into the unit.
    plan = make_schedule(
        suite, at="daily", env=["FLEET_INFLUX_TOKEN_FILE=/etc/fleet/token"], environ={}
    )
    assert "FLEET_INFLUX_TOKEN_FILE=/etc/fleet/token" in service_unit(plan)
    # A secret set in the shell is not carried, and the warning says where it goes instead.
    plan = make_schedule(
        suite, at="daily", environ={"FLEET_INFLUX_TOKEN": "s3cret", "FLEET_INFLUX_URL": "u"}
    )
    text = " ".join(plan.warnings)
    assert "put FLEET_INFLUX_TOKEN=... in /etc/fleet/nightly.env (mode 600)" in text
    assert "FLEET_INFLUX_URL is set here but not in the schedule: add --env" in text
    everything = service_unit(plan) + timer_unit(plan) + crontab_line(plan)
    assert "s3cret" not in everything


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"at": "every night"}, "--at 'every night': Failed to parse calendar"),
        ({"at": "daily\nExecStartPre=/bin/sh"}, "has a control character"),
        ({"at": "daily", "randomized_delay": "soon"}, "--randomized-delay 'soon'"),
        ({"at": "daily", "randomized_delay": "8d"}, "at most 7 days"),
        ({"at": "daily", "name": "../etc"}, "run lock name '../etc'"),
        ({"at": "daily", "devices": "nowhere"}, "no device matches 'nowhere'"),
        ({"at": "daily", "run_options": ["--exclusive"]}, "--exclusive is set by fleet schedule"),
        ({"at": "daily", "env": ["1X=2"]}, "--env '1X=2': give NAME=VALUE"),
        ({"at": "daily", "env": ["FLEET_UNSET"]}, "--env FLEET_UNSET: not set here"),
    ],
)
def test_bad_input_is_one_clear_line(
    tmp_path: Path, fleet_home: Path, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_schedule(write_suite(tmp_path), environ={}, **kwargs)  # type: ignore[arg-type]
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


# ---- cron ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "fields"),
    [
        ("*-*-* 02:00", "0 2 * * *"),
        ("daily", "0 0 * * *"),
        ("hourly", "0 * * * *"),
        ("weekly", "0 0 * * 1"),
        ("monthly", "0 0 1 * *"),
        ("Mon..Fri 22:30", "30 22 * * 1-5"),
        ("Sat,Sun 06:15", "15 6 * * 6,0"),
        ("*:0/15", "0-59/15 * * * *"),
        ("*-*-* 01,13:05", "5 1,13 * * *"),
    ],
)
def test_calendar_times_become_crontab_fields(at: str, fields: str) -> None:
    normalized, _ = calendar(at)
    assert cron_fields(normalized) == fields


@pytest.mark.parametrize(
    ("at", "why"),
    [
        ("*-*-* 02:00:30", "not at second"),
        ("2027-*-* 02:00", "cron has no year"),
        ("Mon *-*-01 02:00", "the day of the month OR the weekday"),
        ("*-*-* 02:00 UTC", "drop the zone"),
    ],
)
def test_what_cron_cannot_say_is_refused(at: str, why: str) -> None:
    with pytest.raises(ConfigError, match=why):
        cron_fields(calendar(at)[0])


def test_the_fallback_reading_matches_systemd_analyze() -> None:
    for at in ("*-*-* 02:00", "daily", "weekly", "Mon..Fri 22:30", "12-24 18:00", "hourly"):
        assert _normalize(at) == calendar(at)[0]


def test_crontab_line(tmp_path: Path, fleet_home: Path) -> None:
    folder = tmp_path / "work 100%"
    suite = write_suite(folder)
    plan = make_schedule(
        suite,
        at="Mon..Fri 02:00",
        randomized_delay="10min",
        workdir=folder,
        env=["FLEET_NOTE=it's 100% $HOME"],
        env_file=folder / "secrets.env",
        if_busy="wait",
        lock_timeout_s=900,
        environ={},
    )
    comment, line = crontab_line(plan).splitlines()
    assert comment.startswith("# fleet nightly: nightly on local at Mon..Fri *-*-* 02:00:00")
    assert line.startswith("0 2 * * 1-5 ")
    command = line.split(" ", 5)[5]
    assert "%" not in command.replace("\\%", "")  # cron would make a line break of it
    unescaped = command.replace("\\%", "%")  # what cron hands to sh
    steps = unescaped.split(" && ")
    assert steps[0] == f"cd {shlex.quote(str(folder))}"
    env_file = shlex.quote(str(folder / "secrets.env"))
    assert f"if [ -r {env_file} ]; then set -a; . {env_file}; set +a; fi" in steps
    assert 'sleep "$(shuf -i 0-600 -n 1)"' in steps
    words = shlex.split(steps[-1])
    assert words[-1] == "2>&1"
    assert words[-2] == f">>{fleet_home / 'logs' / 'nightly.log'}"
    assert f"FLEET_HOME={fleet_home}" in words
    assert "FLEET_NOTE=it's 100% $HOME" in words
    start = words.index(plan.argv[0])
    assert words[start:-2] == list(plan.argv)
    assert plan.argv[-6:] == (
        "--exclusive",
        "nightly",
        "--if-busy",
        "wait",
        "--lock-timeout",
        "900",
    )


# ---- the CLI ---------------------------------------------------------------------------


def test_install_show_list_remove(tmp_path: Path, fleet_home: Path) -> None:
    suite = write_suite(tmp_path / "suites")
    units, env_file = tmp_path / "units", tmp_path / "config" / "nightly.env"
    common = ["--unit-dir", str(units), "--user"]
    argv = ["schedule", "install", str(suite), "--at", "*-*-* 03:30", *common]
    runner = CliRunner()

    printed = runner.invoke(main, [*argv, "--print", "--cron", "--randomized-delay", "900"])
    assert printed.exit_code == 0, printed.output
    assert f"# {units / 'fleet-nightly.service'}" in printed.output
    assert "RandomizedDelaySec=15min" in printed.output
    assert "\n30 3 * * * cd " in printed.output
    assert not units.exists()  # --print and --cron install nothing

    done = runner.invoke(main, [*argv, "--env-file", str(env_file), "--", "--retries", "1"])
    assert done.exit_code == 0, done.output
    assert f"wrote {env_file} (mode 600)" in done.output
    assert "systemctl --user daemon-reload && systemctl --user enable --now" in done.output
    assert (env_file.stat().st_mode & 0o777) == 0o600
    assert ((units / "fleet-nightly.timer").stat().st_mode & 0o777) == 0o644
    env_file.chmod(0o644)
    again = runner.invoke(main, [*argv, "--env-file", str(env_file)])
    assert f"warning: {env_file} is readable by others (mode 644)" in again.output

    listed = runner.invoke(main, ["schedule", "list", *common])
    assert listed.output.split() == ["nightly"]
    shown = runner.invoke(main, ["schedule", "show", "nightly", *common])
    assert shown.exit_code == 0, shown.output
    assert "OnCalendar=*-*-* 03:30:00" in shown.output
    assert shown.output.rstrip().endswith("run lock nightly: free")

    removed = runner.invoke(main, ["schedule", "remove", "nightly", *common])
    assert removed.exit_code == 0, removed.output
    assert f"kept {env_file}" in removed.output
    assert list(units.iterdir()) == [] and env_file.exists()
    gone = runner.invoke(main, ["schedule", "show", "nightly", *common])
    assert gone.exit_code == 2
    assert "no schedule 'nightly'" in gone.output


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (["--", "--parallel", "zero"], "after --: Invalid value for '--parallel'"),
        (["--", "--nope"], "after --: No such option '--nope'"),
    ],
)
def test_run_options_are_checked_by_fleet_run(
    tmp_path: Path, fleet_home: Path, extra: list[str], problem: str
) -> None:
    argv = ["schedule", "install", str(write_suite(tmp_path)), "--at", "daily", "--print"]
    result = CliRunner().invoke(main, [*argv, *extra])
    assert result.exit_code == 2
    assert problem in result.output


def test_run_lock_options_go_with_exclusive() -> None:
    result = CliRunner().invoke(main, ["run", str(SMOKE), "--if-busy", "skip"])
    assert result.exit_code == 2
    assert "--if-busy and --lock-timeout go with --exclusive" in result.output


def test_schedule_help_imports_no_heavy_library() -> None:
    assert not HEAVY & imported("schedule", "install", "--help")


def test_the_ci_files_in_the_docs_parse_and_run_fleet_run() -> None:
    """docs/nightly.md's workflow and GitLab job: valid YAML, the schedules and the
    self-hosted runner asked for, and each fleet command one that `fleet run` accepts."""
    text = (ROOT / "docs" / "nightly.md").read_text()
    github, gitlab = (yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S))
    assert github[True]["schedule"] == [{"cron": "0 2 * * *"}]  # YAML 1.1 reads `on` as true
    job = github["jobs"]["nightly"]
    assert job["runs-on"][0] == "self-hosted"
    assert job["steps"][2]["env"] == {"FLEET_INFLUX_TOKEN": "${{ secrets.FLEET_INFLUX_TOKEN }}"}
    nightly = gitlab["fleet-nightly"]
    assert nightly["rules"][0]["if"].startswith('$CI_PIPELINE_SOURCE == "schedule"')
    assert "FLEET_INFLUX_TOKEN" not in nightly["variables"]
    commands = [step.get("run", "") for step in job["steps"]] + nightly["script"]
    runs = [shlex.split(c.split("|")[0]) for c in commands if "fleet run" in c]
    assert len(runs) == 2
    for argv in runs:
        assert argv[1] == "run" and argv[-4:] == ["--exclusive", "nightly", "--if-busy", "skip"]
        run.make_context("fleet run", argv[2:])  # raises on an unknown or invalid option


# ---- the run lock ----------------------------------------------------------------------


def test_a_held_lock_is_skipped_or_waited_for(tmp_path: Path) -> None:
    said: list[str] = []
    with runlock.exclusive("nightly", "smoke", directory=tmp_path) as held:
        assert held
        holder = runlock.holder("nightly", tmp_path)
        assert holder is not None and holder.pid == os.getpid() and holder.suite == "smoke"
        with runlock.exclusive(
            "nightly", "smoke", if_busy="skip", directory=tmp_path, say=said.append
        ) as second:
            assert not second
        assert len(said) == 1
        assert said[0].startswith(f"skipped: run lock 'nightly' is held by pid {os.getpid()}")
        assert "(suite smoke, " in said[0] and said[0].endswith("(exit 0)")
        with (
            pytest.raises(runlock.RunLockTimeout, match=r"still held by pid .* after 0.2 s"),
            runlock.exclusive("nightly", "smoke", timeout_s=0.2, directory=tmp_path),
        ):
            pass
    assert runlock.holder("nightly", tmp_path) is None

    # A waiting run goes on as soon as the holder lets go.
    said.clear()
    entered = threading.Event()

    def hold_briefly() -> None:
        with runlock.exclusive("nightly", "first", directory=tmp_path):
            entered.set()
            time.sleep(1.0)

    thread = threading.Thread(target=hold_briefly)
    thread.start()
    entered.wait(10)
    with runlock.exclusive("nightly", "second", directory=tmp_path, say=said.append) as held:
        assert held and not thread.is_alive()
    thread.join()
    assert len(said) == 1 and said[0].startswith("waiting up to 3600 s for run lock 'nightly'")


def test_no_lock_without_a_name(tmp_path: Path) -> None:
    with runlock.exclusive(None, "smoke", directory=tmp_path) as held:
        assert held
    assert list(tmp_path.iterdir()) == []


# ---- two scheduled runs at once --------------------------------------------------------


def wait_for_holder(name: str, lock_dir: Path, first: subprocess.Popen[str]) -> runlock.Holder:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        holder = runlock.holder(name, lock_dir)
        if holder is not None:
            return holder
        assert first.poll() is None, first.communicate()
        time.sleep(0.1)
    raise AssertionError("the first run never took the lock")


@pytest.mark.slow
def test_two_cron_runs_at_once_the_second_skips(tmp_path: Path, fleet_home: Path) -> None:
    """Both run the crontab line's command through sh, with cron's bare environment."""
    suite = write_suite(tmp_path, min_seconds=4)
    plan = make_schedule(suite, at="daily", workdir=tmp_path, environ={})
    command = crontab_line(plan).splitlines()[1].split(" ", 5)[5].replace("\\%", "%")
    cron_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SHELL": "/bin/sh"}
    start = [["/bin/sh", "-c", command]]
    first = subprocess.Popen(*start, env=cron_env, text=True)
    holder = wait_for_holder("nightly", fleet_home / "locks", first)
    second = subprocess.run(*start, env=cron_env, timeout=120, check=False)
    assert second.returncode == 0
    assert first.wait(timeout=300) in (0, 1)

    log = (fleet_home / "logs" / "nightly.log").read_text()
    skipped = [line for line in log.splitlines() if line.startswith("skipped:")]
    assert len(skipped) == 1, log
    assert skipped[0].startswith(f"skipped: run lock 'nightly' is held by pid {holder.pid}")
    assert "(suite nightly, " in skipped[0] and "started 20" in skipped[0]
    assert skipped[0].endswith("this run did nothing (exit 0)")
    runs = Store(fleet_home / "results.sqlite").runs()
    assert len(runs) == 1 and runs[0].exit_code in (0, 1)


@pytest.mark.slow
def test_two_runs_at_once_the_second_waits(tmp_path: Path, fleet_home: Path) -> None:
    """Both run the service's ExecStart argv, in its working directory and environment."""
    suite = write_suite(tmp_path, min_seconds=3)
    plan = make_schedule(suite, at="daily", workdir=tmp_path, if_busy="wait", environ={})
    env = {**os.environ, **dict(plan.environment)}

    def start() -> subprocess.Popen[str]:
        return subprocess.Popen(
            plan.argv, cwd=plan.workdir, env=env, text=True, stderr=subprocess.PIPE
        )

    first = start()
    holder = wait_for_holder("nightly", fleet_home / "locks", first)
    assert holder.pid == first.pid
    second = start()
    _, second_err = second.communicate(timeout=300)
    first.communicate(timeout=300)
    assert first.returncode in (0, 1) and second.returncode in (0, 1), second_err
    waiting = [line for line in second_err.splitlines() if line.startswith("waiting")]
    assert waiting == [
        f"waiting up to 3600 s for run lock 'nightly', held by {holder.describe()}"
    ], second_err

    runs = Store(fleet_home / "results.sqlite").runs()
    assert len(runs) == 2
    earlier, later = runs
    assert earlier.finished_ns is not None and later.finished_ns is not None
    assert later.started_ns >= earlier.finished_ns  # the second began after the first ended
