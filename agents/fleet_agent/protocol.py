"""The controller–agent protocol, defined once: the job on stdin, the events on stdout.

Both sides import these types (the controller from this package), so ``mypy --strict``
checks the boundary. The controller sends every setting: the agent has no defaults of its
own (``fleet/suite/settings.py``'s ``MEASURE_DEFAULTS`` is the one source), and each value
travels once (a case's provider, threads, batch and timeout are in its ``settings``).

Events are JSON Lines, one object per line, flushed at once; ``event`` names the type.
"""

import json
import threading
from typing import IO, Any, Dict, List, Literal, Optional, Tuple, TypedDict, Union, cast

# Bumped whenever the job or event format changes incompatibly.
PROTOCOL = 2
# The agent says it is alive this often while it works; a longer silence is a hung device.
HEARTBEAT_S = 5.0


class InputSpec(TypedDict):
    """One model input as the model card describes it; a str or None dimension is dynamic."""

    name: str
    shape: List[Union[int, str, None]]
    dtype: str


# A provider option's value, as the runtime takes it.
OptionValue = Union[str, int, float, bool]


class Settings(TypedDict):
    """How a case is measured (docs/measurement.md). The controller fills in every key."""

    warmup_iterations: int
    warmup_seconds: float
    min_iterations: int
    min_seconds: float
    max_seconds: float
    repetitions: int
    threads: int
    batch: int
    provider: str
    timeout_s: float
    seed: int
    # ONNX Runtime: inter-op threads and graph optimisation (disable, basic, extended, all).
    inter_op_threads: int
    graph_optimization_level: str
    # LiteRT: the delegate library for a provider other than cpu/xnnpack/builtin.
    delegate_path: str
    # Validity limits (fleet_agent.aggregate).
    cv_max: float
    drift_max: float
    repetition_cv_max: float
    cpu_wait_max: float
    # Decoder language models (fleet_agent.generate).
    context_tokens: List[int]
    decode_tokens: int
    generation_runs: int
    # The provider's options, validated by the controller, in the runtime's own names (ONNX
    # Runtime provider options: CUDA device_id, TensorRT trt_fp16_enable, CoreML
    # MLComputeUnits, ...; LiteRT: the delegate's options). Empty: the runtime's defaults.
    provider_options: Dict[str, OptionValue]
    # The GPU as nvidia-smi numbers it (inventory host var fleet_gpu), None when unset: the
    # per-GPU lock's index, and CUDA and TensorRT's GPU unless provider_options names a
    # device_id (gpu_index.py turns it into CUDA's ordinal under CUDA_VISIBLE_DEVICES).
    gpu: Optional[int]
    # The limit for the first load (a TensorRT engine build, a CoreML compilation), apart
    # from timeout_s, which a repetition after it gets.
    load_timeout_s: float


# "generate": a decoder language model, also timed per context length.
Task = Optional[Literal["generate"]]


class Case(TypedDict):
    id: str  # "model/format:precision", unique in the job
    model: str
    artifact: str  # path on the device, named by its sha256
    sha256: str
    format: str
    precision: str
    runtime: str
    task: Task
    dataset: Optional[str]
    save_outputs: Optional[str]  # the reference variant saves its outputs here ...
    reference: Optional[str]  # ... and the other variants compare with them
    # Made before the model loads, so the memory baseline has them; None: ask the runtime.
    inputs: Optional[List[InputSpec]]
    settings: Settings


class Job(TypedDict):
    protocol: int
    run_id: str
    controller: str  # user@host of the controller: who holds the device, for a busy message
    workdir: str  # outputs go to workdir/outputs/run_id
    cases: List[Case]


class Repetition(TypedDict):
    """What ``serve`` sends a worker on stdin: one case, which repetition of it."""

    case: Case
    index: int
    engine_cache: str  # the folder of built engines (fleet_agent.engine_cache), in the workdir


# Why a case has no result. The first five come from the agent; the controller adds the rest
# for cases a device never got to run.
ErrorKind = Literal["skipped", "invalid_model", "timeout", "out_of_memory", "error"]
ERROR_KINDS: Tuple[str, ...] = ("skipped", "invalid_model", "timeout", "out_of_memory", "error")

