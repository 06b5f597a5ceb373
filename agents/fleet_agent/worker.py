"""One case in a fresh process: load, warm up, time, check accuracy, report one event.

A fresh process per case gives each one a clean peak-memory reading and keeps a crash
or an out-of-memory kill from taking the agent down with it.
"""

import json
import time
from typing import IO, Any, Dict, List, Optional, Tuple

import numpy as np

from fleet_agent import memory, runtimes, stats
from fleet_agent.protocol import emit


def work(inp: IO[str], out: IO[str]) -> int:
    case = json.loads(inp.read())
    try:
        fields, tags = measure_case(case)
    except runtimes.RuntimeMissing as exc:
        emit(out, "case_error", case=case["id"], kind="skipped", message=str(exc))
    except runtimes.InvalidModel as exc:
        emit(out, "case_error", case=case["id"], kind="invalid_model", message=str(exc))
    except MemoryError:
        emit(out, "case_error", case=case["id"], kind="out_of_memory", message="MemoryError")
    else:
        emit(out, "result", case=case["id"], tags=tags, fields=fields)
    return 0


def measure_case(case: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    settings = case["settings"]
    batch = int(case.get("batch", 1))
    runtimes.import_runtime(case["runtime"])
    baseline = memory.snapshot()
    memory.reset_peak()

    start = time.perf_counter_ns()
    session = runtimes.open_session(
        case["runtime"],
        case["artifact"],
        case.get("provider", "cpu"),
        int(case.get("threads", 1)),
        settings,
    )
    load_ms = (time.perf_counter_ns() - start) / 1e6
    after_load = memory.snapshot()

    feed = session_feed(session, batch, seed=int(settings.get("seed", 0)))
    start = time.perf_counter_ns()
    session.run(feed)
    first_ms = (time.perf_counter_ns() - start) / 1e6

    warmup(session, feed, settings)
    samples, duration_s = timed_loop(session, feed, settings)
    peak = memory.peak_rss_mb()

    fields: Dict[str, Any] = stats.latency_stats(samples)
    fields.update(
        load_ms=load_ms,
        first_inference_ms=first_ms,
        iterations=len(samples),
        duration_s=duration_s,
        throughput_ips=batch * 1000.0 / fields["latency_ms_mean"],
        rss_baseline_mb=baseline["rss_mb"],
        rss_after_load_mb=after_load["rss_mb"],
        peak_rss_mb=peak,
        peak_delta_mb=peak - baseline["rss_mb"],
        runtime_version=session.version,
    )
    valid, reasons = stats.validity(
        samples,
        cv_max=float(settings.get("cv_max", 0.5)),
        drift_max=float(settings.get("drift_max", 0.25)),
        throttled=False,
    )
    fields.update(valid=valid, invalid_reasons="; ".join(reasons))
    if case.get("dataset"):
        fields.update(accuracy(session, case))
    tags = {"runtime": session.runtime, "provider": session.provider}
    return fields, tags


def session_feed(session: runtimes.Session, batch: int, seed: int) -> Dict[str, np.ndarray]:
    if isinstance(session, runtimes.LiteRtSession):
        session.resize(batch)
        return session.prepare(runtimes.feed_for(session.inputs, batch, seed))
    return runtimes.feed_for(session.inputs, batch, seed)


def warmup(
    session: runtimes.Session, feed: Dict[str, np.ndarray], settings: Dict[str, Any]
) -> None:
    """Run until both minimums are met and the recent median has settled (bounded)."""
    min_runs = int(settings.get("warmup_iterations", 10))
    min_s = float(settings.get("warmup_seconds", 0.0))
    limit_s = max(min_s * 4, float(settings.get("max_seconds", 60.0)) / 4)
    samples: List[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter_ns()
        session.run(feed)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
        elapsed = time.perf_counter() - start
        enough = len(samples) >= min_runs and elapsed >= min_s
        if enough and (elapsed >= limit_s or stats.is_stable(samples, tol=0.05)):
            return


def timed_loop(
    session: runtimes.Session, feed: Dict[str, np.ndarray], settings: Dict[str, Any]
) -> Tuple[List[float], float]:
    """Latencies in ms until min_iterations and min_seconds are reached, capped by max_seconds."""
    min_runs = int(settings.get("min_iterations", 100))
    min_s = float(settings.get("min_seconds", 0.0))
    max_s = float(settings.get("max_seconds", 60.0))
    samples: List[float] = []
    clock = time.perf_counter_ns
    start = clock()
    while True:
        t0 = clock()
        session.run(feed)
        t1 = clock()
        samples.append((t1 - t0) / 1e6)
        elapsed = (t1 - start) / 1e9
        if (len(samples) >= min_runs and elapsed >= min_s) or elapsed >= max_s:
            return samples, elapsed


def accuracy(session: runtimes.Session, case: Dict[str, Any]) -> Dict[str, Any]:
    """Untimed pass over the data set: top-1/top-5, and agreement with a reference run."""
    data = np.load(case["dataset"])
    outputs = predict(session, data["inputs"])
    fields: Dict[str, Any] = {}
    labels: Optional[np.ndarray] = data.get("labels")
    if labels is not None:
        ranked = np.argsort(-outputs, axis=1)
        fields["accuracy_top1"] = float(np.mean(ranked[:, 0] == labels))
        fields["accuracy_top5"] = float(np.mean(np.any(ranked[:, :5] == labels[:, None], axis=1)))
    if case.get("save_outputs"):
        np.save(case["save_outputs"], outputs)
    reference = case.get("reference")
    if reference:
        fields.update(agreement(np.load(reference), outputs))
    return fields


def predict(session: runtimes.Session, inputs: np.ndarray) -> np.ndarray:
    """Model outputs (first output, flattened per sample) for every row of the data set."""
    name, _, dtype = session.inputs[0]
    if isinstance(session, runtimes.LiteRtSession):
        session.resize(1)
    rows = []
    for row in inputs:
        feed = {name: np.ascontiguousarray(row[None, ...]).astype(dtype)}
        if isinstance(session, runtimes.LiteRtSession):
            feed = session.prepare(feed)
        rows.append(np.asarray(session.run(feed)[0], dtype=np.float32).reshape(-1))
    stacked: np.ndarray = np.stack(rows)
    return stacked


def agreement(reference: np.ndarray, outputs: np.ndarray) -> Dict[str, float]:
    ref: np.ndarray = reference.astype(np.float64)
    out: np.ndarray = outputs.astype(np.float64)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.sum(ref * out, axis=1) / np.where(norms == 0, 1.0, norms)
    return {
        "agreement_top1": float(np.mean(np.argmax(ref, axis=1) == np.argmax(out, axis=1))),
        "cosine_min": float(np.min(cosine)),
        "cosine_mean": float(np.mean(cosine)),
        "max_abs_error": float(np.max(np.abs(ref - out))),
    }
