"""Inference runtimes behind one small interface: load a model, describe inputs, run.

ONNX Runtime (any execution provider the device's build has) and LiteRT through whichever
TFLite package the device has: ``ai_edge_litert`` (current), ``tflite_runtime`` (older
boards), or ``tensorflow.lite``. A runtime, provider or delegate that is not there raises
``RuntimeMissing``, which the worker reports as a skipped case.
"""

import ctypes
import importlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from fleet_agent import protocol, providers
from fleet_agent.distributions import TFLITE_INTERPRETERS
from fleet_agent.protocol import Settings


class RuntimeMissing(Exception):
    """The runtime (or the provider asked for) is not installed on this device."""


class InvalidModel(Exception):
    """The runtime could not load the model file."""


InputSpec = Tuple[str, Tuple[Optional[int], ...], Any]  # name, shape (None: dynamic), dtype
Feed = Dict[str, np.ndarray]


class Session:
    runtime = ""
    package = ""  # the Python package that runs it (ai_edge_litert, tflite_runtime, ...)
    version = ""
    provider = ""
    # What the runtime reports for the options the case asked for (providers.options_used).
    options_used: Optional[str] = None
    inputs: List[InputSpec]

    def run(self, feed: Feed) -> List[np.ndarray]:
        raise NotImplementedError

    def make_feed(self, arrays: Sequence[np.ndarray]) -> Feed:
        """Arrays, one per input in order, as this model's feed (in its input types)."""
        return {
            name: np.ascontiguousarray(a, dtype=dtype)
            for (name, _, dtype), a in zip(self.inputs, arrays)
        }

    def adopt(self, arrays: Optional[List[np.ndarray]], batch: int, seed: int) -> Feed:
        """The feed for timing: ``arrays`` made before the model was loaded (so that the
        memory baseline holds them) when they fit this model's inputs, else new ones."""
        if arrays is None or not _fits(arrays, self.inputs):
            arrays = list(feed_for(self.inputs, batch, seed).values())
        return self.make_feed(arrays)


def _fits(arrays: List[np.ndarray], inputs: Sequence[InputSpec]) -> bool:
    if len(arrays) != len(inputs):
        return False
    for array, (_, shape, _) in zip(arrays, inputs):
        if array.ndim != len(shape):
            return False
        # The batch dimension is the case's to choose; the others are the model's.
        fixed = [(d, a) for d, a in zip(shape[1:], array.shape[1:]) if d is not None]
        if any(d != a for d, a in fixed):
            return False
    return True


# onnxruntime execution providers by the short names suites use.
ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "dml": "DmlExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "migraphx": "MIGraphXExecutionProvider",
}
_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}
_ORT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


class OrtSession(Session):
    runtime = "onnxruntime"
    package = "onnxruntime"

    def __init__(self, path: str, settings: Settings) -> None:
        provider = settings["provider"]
        ort = _import("onnxruntime")
        self.version = str(ort.__version__)
        wanted = ORT_PROVIDERS.get(provider)
        if wanted is None:
            raise RuntimeMissing(
                "unknown provider {!r}; known: {}".format(provider, ", ".join(ORT_PROVIDERS))
            )
        if wanted not in ort.get_available_providers():
            raise RuntimeMissing(
                "onnxruntime {} has no {} on this device (it has {})".format(
                    self.version, wanted, ", ".join(ort.get_available_providers())
                )
            )
        level = settings["graph_optimization_level"]
        if level not in _ORT_LEVELS:
            raise ValueError(
                "measure.graph_optimization_level {!r}: use one of {}".format(
                    level, ", ".join(_ORT_LEVELS)
                )
            )
        so = ort.SessionOptions()
        so.intra_op_num_threads = settings["threads"]
        so.inter_op_num_threads = settings["inter_op_threads"]
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[level])
        so.log_severity_level = 3  # errors only: warnings would flood the agent's stderr
        for key, value in providers.session_entries(settings).items():
            so.add_session_config_entry(key, value)
        try:
            self._session = ort.InferenceSession(
                path, so, providers=providers.ort_chain(wanted, settings)
            )
        except Exception as exc:  # onnxruntime raises several unrelated types here
            raise InvalidModel(_first_line(exc)) from exc
        # The provider that actually runs: onnxruntime falls back to CPU silently when the
        # one asked for cannot start (no GPU, driver mismatch).
        self.provider = _short_provider(self._session.get_providers()[0])
        self.options_used = providers.options_used(self._session, settings)
        self.inputs = [
            (
                i.name,
                tuple(d if isinstance(d, int) else None for d in i.shape),
                _ORT_DTYPES.get(i.type, np.float32),
            )
            for i in self._session.get_inputs()
        ]

    def run(self, feed: Feed) -> List[np.ndarray]:
        return list(self._session.run(None, feed))

    @property
    def ort(self) -> Any:
        """The onnxruntime session, for IO binding (``iobinding.py``)."""
        return self._session


