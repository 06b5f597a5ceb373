"""Execution providers and delegates, and the options each accepts: the one table a suite's
`measure:`, a class's and an inventory host's provider settings are checked against, so a
typo (`cdua`, `fp61`) is one line naming the file and line before any device time is spent.

Options reach the agent in the runtime's own names and values (`Settings.provider_options`):
ONNX Runtime's provider options, a LiteRT delegate's options. A few read better under a
friendly name (`fp16` for TensorRT's `trt_fp16_enable`, `compute_units: CPU_AND_NE` for
CoreML's `MLComputeUnits: CPUAndNeuralEngine`); the table maps them. docs/gpu.md lists it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from fleet import yamlfile
from fleet.errors import ConfigError
from fleet_agent.protocol import OptionValue

MAX_TEXT = 4096
BIG = 2**62  # bytes of workspace or memory limit: wider than any device


@dataclass(frozen=True)
class Option:
    """One option: its kind ("flag", "whole", "text", "choice"), for "whole" its
    range, for "choice" what a suite may write → what the runtime takes, and a friendly
    name a suite may write instead of the runtime's."""

    kind: str
    alias: str = ""
    low: int = 0
    high: int = BIG
    choices: Mapping[str, str] = field(default_factory=dict)
    # A flag the runtime reads as the text "1" or "0" (CoreML), not as a boolean.
    as_digit: bool = False

    def problem(self, value: object) -> str:
        """What `value` should have been; empty when it is fine."""
        if self.kind == "flag":
            return "" if isinstance(value, bool) else "true or false"
        if self.kind == "whole":
            ok = isinstance(value, int) and not isinstance(value, bool)
            ok = ok and self.low <= value <= self.high  # type: ignore[operator]
            return "" if ok else f"a whole number from {self.low:,} to {self.high:,}"
        if self.kind == "text":
            return "" if yamlfile.is_line(value, MAX_TEXT) else "text (one line)"
        return "" if value in self.choices else f"one of {', '.join(self.choices)}"

    def encode(self, value: OptionValue) -> OptionValue:
        if self.kind == "choice":
            return self.choices[str(value)]
        if self.as_digit:
            return "1" if value else "0"
        return value


def flag(alias: str = "", as_digit: bool = False) -> Option:
    return Option("flag", alias, as_digit=as_digit)


def whole(low: int = 0, high: int = BIG, alias: str = "") -> Option:
    return Option("whole", alias, low, high)


def text(alias: str = "") -> Option:
    return Option("text", alias)


def choice(*names: str, alias: str = "", friendly: Mapping[str, str] | None = None) -> Option:
    """The runtime's own names, and friendly ones that map to them."""
    return Option("choice", alias, choices={**{n: n for n in names}, **(friendly or {})})


_ARENA = choice("kNextPowerOfTwo", "kSameAsRequested")
# ONNX Runtime session config entries (SessionOptions.add_session_config_entry), for any
# provider: `session.intra_op.allow_spinning: "0"` (fleet_agent.providers passes them on).
SESSION_PREFIX = "session."
# Set from the inventory (fleet_gpu), which also picks the GPU's lock on the host.
RESERVED = {"device_id": "fleet_gpu"}

