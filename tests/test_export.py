"""Exports of one run: JSON (everything), CSV (a row per case), JUnit XML (CI verdicts)."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

import pytest

from fleet.errors import ConfigError
from fleet.results.export import export
from fleet.results.record import TAG_KEYS
from fleet.results.store import Store

FIRST = "20261120T020000Z-000000"


def test_json_holds_the_run_and_every_record(results_store: Store) -> None:
    document = json.loads(export(results_store, "json", FIRST))
    assert document["run"]["run_id"] == FIRST
    assert document["run"]["exit_code"] == 1
    records = document["records"]
    assert len(records) == len(results_store.records(FIRST))
    assert {r["measurement"] for r in records} == {"result", "generation", "device", "run"}
    assert all(r["fields"]["run_id"] == FIRST for r in records)


def test_latest_run_is_the_default(results_store: Store) -> None:
    document = json.loads(export(results_store, "json"))
    assert document["run"]["run_id"] == "20261121T020000Z-000001"


def test_csv_has_a_row_per_case_and_a_column_per_tag_and_field(results_store: Store) -> None:
    rows = list(csv.DictReader(io.StringIO(export(results_store, "csv", "20261120"))))
    assert len(rows) == 15
    assert all(set(TAG_KEYS) <= set(row) for row in rows)
    (timeout,) = [row for row in rows if row["status"] == "timeout"]
    assert (timeout["device"], timeout["format"], timeout["precision"]) == (
        "pi5-a",
        "tflite",
        "int8",
    )
    assert timeout["latency_ms_p50"] == ""
    assert timeout["passed"] == "false"
    fast = next(row for row in rows if row["device"] == "pi5-a" and row["precision"] == "fp32")
    assert float(fast["latency_ms_p50"]) == 2.0
    assert fast["run_id"] == FIRST


def test_junit_fails_budgets_and_timeouts_per_device(results_store: Store) -> None:
    root = ET.fromstring(export(results_store, "junit", FIRST))
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("15", "4", "0")
    suites = {s.get("name"): s for s in root}
    assert set(suites) == {"smoke@pi5-a", "smoke@orin-1", "smoke@lab1"}
    pi = suites["smoke@pi5-a"]
    assert pi.get("tests") == "5"
    assert pi.get("failures") == "1"
    (failure,) = pi.iter("failure")
    assert failure.get("type") == "timeout"
    assert failure.get("message") == "took over 60 s"
    lab = suites["smoke@lab1"]
    budget = [f for f in lab.iter("failure") if f.get("type") == "budget"]
    assert len(budget) == 2
    case = next(iter(lab))
    assert case.get("classname") == "smoke.lab1"
    assert case.get("name") == "digits_mlp onnx:fp32 onnxruntime/cpu batch=1 threads=1"
    assert case.findtext("system-out", "").startswith("latency_ms_p50=6 latency_ms_p95=7.2")


def test_unknown_run_or_format_is_a_clear_error(results_store: Store) -> None:
    with pytest.raises(ConfigError, match="no run matching 'nope'; `fleet results list`"):
        export(results_store, "csv", "nope")
    with pytest.raises(ConfigError, match="2 runs matching '2026112'"):
        export(results_store, "csv", "2026112")
    with pytest.raises(ConfigError, match="unknown export format 'xml'"):
        export(results_store, "xml")