Fact = Union[str, int, float, bool, None]


class GenerationEntry(TypedDict):
    """A decoder's figures at one context length."""

    context_tokens: float
    ttft_ms: float
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    decode_tokens: float


class ResultTags(TypedDict):
    """What actually ran: a provider can fall back (TensorRT → CUDA → CPU)."""

    runtime: str
    provider: str


def provider_that_runs(runtime: str, provider: str) -> str:
    """The provider a case that asks for ``provider`` runs on, as far as it is known before it
    runs: LiteRT's CPU path is its default XNNPACK delegate. ONNX Runtime's fallbacks (CUDA to
    CPU) show only once a session opens; a result's tags say what ran."""
    return "xnnpack" if runtime == "litert" and provider == "cpu" else provider


class ResultFields(TypedDict, total=False):
    """Every field a ``result`` event may carry (docs/measurement.md says what each means)."""

    # Latency over the samples of all repetitions (fleet_agent.stats)
    latency_ms_min: float
    latency_ms_mean: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_p95: float
    latency_ms_p99: float
    latency_ms_max: float
    latency_ms_std: float
    latency_cv: float
    latency_cv_trimmed: float
    latency_p50_ci95_low_ms: float
    latency_p50_ci95_high_ms: float
    latency_drift: float
    throughput_ips: float
    iterations: float
    duration_s: float
    repetitions: float
    repetition_p50s_ms: str
    repetition_p50_cv: float
    repetition_p95s_ms: str  # where every repetition has the samples for the percentile
    repetition_p99s_ms: str
    repetition_throughputs_ips: str
    # Cold start and warm-up (median over repetitions)
    load_ms: float
    first_inference_ms: float
    warmup_runs: float
    warmup_s: float
    warmup_stable: bool
    cpu_wait_frac: float
    # Memory (worst repetition)
    rss_baseline_mb: float
    rss_after_load_mb: float
    peak_rss_mb: float
    peak_delta_mb: float
    rss_anon_mb_after_load: float
    rss_file_mb_after_load: float
    gpu_memory_baseline_mb: float
    gpu_memory_after_load_mb: float
    gpu_memory_after_run_mb: float
    gpu_memory_delta_mb: float
    gpu_memory_peak_mb: float
    # "process": the worker's own device memory (NVML, nvidia-smi's compute apps); "device":
    # the whole GPU's, where the driver does not list the worker (some containers).
    gpu_memory_scope: str
    # GPU providers (CUDA, TensorRT): inputs and outputs bound on the device (IO binding),
    # compute only; latency_ms_* stay end-to-end, host<->device copies included.
    compute_latency_ms_p50: float
    compute_latency_ms_p95: float
    compute_latency_ms_p99: float
    # The first load when it built an engine or compiled the model (absent otherwise), and
    # whether the device's engine cache already had it.
    engine_build_ms: float
    engine_cache_hit: bool
    # What the runtime reports for each provider option the case asked for, JSON.
    provider_options_used: str
    # The GPU over the timed phase (fleet_agent.gpu_sampling): NVML, else nvidia-smi.
    gpu_clock_mhz_min: float
    gpu_clock_mhz_max: float
    gpu_temp_max_c: float
    gpu_power_w_mean: float
    gpu_util_mean: float
    gpu_throttle_reasons: str  # comma-separated, empty when none
    # A Jetson over the timed phase (fleet_agent.tegrastats)
    tegra_gpu_load_mean: float
    tegra_emc_load_mean: float
    tegra_temp_max_c: float
    tegra_power_mw_mean: float
    # Accuracy pass (first repetition), agreement with the reference variant
    accuracy_samples: float
    accuracy_top1: float
    accuracy_top5: float
    agreement_top1: float
    cosine_min: float
    cosine_mean: float
    snr_db: float  # signal to noise against the reference, over all outputs, within ±200 dB
    max_abs_error: float
    # Why the reference outputs were not saved ("... no space left on device (PATH) ...")
    accuracy_error: str
    # Temperature and throttling over the case (fleet_agent.thermal)
    throttled: bool
    temp_start_c: float
    temp_max_c: float
    temp_end_c: float
    # Validity and provenance
    valid: bool
    invalid_reasons: str
    runtime_package: str
    runtime_version: str
    numpy_version: str
    python_version: str


