"""`fleet report`: the run's HTML page, opened in a real headless Chromium, and its Markdown.

The store holds `fill_store`'s nights for three devices, each result given every figure the
page plots (confidence interval, p99, memory), a planted ~15 % slowdown of one series from
night 5 with the `regression` records the check stores, an improvement, a failed case, and
user data with HTML and Markdown in it. Chromium (Debian's `chromium`,
scripts/install-system-deps) loads the page from the file: no console message, every plot laid
out with its points (the page's own check script says so), nothing fetched; its screenshot is
kept under the test's tmp_path.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from servers import DEVICES, VARIANTS, fill_store
from test_cli_startup import HEAVY, imported

from fleet.cli import main
from fleet.results import svg
from fleet.results.record import Record, make_record
from fleet.results.report_html import build_report, render_html, series_key
from fleet.results.report_markdown import md, render_markdown
from fleet.results.store import Store

NIGHTS = 8
SUITE_SHA = "5a17e" + "0" * 59
AGENT_SHA = "a9e17" + "1" * 59
WINDOW_H = 8000  # px: the whole report of this store at 1280 px wide
SLOW = {"device": "orin-1", "model": "digits_cnn", "format": "onnx", "precision": "fp32"}
SLOW_FROM = 5
EVIL_MODEL = 'evil<b>"model</b>'
EVIL_MESSAGE = (
    "lost <script>alert(1)</script> & | *stars* [x](javascript:alert(2)) https://x.example"
)


def night_of(record: Record) -> int:
    return int(record.run_id.rpartition("-")[2], 16)


class RichStore(Store):
    """A store that gives each result of fill_store what a real agent measures besides."""

    def add(self, record: Record) -> int:
        if record.measurement == "result" and record.status == "ok":
            fields = dict(record.fields)
            p50 = float(fields["latency_ms_p50"])
            if (
                all(record.tags.get(k) == v for k, v in SLOW.items())
                and night_of(record) >= SLOW_FROM
            ):
                p50 *= 1.15
            rss = float(fields.get("peak_rss_mb", 60.0))
            fields.update(
                latency_ms_p50=p50,
                latency_p50_ci95_low_ms=p50 * 0.98,
                latency_p50_ci95_high_ms=p50 * 1.03,
                latency_ms_p95=p50 * 1.2,
                latency_ms_p99=p50 * 1.45,
                peak_delta_mb=rss - 42.0,
                rss_baseline_mb=42.0,
                model_size_mb=0.4 if record.tags.get("precision") == "int8" else 1.6,
                agent_version="0.1.0+3f9ac2d1e4b7",
                runtime_package=record.tags.get("runtime", "onnxruntime"),
                runtime_version="1.20.1",
                python_version="3.11.2",
                numpy_version="1.26.4",
                iterations=700.0,
            )
            record = make_record(record.measurement, record.tags, fields, record.time_ns)
        return super().add(record)


def flag(result: Record, direction: str, change: float, since: str) -> Record:
    """A `regression` record as fleet.regressions stores it (docs/regressions.md)."""
    value = result.number("latency_ms_p50") or 0.0
    baseline = value / (1 + change / 100)
    fields = {
        "run_id": result.run_id,
        "baseline": baseline,
        "spread": baseline * 0.01,
        "baseline_runs": 5,
        "value": value,
        "change_pct": change,
        "direction": direction,
        "since_run": since,
        "message": f"latency_ms_p50 {value:.4g} ms vs baseline {baseline:.4g} ms: {change:+.1f}%",
        "gated": True,
    }
    return make_record(
        "regression", {**result.tags, "metric": "latency_ms_p50"}, fields, result.time_ns
    )


def make_store(path: Path) -> Store:
    """NIGHTS nights of three devices, the planted slowdown flagged, an improvement, a failure."""
    store = RichStore(path)
    fill_store(store, NIGHTS)
    runs = store.runs()
    latest = runs[-1].run_id
    results = store.records(measurement="result")
    slow = [r for r in results if all(r.tags.get(k) == v for k, v in SLOW.items())]
    slow_since = runs[SLOW_FROM].run_id
    for record in slow:
        if night_of(record) in (SLOW_FROM, NIGHTS - 1):
            store.add(flag(record, "regression", 15.0, slow_since))
    better = next(
        r
        for r in results
        if r.run_id == latest
        and r.tags.get("device") == "lab1"
        and r.tags.get("precision") == "int8"
    )
    store.add(flag(better, "improvement", -12.0, latest))
    # A case the device never finished, named and described with user data full of markup.
    tags = {**better.tags, "model": EVIL_MODEL}
    fields = {
        "run_id": latest,
        "status": "error",
        "error_kind": "connection_lost",
        "message": EVIL_MESSAGE,
        "passed": False,
    }
    store.add(make_record("result", tags, fields, better.time_ns + 5))
    # What `fleet run` keeps for `fleet rerun` (fleet.rerun.RunSpec), the latest run only.
    spec = {
        "suite": "/srv/fleet/suites/smoke.yaml",
        "suite_sha256": SUITE_SHA,
        "agent_sha256": AGENT_SHA,
        "data": {"/srv/fleet/zoo/digits.npz": "d" * 64},
        "inventory": "/srv/fleet/inventory/lab.yaml",
        "devices": "lab",
        "parallel": None,
        "rerun_of": None,
    }
    store.set_run_spec(latest, spec)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One store for the tests that only read it."""
    return make_store(tmp_path_factory.mktemp("report") / "results.sqlite")


