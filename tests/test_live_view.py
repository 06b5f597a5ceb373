"""Progress worth watching: the live view in a real pseudo-terminal, plain lines when piped,
the converter environment's steps, and a results table that says why a result is noisy in
the same words as the progress."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rich.console import Console

from fleet.artifacts import converter_env
from fleet.cli.live_view import render, watching
from fleet.cli.progress_board import Board
from fleet.inventory import Device
from fleet.plan import Plan, make_plan
from fleet.progress import LARGE_BYTES, SENDING, sending
from fleet.results.record import Record, make_record
from fleet.results.tables import result_line, results_table
from fleet.suite import load_suite

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "suites" / "smoke.yaml"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
CASE = "digits_mlp/onnx:fp32"


def lab_suite(folder: Path, **measure: float) -> Path:
    """The smoke suite with a data set over LARGE_BYTES (the digits, tiled), so that its push
    has a running count; no latency budget (a busy machine misses it)."""
    digits = np.load(ROOT / "zoo" / "digits_test.npz")
    big = folder / "digits_big.npz"
    np.savez(big, inputs=np.tile(digits["inputs"], (20, 1)), labels=np.tile(digits["labels"], 20))
    assert big.stat().st_size > LARGE_BYTES
    suite = yaml.safe_load(SMOKE.read_text())
    (model,) = suite["models"]
    model.update(path=str(ROOT / "zoo" / "digits_mlp.onnx"), dataset=str(big))
    # Light: one repetition of a short timed phase, so that a busy machine finishes it.
    suite["measure"].update(repetitions=1, min_iterations=50, max_seconds=5, **measure)
    del suite["budgets"]["p95_ms"]
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def fleet_run(lab: Path, suite: Path, store: Path) -> list[str]:
    argv = [sys.executable, "-m", "fleet", "run", str(suite), "--devices", "lab"]
    return [*argv, "--inventory", str(lab / "inventory.yaml"), "--store", str(store)]


def in_terminal(argv: list[str], columns: int = 120, lines: int = 40) -> tuple[int, str]:
    """Run argv with a pseudo-terminal as its stdin, stdout and stderr, as a user's shell
    would; everything it wrote, escapes and all."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(lines)}
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 540
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
        code = proc.wait(timeout=60)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_live_view_in_a_terminal(lab: Path, tmp_path: Path, fleet_home: Path) -> None:
    code, raw = in_terminal(fleet_run(lab, lab_suite(tmp_path), tmp_path / "r.sqlite"))
    assert "\x1b[1A" in raw and "\x1b[2K" in raw, raw[-3000:]  # drawn again in place
    text = [line.rstrip() for line in re.split(r"[\r\n]+", ANSI.sub("", raw))]
    final = max(i for i, line in enumerate(text) if line.startswith("3 of 3 devices done"))
    frame = {line.split()[0]: line for line in text[final - 3 : final]}  # the last rows drawn
    ends = {device: line.split()[1] for device, line in frame.items()}
    assert set(ends) == {"lab1", "lab2", "lab3"} and set(ends.values()) <= {"done", "error"}
    # A machine busy enough can fail a device (a timeout): the view says so, and the exit code.
    assert code == (0 if set(ends.values()) == {"done"} else 2), raw[-3000:]
    assert "done" in ends.values(), f"no device finished (busy machine?): {raw[-3000:]}"
    assert any(re.match(r"conversions\s+done .*1 conversion", line) for line in text)
    for device, end in ends.items():
        # Every change of state is drawn: each device is seen connecting, pushing the data
        # set with its size, running its case and done with the table's verdict (or the
        # kind of its error).
        assert any(re.match(rf"{device}\s+connecting", line) for line in text)
        assert not any(line.startswith(f"[{device}]") for line in text)  # no plain lines
        if end == "error":
            assert re.match(rf"{device}\s+error\s+[a-z_]+", frame[device])
            continue
        seen = [line for line in text if line.startswith(device)]
        assert any(re.match(rf"{device}\s+pushing .*\(1\.\d MB\)", line) for line in seen), seen
        assert any(re.match(rf"{device}\s+running .*case 1 of 1: {CASE}", line) for line in text)
        assert any(re.match(rf"{device}\s+done .*1 pass", line) for line in text)
    table = text[final + 1 :]
    assert table[0].split()[:3] == ["device", "model", "variant"]
    assert [line.split()[:2] for line in table[1:4]] == [
        [f"lab{i}", "digits_mlp"] for i in (1, 2, 3)
    ]


