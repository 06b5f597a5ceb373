"""One repetition of a case in a fresh process: load, warm up, time, report one event.

A fresh process per repetition gives each one a cold load, a clean peak-memory reading, and
keeps a crash or an out-of-memory kill from taking the agent down with it. The order is the
measurement protocol:

1. import the runtime and make the inputs (seeded, shaped from the model card the controller
   sends), then take the memory baseline and reset the peak: what follows is the model's;
2. load the model (``load_ms``), memory after load, one first run (``first_inference_ms``);
3. warm up and time (``fleet_agent.measure``), peak memory;
4. the first repetition only: the untimed accuracy pass (``fleet_agent.accuracy``);
5. decoders (``"task": "generate"``): time to first token and tokens per second
   (``fleet_agent.generate``).

The event it prints, ``repetition``, goes to the agent's ``serve``, which combines the
repetitions of a case into the one ``result`` the controller sees.
"""

import errno
import json
import os
import platform
import threading
import time
import traceback
from typing import IO, Any, Callable, Dict, List, Optional

import numpy as np

from fleet_agent import accuracy, generate, measure, memory, runtimes
from fleet_agent.protocol import Case, CaseError, ErrorKind, Repetition, RepetitionBody, write

# Providers whose memory is the GPU's, read with nvidia-smi.
GPU_PROVIDERS = ("cuda", "tensorrt")


def work(inp: IO[str], out: IO[str]) -> int:
    job: Repetition = json.loads(inp.read())
    _end_with_parent()
    case = job["case"]
    kind: ErrorKind = "error"
    try:
        body = repetition(case, job["index"], lambda s: write(out, {"event": "stage", "stage": s}))
    except runtimes.RuntimeMissing as exc:
        kind, message = "skipped", str(exc)
    except runtimes.InvalidModel as exc:
        kind, message = "invalid_model", str(exc)
    except MemoryError:
        kind, message = "out_of_memory", "the runtime ran out of memory (MemoryError)"
    except (generate.GenerateError, ValueError) as exc:
        traceback.print_exc()  # the whole story for the controller's log
        message = "{}: {}".format(type(exc).__name__, exc)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        # A full disk is the device's state, not a bug: one line, no traceback.
        message = accuracy.os_problem(exc, exc.filename or "a file the runtime writes")
    else:
        write(out, {"event": "repetition", "body": body})
        return 0
    error: CaseError = {"event": "case_error", "case": case["id"], "kind": kind, "message": message}
    write(out, error)
    return 0


def _end_with_parent() -> None:
    """A worker whose agent is gone (killed: it could not stop its workers) stops too,
    within half a second, instead of timing a repetition nobody will read."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def repetition(case: Case, index: int, stage: Callable[[str], None]) -> RepetitionBody:
    """The repetition's measurement; ``stage`` is told each step as it begins, so that the
    agent can say what a worker was doing when it died or ran out of time."""
    settings = case["settings"]
    batch = settings["batch"]
    provider = settings["provider"]
    stage("import")
    package, version = runtimes.import_runtime(case["runtime"])
    spec = runtimes.spec_from_card(case["inputs"])
    arrays: Optional[List[np.ndarray]] = None
    if spec is not None:
        arrays = list(runtimes.feed_for(spec, batch, settings["seed"]).values())
    on_gpu = provider in GPU_PROVIDERS
    gpu_before = memory.gpu_memory_mb() if on_gpu else None
    baseline = memory.snapshot()
    memory.reset_peak()

    stage("load")
    start = time.perf_counter_ns()
    session = runtimes.open_session(case["runtime"], case["artifact"], settings)
    load_ms = (time.perf_counter_ns() - start) / 1e6
    after_load = memory.snapshot()
    gpu_after_load = memory.gpu_memory_mb() if on_gpu else None

    stage("measure")
    feed = session.adopt(arrays, batch, settings["seed"])
    start = time.perf_counter_ns()
    session.run(feed)
    first_ms = (time.perf_counter_ns() - start) / 1e6

    warm = measure.warmup(session.run, feed, settings)
    timed = measure.timed(session.run, feed, settings)
    peak = memory.peak_rss_mb()
    gpu_after_run = memory.gpu_memory_mb() if on_gpu else None

    fields: Dict[str, Any] = {
        "load_ms": load_ms,
        "first_inference_ms": first_ms,
        "warmup_runs": float(warm.runs),
        "warmup_s": warm.seconds,
        "warmup_stable": warm.stable,
        "duration_s": timed.duration_s,
        "cpu_wait_frac": timed.cpu_wait_frac,
        "rss_baseline_mb": baseline.get("rss_mb", 0.0),
        "rss_after_load_mb": after_load.get("rss_mb", 0.0),
        "peak_rss_mb": peak,
        "peak_delta_mb": peak - baseline.get("rss_mb", 0.0),
        "runtime_package": package,
        "runtime_version": version,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
    }
    for key in ("rss_anon_mb", "rss_file_mb"):
        if key in after_load:
            fields[key + "_after_load"] = after_load[key]
    if gpu_before is not None and gpu_after_load is not None and gpu_after_run is not None:
        # nvidia-smi sees the whole GPU, not this process: read before, after load, after
        # the timed phase, with nothing else of the agent's on the GPU in between.
        fields.update(
            gpu_memory_baseline_mb=gpu_before,
            gpu_memory_after_load_mb=gpu_after_load,
            gpu_memory_after_run_mb=gpu_after_run,
            gpu_memory_delta_mb=max(gpu_after_load, gpu_after_run) - gpu_before,
        )
    body: RepetitionBody = {
        "tags": {"runtime": session.runtime, "provider": session.provider},
        "fields": fields,
        "samples_ms": timed.samples_ms,
        "generation": [],
    }
    if case["dataset"] and index == 0:
        stage("accuracy")
        fields.update(accuracy.evaluate(session, case))
    if case["task"] == "generate":
        stage("generate")
        body["generation"] = generate.measure(session, settings)
    return body