class Page(HTMLParser):
    """Every element with its attributes, and the text of <style> and <script>."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.inline: dict[str, list[str]] = {"style": [], "script": []}
        self._open: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._open = tag if tag in self.inline else None

    def handle_data(self, data: str) -> None:
        if self._open:
            self.inline[self._open].append(data)

    def handle_endtag(self, tag: str) -> None:
        self._open = None

    def tags(self, name: str) -> list[dict[str, str]]:
        return [attrs for tag, attrs in self.elements if tag == name]


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with its log on stderr, where each console message is a line."""
    binary = shutil.which("chromium")
    assert binary, "scripts/install-system-deps installs Debian's chromium"
    argv = [binary, "--headless=new", "--disable-gpu", "--no-sandbox"]
    argv += ["--enable-logging=stderr", "--v=0", "--no-first-run", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True)


def console(stderr: str) -> list[str]:
    """What the page said on the console (an uncaught error, a CSP refusal, a log line)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def test_the_console_check_sees_a_page_error(tmp_path: Path) -> None:
    """The control: this Chromium does report a page's console messages and errors."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><p>x</p><script>undefinedFunction();</script>")
    messages = console(chromium("--dump-dom", page.as_uri()).stderr)
    assert any("Uncaught ReferenceError" in line for line in messages), messages