@pytest.mark.slow
def test_piped_plain_lines_and_noisy_words(lab: Path, tmp_path: Path, fleet_home: Path) -> None:
    """Piped (a CI log): no escapes, one line per event, a large push in tenths. Every result
    is made noisy (no latency spread is under a limit of 0): the progress and the table say
    "pass (noisy)" alike, and the table's footnote gives the reason the progress gave."""
    suite = lab_suite(tmp_path, cv_max=0)
    argv = fleet_run(lab, suite, tmp_path / "r.sqlite")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=540)
    assert "\x1b" not in proc.stdout + proc.stderr
    table = proc.stdout.splitlines()
    header = table[0]
    result, why = header.index("result"), header.index("why")
    notes = dict(re.findall(r"^(\[\d+\]) noisy: (.+)$", proc.stdout, re.MULTILINE))
    finished = 0
    for device in ("lab1", "lab2", "lab3"):
        said = [
            line.removeprefix(f"[{device}] ")
            for line in proc.stderr.splitlines()
            if line.startswith(f"[{device}] ")
        ]
        # A busy machine can make a connection attempt fail (and be tried again): each
        # attempt that sends the data set says each tenth of it once.
        attempts = "\n".join(said).split("connecting\n")[1:]
        ticks = [[int(m["percent"]) for m in SENDING.finditer(a)] for a in attempts]
        assert all(not t or [p // 10 for p in t] == list(range(1, 11)) for t in ticks), said
        (row,) = [r for r in table if r.startswith(f"{device} ")]
        ends = [s for s in said if s == "done" or s.startswith("ERROR ")]
        assert len(ends) == 1, said  # the end of a device is said once, either way
        if ends[0] != "done":  # failed (too busy a machine): the table says so too
            assert re.fullmatch(r"ERROR [a-z_]+", ends[0]) and "ERROR" in row[result:]
            continue
        finished += 1
        assert any(t and t[-1] == 100 for t in ticks), said
        (line,) = [s for s in said if s.startswith(f"{CASE} p50 ")]
        progress = re.fullmatch(rf"{re.escape(CASE)} p50 \S+ ms ([^:]+): (.+)", line)
        assert progress is not None, line
        assert row[result:why].strip() == progress[1] == "pass (noisy)"
        reason = notes[row[why:].strip()]
        assert reason == progress[2] and "above the limit 0.000" in reason
    assert finished, f"no device finished (busy machine?): {proc.stderr}"
    assert proc.returncode == (0 if finished == 3 else 2), proc.stderr


def two_device_plan() -> Plan:
    devices = [Device("pi1", "10.0.0.1"), Device("pi2", "10.0.0.2")]
    return make_plan(load_suite(SMOKE), devices)


def test_board_follows_each_device() -> None:
    board = Board(two_device_plan())
    assert board.note("controller", "artifact digits_mlp onnx:fp32").changed
    assert board.controller.detail == "1 of 1: digits_mlp onnx:fp32"
    board.note("controller", "refused digits_mlp onnx:fp32: accuracy drop 3 pp > 1 pp")
    assert board.note("pi1", "connecting") == (True, True)
    # A device at work: every conversion is behind (they all come first).
    assert (board.controller.state, board.controller.detail) == (
        "done",
        "1 conversion(s), 1 refused",
    )
    board.note("pi1", "running 1 case(s)")
    board.note("pi1", "push data.npz (2.1 MB)")
    assert board.note("pi1", "push data.npz 4% of 2.1 MB") == (False, False)
    assert board.note("pi1", "push data.npz 12% of 2.1 MB") == (True, False)
    assert board.note("pi1", "push data.npz 13% of 2.1 MB") == (False, False)
    row = board.rows["pi1"]
    assert (row.state, row.detail, row.fraction) == ("pushing", "data.npz 13% of 2.1 MB", 0.13)
    board.note("pi1", f"{CASE} started")
    board.note("pi1", f"{CASE} repetition 2/3")
    assert row.detail == f"case 1 of 1: {CASE} repetition 2/3"
    board.note("pi1", f"{CASE} p50 0.015 ms pass (noisy): latency CV 0.6 is above the limit")
    assert row.verdicts == {"pass (noisy)": 1} and row.fraction == 1.0
    board.note("pi1", "done")
    assert (row.state, row.detail) == ("done", "1 pass (noisy)")
    board.note("pi2", "pi2: no route to host; retry 1 of 3 in 1 s")
    assert (board.rows["pi2"].state, board.rows["pi2"].detail) == ("retrying", "retry 1 of 3")
    assert board.summary().startswith("1 of 2 devices done, 1 at work, ")
    board.note("pi2", "ERROR unreachable")
    assert (board.rows["pi2"].state, board.rows["pi2"].detail) == ("error", "unreachable")
    assert board.summary().startswith("2 of 2 devices done (1 with an error), ")
    board.note("pi2", "something new")  # wording the board does not know is shown as it is
    assert board.rows["pi2"].detail == "something new"


def test_render_rows_bars_and_count() -> None:
    board = Board(two_device_plan())
    for message in ("connecting", "push model.onnx (512.0 MB)", "push model.onnx 40% of 512.0 MB"):
        board.note("pi1", message)
    console = Console(record=True, width=100, color_system=None)
    console.print(render(board, width=100, height=20))
    text = console.export_text()
    (pushing,) = [line for line in text.splitlines() if line.startswith("pi1")]
    # 40% of a 24-character bar: nine and a half filled.
    assert re.search(r"pushing +━{9}╸ +model.onnx 40% of 512.0 MB", pushing), text
    assert re.search(r"^pi2 +waiting", text, re.MULTILINE)
    assert "0 of 2 devices done, 1 at work" in text


def test_render_squeezes_only_the_detail() -> None:
    """A long file name on one row, a narrow terminal: every row still says its whole state
    (the live view's columns are shared), an artifact's hash is cut as git cuts it, and what
    gives way is the end of the detail."""
    board = Board(two_device_plan())
    artifact = "eaa83b2d433b4aa644f6408d12dc2f120aa9854248e6ed0b11de6268ed5f8884.onnx"
    board.note("pi1", f"push {artifact} (3.0 MB)")
    board.note("pi2", "push digits_big.npz (1.9 MB)")
    board.note("pi2", "push digits_big.npz 7% of 1.9 MB")
    assert board.rows["pi1"].detail == "eaa83b2d433b….onnx (3.0 MB)"
    board.note("pi1", f"push {artifact} 5% of 3.0 MB")
    assert board.rows["pi1"].detail == "eaa83b2d433b….onnx 5% of 3.0 MB"
    board.note("pi1", "push a-file-named-at-great-length-by-its-maker.onnx (3.0 MB)")
    for width in (60, 70, 120):
        console = Console(record=True, width=width, color_system=None)
        console.print(render(board, width=width, height=20))
        rows = {line.split()[0]: line.rstrip() for line in console.export_text().splitlines()}
        assert rows["pi1"].split()[1] == rows["pi2"].split()[1] == "pushing", rows
        assert rows["conversions"].split()[1] == "done"
        assert len(max(rows.values(), key=len)) <= width
        cut = width < 100  # 48 columns for the name, state and bar; the rest for the detail
        assert rows["pi2"].endswith("…" if cut else "digits_big.npz 7% of 1.9 MB"), rows
    assert rows["pi1"].endswith("great-length-by-its-maker.onnx (3.0 MB)")


def test_render_many_devices_fits_the_terminal() -> None:
    devices = [Device(f"d{i:02d}", "10.0.0.1") for i in range(30)]
    board = Board(make_plan(load_suite(SMOKE), devices))
    for i in range(12):
        board.note(f"d{i:02d}", "connecting" if i % 2 else "done")
    console = Console(record=True, width=100, color_system=None)
    console.print(render(board, width=100, height=12))
    lines = console.export_text().splitlines()
    assert len(lines) <= 12
    assert lines[0].split()[:2] == ["conversions", "done"]
    assert [line.split()[1] for line in lines[1:7]] == ["connecting"] * 6
    assert lines[-2] == "… 24 more: 6 done, 18 waiting"
    assert lines[-1].startswith("6 of 30 devices done, 6 at work")


def test_sending_says_each_percent_once() -> None:
    said: list[str] = []
    size = 5 * LARGE_BYTES
    sent = sending(lambda device, message: said.append(message), "pi1", Path("m.onnx"))
    for done in [*range(32768, size, 32768), size]:  # as SFTP calls it, per 32 KB
        sent(done, size)
    percents = [int(m["percent"]) for m in map(SENDING.fullmatch, said) if m]
    assert len(percents) == len(said) and percents == sorted(set(percents))
    assert percents[-1] == 100 and said[-1] == "push m.onnx 100% of 5.2 MB"
    small: list[str] = []
    sending(lambda device, message: small.append(message), "pi1", Path("a.pyz"))(10, 10)
    assert small == []  # a blink: no running count


def test_pip_steps_from_its_real_output() -> None:
    output = (ROOT / "tests" / "fixtures" / "pip" / "install-pip23.txt").read_text()
    steps = [s for s in map(converter_env.pip_step, output.splitlines()) if s]
    assert steps == [
        "resolving six==1.16.0",
        "downloading six-1.16.0-py2.py3-none-any.whl (11 kB)",
        "resolving mdurl-0.1.2-py3-none-any.whl",
        "resolving markdown-it-py==3.0.0",
        "downloading markdown_it_py-3.0.0-py3-none-any.whl (87 kB)",
        "installing 3 packages",
    ]
    assert converter_env.pip_step("Downloading onnx-1.19.1-cp311.whl.metadata (7 kB)") is None


@pytest.mark.slow
def test_converter_build_steps_reach_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real build (of a venv whose one requirement, pip, is already there: no download),
    its steps said once each as the controller's progress lines."""
    monkeypatch.setenv("FLEET_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(converter_env, "REQUIREMENTS", ("pip",))
    logging.getLogger().addHandler(root := logging.StreamHandler(sys.stderr))
    try:
        with watching(two_device_plan()):
            converter_env.converter_python()
    finally:
        logging.getLogger().removeHandler(root)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("[controller] building the converter environment")
    assert lines[1] == f"[controller] converter environment: creating a venv with {sys.executable}"
    assert lines[2] == "[controller] converter environment: installing 1 pinned packages with pip"
    assert re.fullmatch(r"\[controller\] converter environment ready in \d+ s", lines[-1])
    assert len(lines) == len(set(lines))  # said once, not again by the root logger


def test_table_says_why_a_result_is_noisy() -> None:
    def result(device: str, reasons: str, **fields: object) -> Record:
        tags = {"device": device, "model": "m", "variant": "onnx:fp32"}
        noisy = {"valid": not reasons, "invalid_reasons": reasons}
        return make_record("result", tags, {"latency_ms_p50": 1.5, **noisy, **fields})

    records = [
        result("a", "the device throttled during the run"),
        result("b", ""),
        result("c", "the device throttled during the run", passed=False, budget_failures="p95"),
        result("d", "latency CV 0.6 is above the limit 0.500"),
    ]
    lines = results_table(records).splitlines()
    assert lines[0].split()[-2:] == ["result", "why"]
    assert [line.split("  ")[-1].strip() for line in lines[1:5]] == ["[1]", "pass", "[1]", "[2]"]
    assert lines[5:] == [
        "[1] noisy: the device throttled during the run",
        "[2] noisy: latency CV 0.6 is above the limit 0.500",
    ]
    assert "FAIL (noisy)" in lines[3]
    assert result_line(records[2]) == (
        "p50 1.500 ms FAIL (noisy): p95; the device throttled during the run"
    )
    assert "why" not in results_table([records[1]])
