"""`fleet rerun RUN` on the built-in `local` device: the same cases, artifacts (by sha256),
settings and agent, or a one-line refusal saying what changed."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from fleet.cli import main
from fleet.errors import ConfigError
from fleet.rerun import plan_rerun
from fleet.results.record import make_record
from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class First:
    """A suite, the files it names, a store, and the run of it everything here reruns."""

    folder: Path
    suite: Path
    store: Path
    run_id: str

    def fleet(self, *args: str) -> Result:
        env = {"FLEET_HOME": str(self.folder / "home"), "FLEET_INFLUX_URL": None}
        no_influx = self.folder / "fleet.toml"
        return CliRunner().invoke(
            main, [*args, "--store", str(self.store), "--config", str(no_influx)], env=env
        )


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> First:
    folder = tmp_path_factory.mktemp("rerun")
    for name in ("digits_mlp.onnx", "digits_cnn.onnx", "digits_test.npz"):
        shutil.copy(ROOT / "zoo" / name, folder / name)
    (folder / "fleet.toml").write_text("")  # no InfluxDB
    suite = folder / "tiny.yaml"
    suite.write_text(
        "name: tiny\n"
        "measure: {min_iterations: 20, max_seconds: 1, repetitions: 1, warmup_iterations: 2}\n"
        "models:\n"
        "  - name: mlp\n"
        "    path: digits_mlp.onnx\n"
        "    dataset: digits_test.npz\n"
        "    variants: [onnx:fp32, onnx:int8]\n"
        "  - {name: cnn, path: digits_cnn.onnx}\n"
    )
    made = First(folder, suite, folder / "results.sqlite", "")
    result = made.fleet("run", str(suite))
    assert result.exit_code in (0, 1), result.output
    (run,) = Store(made.store).runs()
    return First(folder, suite, made.store, run.run_id)


def results(store: Path, run_id: str) -> list[tuple[str, ...]]:
    """What identifies each result of a run: device, model, format, precision and artifact."""
    return sorted(
        (
            *(r.tags[k] for k in ("device", "model", "format", "precision", "batch", "threads")),
            str(r.fields["model_sha256"]),
        )
        for r in Store(store).records(run_id, "result")
    )


def refusal(result: Result) -> str:
    """A refusal is exit 2 and one red line, the last (after progress, if any)."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error")] == lines[-1:], result.stderr
    return lines[-1]


@contextmanager
def changed(path: Path, data: bytes) -> Iterator[None]:
    """The file holds `data` for the block, then what it held before."""
    before = path.read_bytes()
    path.write_bytes(data)
    try:
        yield
    finally:
        path.write_bytes(before)


def test_a_rerun_runs_the_same_cases_with_the_same_artifacts(first: First) -> None:
    result = first.fleet("rerun", first.run_id[:10])  # a unique prefix will do
    assert result.exit_code == 0, result.output
    assert f"rerun of {first.run_id}: 3 case(s) of tiny" in result.stderr
    store = Store(first.store)
    (again,) = [run for run in store.runs() if run.run_id != first.run_id]
    assert f"run {again.run_id} (rerun of {first.run_id}): 3 result(s)" in result.stdout
    assert results(first.store, again.run_id) == results(first.store, first.run_id)
    assert len(results(first.store, again.run_id)) == 3
    agents = {r.fields["agent_version"] for r in store.records(None, "result")}
    assert len(agents) == 1
    old, new = store.run_spec(first.run_id), store.run_spec(again.run_id)
    assert old is not None and new is not None
    assert new["rerun_of"] == first.run_id and old["rerun_of"] is None
    for key in ("suite", "suite_sha256", "agent_sha256", "data"):
        assert new[key] == old[key], key
    assert list(old["data"]) == [str(first.folder / "digits_test.npz")]


def test_a_rerun_plans_only_the_cases_that_run_had(first: First, tmp_path: Path) -> None:
    """A run that had fewer results than its suite has cases (here: the cnn's removed from a
    copy of the store) is rerun with those it had."""
    copy = tmp_path / "copy.sqlite"
    with sqlite3.connect(copy) as target:
        Store(first.store).db.backup(target)
    with sqlite3.connect(copy) as db:
        db.execute(
            "DELETE FROM records WHERE run_id = ? AND json_extract(tags, '$.model') = 'cnn'",
            (first.run_id,),
        )
    again = plan_rerun(Store(copy), first.run_id)
    ((device, cases),) = [(dp.device.name, dp.cases) for dp in again.plan.devices]
    assert (device, [c.id for c in cases]) == ("local", ["mlp/onnx:fp32", "mlp/onnx:int8"])
    assert again.spec.rerun_of == first.run_id

    result = first.fleet("rerun", first.run_id, "--plan")
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == [
        "local",
        "mlp/onnx:fp32",
        "mlp/onnx:int8",
        "cnn/onnx:fp32",
    ]


def test_a_changed_suite_is_refused(first: First) -> None:
    with changed(first.suite, first.suite.read_bytes() + b"# one more line\n"):
        line = refusal(first.fleet("rerun", first.run_id))
    assert line.startswith(
        f"error: suite changed since run {first.run_id}; rerun needs the same suite:"
        f" {first.suite} has sha256 "
    )


def test_a_changed_data_set_is_refused(first: First) -> None:
    data = first.folder / "digits_test.npz"
    with changed(data, data.read_bytes() + b"\0"):
        line = refusal(first.fleet("rerun", first.run_id))
    assert f"data file changed since run {first.run_id}; rerun needs the same data file:" in line