def test_the_report_opens_in_chromium_with_every_plot_drawn(store: Store, tmp_path: Path) -> None:
    latest = store.runs()[-1].run_id
    page = tmp_path / "report.html"
    done = CliRunner().invoke(
        main, ["report", latest[:10], "-o", str(page), "--store", str(store.path)]
    )
    assert done.exit_code == 0, done.output
    assert done.output.strip() == f"wrote {page} (html, run {latest}, 16 case(s))"
    html = page.read_text()

    # Nothing fetched: no address in any attribute that loads or links, nothing in CSS, and
    # a policy that would refuse it anyway.
    parsed = Page(html)
    for tag, attrs in parsed.elements:
        for name in ("src", "href", "xlink:href", "srcset", "action", "data", "poster"):
            assert attrs.get(name, "#").startswith("#"), (tag, attrs)
    css = "".join(parsed.inline["style"])
    assert "url(" not in css and "@import" not in css
    (policy,) = [m["content"] for m in parsed.tags("meta") if m.get("http-equiv")]
    assert policy.startswith("default-src 'none';")
    assert len(parsed.tags("script")) == 1  # the check script; nothing from user data

    # User data is text, never markup.
    assert EVIL_MODEL not in html and "<script>alert" not in html
    assert "evil&lt;b&gt;&quot;model&lt;/b&gt;" in html
    assert "lost &lt;script&gt;alert(1)&lt;/script&gt; &amp; |" in html

    # Provenance: what the store has.
    assert SUITE_SHA in html and AGENT_SHA in html and "0.1.0+3f9ac2d1e4b7" in html
    assert html.count(f"{0:064x}") == 1  # digits_mlp onnx:fp32's artifact
    assert "cpu_model" not in html and "ram_total_mb" in html  # the device records' facts

    # The plots: latency, latency against accuracy and memory per device, and a trend for
    # every series with a p50 (the failed case with user data has none).
    expected = 3 * len(DEVICES) + (len(VARIANTS) + 1) * len(DEVICES)
    plots = [svg for svg in parsed.tags("svg") if svg.get("class") == "plot"]
    assert len(plots) == expected and all(int(svg["data-points"]) > 0 for svg in plots)
    kinds = [svg["data-kind"] for svg in plots]
    assert kinds.count("trend") == (len(VARIANTS) + 1) * len(DEVICES)
    assert {"latency", "pareto", "memory"} <= set(kinds)
    # The planted slowdown is ringed where it was flagged, and its start is marked.
    assert html.count('class="flag regression"') == 2
    assert html.count('class="flag improvement"') == 1
    assert html.count('class="change"') == 3
    assert "Pareto" in html and 'class="front"' in html

    # One load: the DOM after the page's check script ran, and a screenshot tall enough for
    # the whole page at this width (the script writes the page's height).
    screenshot = tmp_path / "report.png"
    shown = chromium(
        "--dump-dom", f"--screenshot={screenshot}", f"--window-size=1280,{WINDOW_H}", page.as_uri()
    )
    assert not console(shown.stderr), console(shown.stderr)
    root = re.search(r"<html[^>]*>", shown.stdout)
    assert root, shown.stdout[:500]
    assert f'data-plots="{expected}"' in root[0]
    assert f'data-plots-drawn="{expected}"' in root[0], root[0]
    height = re.search(r'data-height="(\d+)"', root[0])
    assert height and 2000 < int(height[1]) <= WINDOW_H, root[0]
    assert screenshot.stat().st_size > 50_000  # a page of plots, not a blank one
    print(f"screenshot: {screenshot}")


def test_markdown_summary(store: Store) -> None:
    done = CliRunner().invoke(main, ["report", "--format", "markdown", "--store", str(store.path)])
    assert done.exit_code == 0, done.output
    text = done.output
    latest = store.runs()[-1].run_id
    assert text.startswith(f"## fleet run {latest}: FAILED\n")
    assert "- **12 passed**, **4 failed** of 16 case(s)" in text
    assert "- failed: 1 error, 3 over budget" in text
    assert "- 1 regression(s), 1 improvement(s)" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    regression = next(r for r in rows if r.startswith("| regression |"))
    assert "orin-1" in regression and "digits\\_cnn onnx:fp32" in regression
    assert "+15.0" in regression and runs_id(store, SLOW_FROM) in regression
    assert any(r.startswith("| improvement | lab1 |") and "-12.0" in r for r in rows)
    assert "### Largest p50 changes against the previous valid result" in text
    # Each case's p50 grew 0.1 ms a night: pi5-a's 2.6 -> 2.7 ms are the largest changes.
    changes = text.split("### Largest p50 changes")[1].split("###")[0]
    first = next(line for line in changes.splitlines() if line.startswith("| pi5-a"))
    assert first.endswith("| 2.6 | 2.7 | +3.8 |")
    assert len([line for line in changes.splitlines() if line.startswith("| ")]) == 1 + 5
    failure = next(r for r in rows if "connection\\_lost" in r)
    # One line, escaped: no tag, no column, no emphasis, no link.
    assert "<" not in failure and "https://" not in failure
    assert not re.search(r"(?<!\\)\]\(", failure)  # [x](y) is a link
    assert "&lt;script&gt;" in failure and "\\*stars\\*" in failure and "&amp; \\|" in failure
    assert "http" not in text.replace("https:\u2060//", "")


def runs_id(store: Store, night: int) -> str:
    return store.runs()[night].run_id