def _short_provider(name: str) -> str:
    for short, full in ORT_PROVIDERS.items():
        if full == name:
            return short
    return name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise RuntimeMissing("{} is not installed ({})".format(name, exc)) from exc


def tflite_module() -> Tuple[Any, str, str]:
    """(interpreter module, package name, package version) of the first TFLite found."""
    for name in TFLITE_INTERPRETERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        package = importlib.import_module(name.split(".")[0])
        return module, name.split(".")[0], str(getattr(package, "__version__", "unknown"))
    packages = ", ".join(name.split(".")[0] for name in TFLITE_INTERPRETERS)
    raise RuntimeMissing("no TFLite runtime ({})".format(packages))


def _load_delegate(module: Any, path: str, options: Dict[str, str]) -> Any:
    """The library is opened first on its own: LiteRT's Delegate, built from one that does not
    load, fails in its ``__del__`` too and prints that traceback to the worker's stderr."""
    try:
        library = ctypes.CDLL(path)
    except OSError as exc:
        raise RuntimeMissing("cannot load delegate {}: {}".format(path, _first_line(exc))) from exc
    if not hasattr(library, "tflite_plugin_create_delegate"):
        raise RuntimeMissing(
            "cannot load delegate {}: it is not a TFLite delegate (no"
            " tflite_plugin_create_delegate)".format(path)
        )
    try:
        return module.load_delegate(path, options or None)
    except (OSError, ValueError, RuntimeError) as exc:
        raise RuntimeMissing("cannot load delegate {}: {}".format(path, _first_line(exc))) from exc