# runtime -> provider -> option (the runtime's name) -> what it takes. ONNX Runtime's are
# its provider options (onnxruntime.ai/docs/execution-providers); LiteRT's `gpu` is the GPU
# delegate's TfLiteGpuDelegateOptionsV2, loaded from measure.delegate_path. XNNPACK's only
# setting, its threads, is measure.threads.
PROVIDERS: Mapping[str, Mapping[str, Mapping[str, Option]]] = {
    "onnxruntime": {
        "cpu": {},
        "cuda": {
            "cudnn_conv_algo_search": choice("EXHAUSTIVE", "HEURISTIC", "DEFAULT"),
            "gpu_mem_limit": whole(1),
            "arena_extend_strategy": _ARENA,
            "do_copy_in_default_stream": flag(),
            "cudnn_conv_use_max_workspace": flag(),
            "cudnn_conv1d_pad_to_nc1d": flag(),
            "enable_cuda_graph": flag(alias="cuda_graph"),
            "use_tf32": flag(alias="tf32"),
            "prefer_nhwc": flag(),
            "tunable_op_enable": flag(),
            "tunable_op_tuning_enable": flag(),
        },
        "tensorrt": {
            "trt_fp16_enable": flag(alias="fp16"),
            "trt_int8_enable": flag(alias="int8"),
            "trt_int8_calibration_table_name": text(),
            "trt_int8_use_native_calibration_table": flag(),
            "trt_engine_cache_enable": flag(alias="engine_cache"),
            "trt_engine_cache_path": text(alias="engine_cache_path"),
            "trt_timing_cache_enable": flag(alias="timing_cache"),
            "trt_timing_cache_path": text(alias="timing_cache_path"),
            "trt_max_workspace_size": whole(1, alias="max_workspace_size"),
            "trt_builder_optimization_level": whole(0, 5, alias="builder_optimization_level"),
            "trt_max_partition_iterations": whole(1, 1_000_000),
            "trt_min_subgraph_size": whole(1, 1_000_000),
            "trt_dla_enable": flag(alias="dla"),
            "trt_dla_core": whole(0, 16, alias="dla_core"),
            "trt_layer_norm_fp32_fallback": flag(),
            "trt_cuda_graph_enable": flag(alias="cuda_graph"),
            "trt_force_sequential_engine_build": flag(),
            "trt_detailed_build_log": flag(),
            "trt_sparsity_enable": flag(),
            "trt_auxiliary_streams": whole(-1, 64),
        },
        "coreml": {
            "MLComputeUnits": choice(
                "CPUOnly",
                "CPUAndNeuralEngine",
                "CPUAndGPU",
                "ALL",
                alias="compute_units",
                friendly={
                    "CPU_ONLY": "CPUOnly",
                    "CPU_AND_NE": "CPUAndNeuralEngine",
                    "CPU_AND_GPU": "CPUAndGPU",
                },
            ),
            "ModelFormat": choice(
                "MLProgram",
                "NeuralNetwork",
                alias="model_format",
                friendly={"mlprogram": "MLProgram", "neuralnetwork": "NeuralNetwork"},
            ),
            "RequireStaticInputShapes": flag(alias="static_input_shapes", as_digit=True),
            "EnableOnSubgraphs": flag(alias="subgraphs", as_digit=True),
            "SpecializationStrategy": choice("Default", "FastPrediction"),
            "AllowLowPrecisionAccumulationOnGPU": flag(as_digit=True),
            "ModelCacheDirectory": text(alias="cache_dir"),
        },
        "openvino": {
            "device_type": text(),  # CPU, GPU, GPU.1, NPU, AUTO:GPU,CPU, HETERO:...
            "precision": choice("FP32", "FP16", "ACCURACY"),
            "num_of_threads": whole(1, 1024),
            "num_streams": whole(1, 1024),
            "cache_dir": text(),
            "enable_qdq_optimizer": flag(),
            "disable_dynamic_shapes": flag(),
        },
        "xnnpack": {"intra_op_num_threads": whole(1, 1024)},
        "dml": {
            "performance_preference": choice("default", "high_performance", "minimum_power"),
            "device_filter": choice("gpu", "npu", "any"),
        },
        "qnn": {
            "backend_path": text(),
            "backend_type": choice("cpu", "gpu", "htp", "saver"),
            "htp_performance_mode": choice(
                "burst",
                "balanced",
                "default",
                "high_performance",
                "high_power_saver",
                "low_balanced",
                "low_power_saver",
                "power_saver",
                "sustained_high_performance",
                "extreme_power_saver",
            ),
            "htp_graph_finalization_optimization_mode": choice("0", "1", "2", "3"),
            "enable_htp_fp16_precision": choice("0", "1"),
            "profiling_level": choice("off", "basic", "detailed"),
            "qnn_context_priority": choice("low", "normal", "normal_high", "high"),
            "soc_model": text(),
            "htp_arch": whole(0, 1000),
            "vtcm_mb": whole(0, 1024),
        },
        "rocm": {
            "gpu_mem_limit": whole(1),
            "arena_extend_strategy": _ARENA,
            "do_copy_in_default_stream": flag(),
            "miopen_conv_exhaustive_search": flag(),
            "tunable_op_enable": flag(),
            "tunable_op_tuning_enable": flag(),
        },
        "migraphx": {
            "migraphx_fp16_enable": flag(alias="fp16"),
            "migraphx_int8_enable": flag(alias="int8"),
            "migraphx_exhaustive_tune": flag(),
            "migraphx_save_compiled_model": flag(),
            "migraphx_save_model_path": text(),
            "migraphx_load_compiled_model": flag(),
            "migraphx_load_model_path": text(),
        },
    },
    "litert": {
        "cpu": {},
        "xnnpack": {},
        "builtin": {},
        "gpu": {
            "is_precision_loss_allowed": flag(alias="fp16"),
            "inference_preference": whole(0, 2),
            "inference_priority1": whole(0, 3),
            "inference_priority2": whole(0, 3),
            "inference_priority3": whole(0, 3),
            "max_delegated_partitions": whole(1, 1_000),
            "serialization_dir": text(alias="cache_dir"),
            "model_token": text(),
        },
    },
}
# LiteRT providers that need no delegate library; any other is one (measure.delegate_path).
LITERT_BUILTIN = ("cpu", "xnnpack", "builtin")
RUNTIME_NAMES = {"onnxruntime": "an ONNX Runtime provider", "litert": "a LiteRT provider"}