def test_a_model_that_converts_to_other_bytes_is_refused(first: First) -> None:
    """The suite is the same, but its model file is not: the artifact's sha256 tells."""
    model = first.folder / "digits_cnn.onnx"
    with changed(model, (ROOT / "zoo" / "digits_mlp.onnx").read_bytes()):
        line = refusal(first.fleet("rerun", first.run_id))
    assert f"error: run {first.run_id} cannot be rerun the same: cnn/onnx:fp32 on local" in line
    assert "converts to model_sha256" in line


def test_a_run_measured_on_another_gpu_is_refused(first: First, tmp_path: Path) -> None:
    """A series' GPU is a tag only where one is set: a run whose records were on GPU 1 of a
    server is not rerun on a device that sets none."""
    copy = tmp_path / "results.sqlite"
    with sqlite3.connect(copy) as target:
        Store(first.store).db.backup(target)
    with sqlite3.connect(copy) as db:
        db.execute(
            "UPDATE records SET tags = json_set(tags, '$.gpu', '1') WHERE run_id = ?",
            (first.run_id,),
        )
    with pytest.raises(ConfigError) as refused:
        plan_rerun(Store(copy), first.run_id)
    assert "on local has gpu (none) now, was 1 (the inventory changed)" in str(refused.value)


def test_another_agent_is_refused(first: First) -> None:
    store = Store(first.store)
    spec = store.run_spec(first.run_id)
    assert spec is not None
    store.set_run_spec(first.run_id, {**spec, "agent_sha256": "0" * 64})
    try:
        line = refusal(first.fleet("rerun", first.run_id))
    finally:
        store.set_run_spec(first.run_id, spec)
    assert f"agent changed since run {first.run_id}; rerun needs the same agent:" in line


def test_devices_the_run_did_not_use_are_refused(first: First) -> None:
    inventory = ROOT / "inventory" / "example.yaml"
    line = refusal(
        first.fleet("rerun", first.run_id, "--inventory", str(inventory), "--devices", "pi5-a")
    )
    assert line == (f"error: run {first.run_id} ran on local; none of them is in --devices 'pi5-a'")


def test_an_unknown_run_is_one_line(first: First) -> None:
    line = refusal(first.fleet("rerun", "19990101"))
    assert line == (
        f"error: {first.store}: no run matching '19990101'; `fleet results list` shows the run ids"
    )


def test_a_run_that_kept_no_spec_is_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "results.sqlite")
    store.start_run("20260101T000000Z-000000", "tiny", ["local"])
    store.finish_run("20260101T000000Z-000000", 130)  # stopped: the CLI never kept its spec
    with pytest.raises(ConfigError, match=r"cannot be rerun: the store does not say what it ran"):
        plan_rerun(store, "20260101")


def test_a_regression_is_measured_again_before_it_fails_the_run(first: First) -> None:
    """`regressions: {confirm: 1}`: a run whose check flags a series measures that series'
    case again (only that one, as a rerun of the run) and fails only when the rerun shows the
    regression too. Here the history says the MLP ran three times faster than this machine
    runs it: the rerun confirms it."""
    folder = first.folder / "confirm"
    folder.mkdir()
    suite = folder / "gated.yaml"
    # Validity limits lifted: a busy machine must not leave the case unjudged.
    suite.write_text(
        "name: gated\n"
        "measure: {min_iterations: 20, max_seconds: 1, repetitions: 1, warmup_iterations: 2,\n"
        "          cv_max: 1000, drift_max: 1000, cpu_wait_max: 1000}\n"
        "models:\n"
        "  - {name: mlp, path: ../digits_mlp.onnx, variants: [onnx:fp32]}\n"
        "  - {name: cnn, path: ../digits_cnn.onnx}\n"
        "regressions: {confirm: 1, metrics: [latency_ms_p50]}\n"
    )
    store_path = folder / "results.sqlite"
    gated = First(first.folder, suite, store_path, "")
    assert gated.fleet("run", str(suite)).exit_code == 0  # no history yet: nothing judged
    store = Store(store_path)
    (measured,) = [
        r
        for r in store.records(None, "result")
        if r.tags["model"] == "mlp" and r.tags["variant"] == "onnx:fp32"
    ]
    p50 = float(measured.fields["latency_ms_p50"])
    for night in range(6):  # an earlier, faster history of the same series
        fields = {
            **measured.fields,
            "run_id": f"night-{night}",
            "latency_ms_p50": p50 / 3 * (1 + 0.01 * (night % 3)),
        }
        store.add(
            make_record("result", measured.tags, fields, measured.time_ns - (night + 1) * 10**9)
        )
    store.close()

    result = gated.fleet("run", str(suite))
    assert result.exit_code == 1, result.output
    runs = [run.run_id for run in Store(store_path).runs()]
    assert len(runs) == 3  # the first, the gated run, its confirmation
    run_id, confirmation = runs[1], runs[2]
    confirming = f"1 case(s) with a regression or improvement of run {run_id} measured again"
    assert f"confirming: {confirming}" in result.stderr
    store = Store(store_path)
    assert [
        (r.tags["model"], r.tags["variant"]) for r in store.records(confirmation, "result")
    ] == [("mlp", "onnx:fp32")]
    spec = store.run_spec(confirmation)
    assert spec is not None and spec["rerun_of"] == run_id
    flagged = {(r.run_id, r.tags["metric"]) for r in store.records(None, "regression")}
    assert flagged == {(run_id, "latency_ms_p50"), (confirmation, "latency_ms_p50")}
    assert "regression: mlp onnx:fp32" in result.stderr
    assert "not confirmed" not in result.stderr