def test_an_earlier_run_and_its_failure(store: Store) -> None:
    """The first night: no history before it, the Pi's timeout in the failures."""
    report = build_report(store, runs_id(store, 0))
    assert [r.run_id for r in report.runs] == [runs_id(store, 0)]
    assert [(r.tags["device"], r.status) for r in report.failures] == [("pi5-a", "timeout")]
    html = render_html(report)
    assert "took over 60 s" in html
    assert html.count("not stored with this run") == 2  # no suite nor agent sha256 then
    assert render_markdown(report).count("| pi5-a |") == 1


def test_the_regression_checks_own_records_are_shown(tmp_path: Path) -> None:
    """What fleet.regressions stores after each night is what the report reads."""
    from fleet.regressions.check import check_run

    store = RichStore(tmp_path / "results.sqlite")
    fill_store(store, NIGHTS)
    for run in store.runs():
        check_run(store, run.run_id)
    report = build_report(store, None)
    flagged = {(r.tags["device"], r.tags["metric"]) for r in report.regressions}
    assert ("orin-1", "latency_ms_p50") in flagged
    slow = next(s for s in report.series if all(s.record.tags.get(k) == v for k, v in SLOW.items()))
    assert {f.run_id for f in slow.flags} >= {
        runs_id(store, n) for n in range(SLOW_FROM + 1, NIGHTS)
    }
    html = render_html(report)
    assert "latency_ms_p50" in html and html.count('class="flag regression"') >= 2
    assert f"began at run {runs_id(store, SLOW_FROM)}" in html
    markdown = render_markdown(report)
    assert f"{len(report.regressions)} regression(s)" in markdown


def test_report_help_imports_no_heavy_library() -> None:
    modules = imported("report", "--help")
    assert "click" in modules and not HEAVY & modules


def test_the_pareto_front_is_what_nothing_beats() -> None:
    points = [(2.0, 0.90), (1.0, 0.80), (3.0, 0.90), (1.0, 0.85), (4.0, 0.95), (5.0, 0.95)]
    assert svg.pareto_front(points) == [3, 0, 4]  # by latency; ties lose to the faster one


def test_a_long_tail_makes_the_latency_axis_logarithmic() -> None:
    near = svg.interval_plot([svg.IntervalRow("a", 1.0, p99=5.0)], "t")
    far = svg.interval_plot([svg.IntervalRow("a", 0.01, p99=2.0)], "t")
    assert "log scale" not in near and "log scale" in far
    assert svg.log_ticks(0.008, 2.6) == [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
    empty = svg.interval_plot([svg.IntervalRow("a", None, status="timeout")], "t")
    assert 'class="noplot"' in empty and "timeout" in empty  # nothing to draw: says why


def test_series_key_ignores_the_device_description_and_the_metric() -> None:
    tags = {"suite": "s", "device": "d", "model": "m", "arch": "x86_64", "os": "linux"}
    assert series_key({**tags, "metric": "latency_ms_p50", "arch": "arm"}) == series_key(tags)


def test_markdown_cells_are_text() -> None:
    assert md("a | b\n*c* [d](e) <f> https://g") == (
        "a \\| b \\*c\\* \\[d\\](e) &lt;f&gt; https:\u2060//g"
    )


@pytest.mark.parametrize("args", [["nope"], ["2026"]])
def test_an_unknown_or_ambiguous_run_is_one_line_and_exit_2(store: Store, args: list[str]) -> None:
    done = CliRunner().invoke(main, ["report", *args, "--store", str(store.path)])
    assert done.exit_code == 2
    (line,) = done.output.splitlines()
    assert line.startswith("error: ") and args[0] in line and "fleet results list" in line


def test_an_output_that_cannot_be_written_is_one_line(store: Store, tmp_path: Path) -> None:
    target = tmp_path / "missing" / "report.html"
    done = CliRunner().invoke(main, ["report", "-o", str(target), "--store", str(store.path)])
    assert done.exit_code == 2
    assert done.output.splitlines() == [
        f"error: {target}: cannot write the report (No such file or directory)"
    ]