class LiteRtSession(Session):
    """``provider``: "cpu" or "xnnpack" run with the XNNPACK delegate every current TFLite
    build applies by default; "builtin" without it (the reference kernels); anything else
    ("gpu", "edgetpu", ...) loads the delegate library at ``measure.delegate_path``."""

    runtime = "litert"

    def __init__(self, path: str, settings: Settings) -> None:
        provider = settings["provider"]
        module, self.package, self.version = tflite_module()
        delegates = []
        kwargs: Dict[str, Any] = {}
        if provider == "builtin":
            kwargs["experimental_op_resolver_type"] = (
                module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        elif provider not in ("cpu", "xnnpack"):
            delegate_path = settings["delegate_path"]
            if not delegate_path:
                raise RuntimeMissing(
                    "LiteRT provider {!r} is a delegate: set measure.delegate_path to its"
                    " library".format(provider)
                )
            options = providers.delegate_options(settings)
            delegates.append(_load_delegate(module, delegate_path, options))
        try:
            self._interp = module.Interpreter(
                model_path=path,
                num_threads=providers.litert_threads(settings),
                experimental_delegates=delegates or None,
                **kwargs,
            )
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise InvalidModel(_first_line(exc)) from exc
        self.provider = protocol.provider_that_runs(self.runtime, provider)
        self._read_details()

    def _read_details(self) -> None:
        self._input_details = self._interp.get_input_details()
        self._output_details = self._interp.get_output_details()
        self.inputs = [
            (d["name"], tuple(int(x) for x in d["shape"]), _float_view(d))
            for d in self._input_details
        ]

    def make_feed(self, arrays: Sequence[np.ndarray]) -> Feed:
        """TFLite files have batch 1 built in: the inputs are resized to the arrays' batch
        first; float arrays for a quantized model's integer inputs are quantized here, once,
        outside any timed loop."""
        self.resize(int(arrays[0].shape[0]) if arrays[0].ndim else 1)
        names = [name for name, _, _ in self.inputs]
        return self.prepare(dict(zip(names, arrays)))

    def resize(self, batch: int) -> None:
        """Set the batch dimension of every input."""
        changed = False
        for detail in self._input_details:
            shape = list(detail["shape"])
            if shape and shape[0] != batch:
                self._interp.resize_tensor_input(detail["index"], [batch, *shape[1:]])
                changed = True
        if changed:
            self._interp.allocate_tensors()
            self._read_details()

    def prepare(self, feed: Feed) -> Feed:
        """Float inputs quantized for integer-input models; others cast to the input type."""
        prepared = {}
        for detail in self._input_details:
            value = feed[detail["name"]]
            dtype = detail["dtype"]
            scale, zero = detail.get("quantization", (0.0, 0))
            if np.issubdtype(dtype, np.integer) and value.dtype.kind == "f" and scale:
                info = np.iinfo(dtype)
                value = np.clip(np.round(value / scale + zero), info.min, info.max)
            prepared[detail["name"]] = np.ascontiguousarray(value, dtype=dtype)
        return prepared

    def run(self, feed: Feed) -> List[np.ndarray]:
        for detail in self._input_details:
            self._interp.set_tensor(detail["index"], feed[detail["name"]])
        self._interp.invoke()
        outputs = []
        for detail in self._output_details:
            value = self._interp.get_tensor(detail["index"])
            scale, zero = detail.get("quantization", (0.0, 0))
            if np.issubdtype(value.dtype, np.integer) and scale:
                value = (value.astype(np.float32) - zero) * scale
            outputs.append(value)
        return outputs


def _float_view(detail: Dict[str, Any]) -> Any:
    """Inputs are generated as floats when the model quantizes them itself."""
    dtype = detail["dtype"]
    scale = detail.get("quantization", (0.0, 0))[0]
    return np.float32 if np.issubdtype(dtype, np.integer) and scale else dtype


RUNTIMES = {"onnxruntime": OrtSession, "litert": LiteRtSession}


def import_runtime(runtime: str) -> Tuple[str, str]:
    """Import a runtime's package up front, so the memory baseline includes it; its
    (package, version)."""
    if runtime == "onnxruntime":
        return "onnxruntime", str(_import("onnxruntime").__version__)
    if runtime == "litert":
        _, package, version = tflite_module()
        return package, version
    raise RuntimeMissing("unknown runtime {!r}; known: {}".format(runtime, ", ".join(RUNTIMES)))


def open_session(runtime: str, path: str, settings: Settings) -> Session:
    cls = RUNTIMES.get(runtime)
    if cls is None:
        raise RuntimeMissing("unknown runtime {!r}".format(runtime))
    return cls(path, settings)


def spec_from_card(card_inputs: Optional[List[protocol.InputSpec]]) -> Optional[List[InputSpec]]:
    """Input specs from the model card the controller sends (strings for dynamic
    dimensions); None when it has none or cannot be read."""
    if not card_inputs:
        return None
    try:
        return [
            (
                str(i["name"]),
                tuple(d if isinstance(d, int) else None for d in i["shape"]),
                np.dtype(i["dtype"]).type,
            )
            for i in card_inputs
        ]
    except (KeyError, TypeError):
        return None


def feed_for(inputs: Sequence[InputSpec], batch: int, seed: int) -> Feed:
    """Seeded random inputs shaped like the model's, with the batch dimension set."""
    rng = np.random.default_rng(seed)
    feed = {}
    for name, shape, dtype in inputs:
        dims = [batch if i == 0 else (d if d else 1) for i, d in enumerate(shape)] or [1]
        if np.issubdtype(dtype, np.integer):
            feed[name] = rng.integers(0, 16, size=dims).astype(dtype)
        else:
            feed[name] = rng.random(dims, dtype=np.float32).astype(dtype, copy=False)
    return feed