def suggest(word: str, known: Iterable[str]) -> str:
    """ "; did you mean 'cuda'?" for a near miss, empty otherwise."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def known_options(runtime: str, provider: str) -> Mapping[str, Option] | None:
    """The options `provider` takes under `runtime`; None for one the table does not know:
    a LiteRT delegate of the user's own (its options go to it unchecked), the only such
    provider `resolve` lets through."""
    return PROVIDERS[runtime].get(provider)


def encode_options(
    runtime: str,
    provider: str,
    options: Mapping[str, object],
    where: Callable[[str], str],
    owner: str = "",
) -> dict[str, OptionValue]:
    """`options` as written (friendly or the runtime's names) in the runtime's own names and
    values; ConfigError naming `where(key)` (and the `owner`, a host) for an unknown option
    or a wrong value."""
    table = known_options(runtime, provider)
    if table is None:
        return {key: _plain(key, value, where) for key, value in options.items()}
    names = {opt.alias: name for name, opt in table.items() if opt.alias}
    encoded: dict[str, OptionValue] = {}
    for key, value in options.items():
        if key in RESERVED:
            raise ConfigError(
                f"{where(key)}: provider option {key!r}{owner} is set by the inventory host var"
                f" {RESERVED[key]} (it also takes that GPU's lock); set it there"
            )
        if runtime == "onnxruntime" and key.startswith(SESSION_PREFIX):
            encoded[key] = _plain(key, value, where)  # ONNX Runtime checks its own entries
            continue
        name = names.get(key, key)
        option = table.get(name)
        if option is None:
            hint = suggest(key, [*table, *names])
            accepted = [f"{n} ({o.alias})" if o.alias else n for n, o in sorted(table.items())]
            listing = f"it takes {', '.join(accepted)}" if accepted else "it takes no options"
            if runtime == "onnxruntime":
                listing += f", and {SESSION_PREFIX}* session config entries"
            raise ConfigError(
                f"{where(key)}: unknown option {yamlfile.show(key)} for {runtime} provider"
                f" {provider!r}{owner}{hint} ({listing})"
            )
        problem = option.problem(value)
        if problem:
            raise ConfigError(
                f"{where(key)}: {provider} option {key}{owner} must be {problem},"
                f" not {yamlfile.show(value)}{suggest(str(value), option.choices)}"
            )
        encoded[name] = option.encode(value)  # type: ignore[arg-type]  # checked above
    return encoded


def _plain(key: str, value: object, where: Callable[[str], str]) -> OptionValue:
    ok = isinstance(value, bool | int | str) or (isinstance(value, float) and math.isfinite(value))
    if ok and (not isinstance(value, str) or yamlfile.is_line(value, MAX_TEXT)):
        return value  # type: ignore[return-value]  # checked above
    raise ConfigError(
        f"{where(key)}: option {key} must be text, a number or true/false,"
        f" not {yamlfile.show(value)}"
    )


def provider_problem(runtime: str, provider: str, delegate_path: str) -> str:
    """Why `provider` cannot run `runtime`'s variants; empty when it can."""
    if runtime == "litert" and (provider in LITERT_BUILTIN or delegate_path):
        return ""
    if runtime == "onnxruntime" and provider in PROVIDERS[runtime]:
        return ""
    names = PROVIDERS[runtime] if runtime == "onnxruntime" else LITERT_BUILTIN
    extra = (
        ", or a delegate with measure.delegate_path set to its library"
        if runtime == "litert"
        else ""
    )
    return f"the {_FORMAT[runtime]} variants need {RUNTIME_NAMES[runtime]}: one of" + (
        f" {', '.join(names)}{extra}{suggest(provider, names)}"
    )


_FORMAT = {"onnxruntime": "onnx", "litert": "tflite"}


def describe_options(options: Mapping[str, OptionValue]) -> str:
    """`trt_engine_cache_enable=true,trt_fp16_enable=true`: the options as a plan line and a
    series tag show them, sorted, so the same options always read the same."""
    return ",".join(f"{k}={_word(v)}" for k, v in sorted(options.items()))


def _word(value: OptionValue) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class Layer:
    """One place that may set the provider and its options: the suite's `measure:`, a
    class's, an inventory host's. `where(key)` is the file:line of "provider" or an option."""

    provider: str | None
    options: Mapping[str, object]
    where: Callable[[str], str]
    what: str = "measure.provider"  # how the place names the provider setting
    owner: str = ""  # " of host 'gpu1'": whose options they are, for a host's


def resolve(
    runtime: str | None, delegate_path: str, layers: Iterable[Layer]
) -> tuple[str, dict[str, object]]:
    """The provider and its options once the layers are merged, later ones winning: a layer
    that names another provider starts its options afresh (the suite's TensorRT options mean
    nothing to a host's CUDA); one that names the same provider, or none, adds to them key by
    key. With a `runtime`, each is checked and the options come in the runtime's own names;
    without, they stay as written (a class's settings before a case is known)."""
    provider = "cpu"  # MEASURE_DEFAULTS's
    options: dict[str, object] = {}
    setter: Layer | None = None
    for layer in layers:
        if layer.provider is not None and layer.provider != provider:
            provider, options, setter = layer.provider, {}, layer
        if layer.options and runtime is not None:
            _check_provider(runtime, provider, delegate_path, setter)
            options.update(
                encode_options(runtime, provider, layer.options, layer.where, layer.owner)
            )
        elif layer.options:
            options.update(layer.options)
    if runtime is not None:
        _check_provider(runtime, provider, delegate_path, setter)
    return provider, options


def _check_provider(runtime: str, provider: str, delegate_path: str, setter: Layer | None) -> None:
    problem = provider_problem(runtime, provider, delegate_path)
    if problem and setter is not None:
        raise ConfigError(
            f"{setter.where('provider')}: {setter.what} {yamlfile.show(provider)}{setter.owner}"
            f" is not known; {problem}"
        )
