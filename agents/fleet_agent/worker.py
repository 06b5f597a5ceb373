"""One repetition of a case in a fresh process: load, warm up, time, report one event.

A fresh process per repetition gives each one a cold load, a clean peak-memory reading, and
keeps a crash or an out-of-memory kill from taking the agent down with it. The order is the
measurement protocol:

1. import the runtime and make the inputs (seeded, shaped from the model card the controller
   sends), start the GPU and Jetson watches (``gpu_sampling``, ``tegrastats``), then take
   the memory baseline and reset the peak: what follows is the model's;
2. load the model (``load_ms``), memory after load, one first run (``first_inference_ms``);
   where the provider builds an engine, from the device's cache (``engine_cache``) when it
   has one, else the build is timed as ``engine_build_ms``;
3. warm up and time (``fleet_agent.measure``), peak memory; on a GPU provider, again with
   the inputs and outputs on the device (``fleet_agent.iobinding``): compute only;
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
from typing import IO, Any, Callable, Dict, List, Optional, Tuple, cast

import numpy as np

from fleet_agent import (
    accuracy,
    engine_cache,
    generate,
    gpu_index,
    gpu_sampling,
    iobinding,
    measure,
    memory,
    providers,
    runtimes,
    tegrastats,
)
from fleet_agent.protocol import (
    Case,
    CaseError,
    ErrorKind,
    Repetition,
    RepetitionBody,
    Settings,
    write,
)

# Told to serve (never the controller) once the first load and first run are done: the end of
# an engine build's own time limit (worker_run.py).
LOADED: Dict[str, Any] = {"event": "loaded"}


def work(inp: IO[str], out: IO[str]) -> int:
    job: Repetition = json.loads(inp.read())
    _end_with_parent()
    # CUDA numbers GPUs fastest first unless told otherwise; nvidia-smi, NVML and the
    # inventory's fleet_gpu number them by PCI bus, and so do the numbers in
    # CUDA_VISIBLE_DEVICES with this (gpu_index.py). Set before the runtime loads CUDA.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    case = job["case"]
    kind: ErrorKind = "error"
    try:
        body = repetition(
            case,
            job["index"],
            lambda s: write(out, {"event": "stage", "stage": s}),
            lambda: write(out, LOADED),
            job["engine_cache"],
        )
    except runtimes.RuntimeMissing as exc:
        kind, message = "skipped", str(exc)
    except gpu_index.NotVisible as exc:  # the device's setup, not a bug: no traceback
        message = str(exc)
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


def engine_device(gpu: Optional[gpu_index.Gpu]) -> str:
    """The device in an engine's cache key: the GPU's name and nvidia-smi index where the
    case runs on one, else the machine."""
    if gpu is None or gpu.physical is None:
        return platform.machine()
    return "{}#{}".format(gpu_sampling.gpu_name(gpu.physical) or platform.machine(), gpu.physical)


class Watches:
    """The GPU and Jetson watches of a repetition (none on most devices), told each phase."""

    def __init__(self, index: Optional[int]) -> None:
        """``index``: nvidia-smi's, of the case's GPU; None: no GPU watch."""
        self.gpu = gpu_sampling.start(index) if index is not None else None
        self.tegra = tegrastats.start()

    def phase(self, name: str) -> None:
        for watch in (self.gpu, self.tegra):
            if watch is not None:
                watch.phase(name)

    def stop(self) -> Dict[str, Any]:
        fields: Dict[str, Any] = {}
        for watch in (self.gpu, self.tegra):
            if watch is not None:
                watch.stop()
                fields.update(watch.fields())
        return fields


def repetition(
    case: Case,
    index: int,
    stage: Callable[[str], None],
    loaded: Callable[[], None],
    cache_root: str,
) -> RepetitionBody:
    """The repetition's measurement; ``stage`` is told each step as it begins, so that the
    agent can say what a worker was doing when it died or ran out of time, and ``loaded``
    when the first load (and first run: an engine may build at either) is done."""
    settings = case["settings"]
    batch = settings["batch"]
    provider = settings["provider"]
    stage("import")
    package, version = runtimes.import_runtime(case["runtime"])
    spec = runtimes.spec_from_card(case["inputs"])
    arrays: Optional[List[np.ndarray]] = None
    if spec is not None:
        arrays = list(runtimes.feed_for(spec, batch, settings["seed"]).values())
    # In CUDA's numbering and nvidia-smi's; a GPU that CUDA_VISIBLE_DEVICES hides is the
    # case's error here, before the load.
    gpu = gpu_index.of_case(settings) if provider in iobinding.GPU_PROVIDERS else None
    cache: Optional[engine_cache.EngineCache] = None
    if provider in engine_cache.ENGINE_PROVIDERS:
        key = engine_cache.key(
            case["sha256"],
            case["runtime"],
            version,
            provider,
            settings["provider_options"],
            engine_device(gpu),
            engine_cache.library_version(provider),
        )
        cache = engine_cache.EngineCache(cache_root, key)
        options = cache.options(provider, settings["provider_options"], version)
        settings = cast(Settings, dict(settings, provider_options=options))
        cache.prepare()
    watches = Watches(gpu.physical if gpu is not None else None)
    try:
        session, body = _measure(case, settings, arrays, (stage, loaded), watches, cache)
    finally:
        watched = watches.stop()
    fields = body["fields"]
    fields.update(watched)
    fields.update(
        runtime_package=package,
        runtime_version=version,
        numpy_version=np.__version__,
        python_version=platform.python_version(),
    )
    if case["dataset"] and index == 0:
        stage("accuracy")
        fields.update(accuracy.evaluate(session, case))
    if case["task"] == "generate":
        stage("generate")
        body["generation"] = generate.measure(session, settings)
    return body


def _measure(
    case: Case,
    settings: Settings,
    arrays: Optional[List[np.ndarray]],
    tell: Tuple[Callable[[str], None], Callable[[], None]],
    watches: Watches,
    cache: Optional[engine_cache.EngineCache],
) -> Tuple[runtimes.Session, RepetitionBody]:
    """Load, first run, warm-up and the timed phases, with memory at each step."""
    stage, loaded = tell
    batch = settings["batch"]
    baseline = memory.snapshot()
    memory.reset_peak()

    stage("load")
    watches.phase("load")
    start = time.perf_counter_ns()
    session = runtimes.open_session(case["runtime"], case["artifact"], settings)
    load_ms = (time.perf_counter_ns() - start) / 1e6
    after_load = memory.snapshot()
    watches.phase("warm")

    # An engine provider may build at its first run (dynamic shapes): part of the build.
    stage("measure")
    feed = session.adopt(arrays, batch, settings["seed"])
    start = time.perf_counter_ns()
    session.run(feed)
    first_ms = (time.perf_counter_ns() - start) / 1e6
    # Only where the engine provider itself runs: a TensorRT case that fell back to CUDA
    # built nothing.
    engine: Dict[str, Any] = {}
    if cache is not None and session.provider == settings["provider"]:
        engine["engine_cache_hit"] = cache.hit
        if not cache.hit:
            engine["engine_build_ms"] = load_ms + first_ms
        cache.built()
    loaded()

    warm = measure.warmup(session.run, feed, settings)
    watches.phase("timed")
    timed = measure.timed(session.run, feed, settings)
    compute: List[float] = []
    if isinstance(session, runtimes.OrtSession) and session.provider in iobinding.GPU_PROVIDERS:
        run = iobinding.compute_runner(session.ort, feed, providers.device_id(session.ort))
        measure.warmup(run, None, settings)
        compute = measure.timed(run, None, settings).samples_ms
    watches.phase("after")
    peak = memory.peak_rss_mb()

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
    }
    for key in ("rss_anon_mb", "rss_file_mb"):
        if key in after_load:
            fields[key + "_after_load"] = after_load[key]
    if session.options_used is not None:
        fields["provider_options_used"] = session.options_used
    fields.update(engine)
    body: RepetitionBody = {
        "tags": {"runtime": session.runtime, "provider": session.provider},
        "fields": fields,
        "samples_ms": timed.samples_ms,
        "compute_samples_ms": compute,
        "generation": [],
    }
    return session, body