class RepetitionBody(TypedDict):
    """One worker's measurement, before ``serve`` combines the repetitions."""

    tags: ResultTags
    fields: Dict[str, Any]  # ResultFields less the statistics only a combination has
    samples_ms: List[float]
    compute_samples_ms: List[float]  # GPU providers: with IO binding (fleet_agent.iobinding)
    generation: List[GenerationEntry]  # empty unless the case's task is "generate"


# The events, one TypedDict each; ``event`` is the discriminator.
class Hello(TypedDict):
    event: Literal["hello"]
    agent_version: str
    protocol: int
    python: str
    runtimes: Dict[str, str]  # distribution name -> version, for those installed
    # Files the job names (artifacts, data sets) that are not on the device: when any is, the
    # agent stops after this event, and the controller sends them and starts it again.
    missing: List[str]


# Why the agent cannot go on: a job of another protocol version, the device's lock held by
# another run, no space left in the work folder, anything else (the message says).
FatalReason = Literal["protocol", "busy", "disk_full", "error"]


class Fatal(TypedDict):
    event: Literal["fatal"]
    reason: FatalReason
    message: str


class Sysinfo(TypedDict):
    event: Literal["sysinfo"]
    facts: Dict[str, Fact]  # each probe best-effort: "unavailable" where it failed


class CaseStart(TypedDict):
    event: Literal["case_start"]
    case: str


class Progress(TypedDict):
    event: Literal["progress"]
    case: str
    repetition: int
    repetitions: int


class Result(TypedDict):
    event: Literal["result"]
    case: str
    tags: ResultTags
    fields: ResultFields
    generation: List[GenerationEntry]  # empty unless the case's task is "generate"


class CaseError(TypedDict):
    event: Literal["case_error"]
    case: str
    kind: ErrorKind
    message: str


class Heartbeat(TypedDict):
    """Every HEARTBEAT_S while the agent works: it is alive, whatever a case takes."""

    event: Literal["heartbeat"]


class Done(TypedDict):
    event: Literal["done"]


Event = Union[Hello, Fatal, Sysinfo, CaseStart, Progress, Result, CaseError, Heartbeat, Done]
EVENT_TYPES: Dict[str, Any] = {
    "hello": Hello,
    "fatal": Fatal,
    "sysinfo": Sysinfo,
    "case_start": CaseStart,
    "progress": Progress,
    "result": Result,
    "case_error": CaseError,
    "heartbeat": Heartbeat,
    "done": Done,
}


class ProtocolError(ValueError):
    """A line from the other side that is not a well-formed event."""


def parse_event(line: str) -> Event:
    """One line of the agent's stdout as a typed event: the event name known and every key
    its type requires present, or ProtocolError saying what is wrong."""
    try:
        obj = json.loads(line)
    except ValueError:
        raise ProtocolError("a line that is not JSON: {!r}".format(line[:120])) from None
    if not isinstance(obj, dict):
        raise ProtocolError("a line that is not a JSON object: {!r}".format(line[:120]))
    kind = obj.get("event")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ProtocolError("an unknown event {!r}".format(kind))
    missing = sorted(set(cls.__annotations__) - set(obj))
    if missing:
        raise ProtocolError("a {} event without {}".format(kind, ", ".join(missing)))
    if kind == "case_error" and obj["kind"] not in ERROR_KINDS:
        raise ProtocolError("a case_error of unknown kind {!r}".format(obj["kind"]))
    return cast(Event, obj)  # checked above: the keys of its type are there


_lock = threading.Lock()


def write(out: IO[str], event: Union[Event, Dict[str, Any]]) -> None:
    """One event as one line, flushed at once (threads share stdout)."""
    line = json.dumps(event, default=_plain)
    with _lock:
        out.write(line + "\n")
        out.flush()


def _plain(value: Any) -> Any:
    """numpy scalars and other number-likes become plain floats."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
