"""Inference runtimes behind one small interface: load a model, describe inputs, run."""

import importlib
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np


class RuntimeMissing(Exception):
    """The runtime (or the provider asked for) is not installed on this device."""


class InvalidModel(Exception):
    """The runtime could not load the model file."""


InputSpec = Tuple[str, Tuple[Any, ...], Any]  # name, shape (ints or None), numpy dtype


class Session:
    runtime = ""
    version = ""
    provider = ""
    inputs: List[InputSpec]

    def run(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        raise NotImplementedError


# onnxruntime execution providers by the short names suites use.
ORT_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
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


class OrtSession(Session):
    runtime = "onnxruntime"

    def __init__(self, path: str, provider: str, threads: int, options: Dict[str, Any]) -> None:
        try:
            ort = importlib.import_module("onnxruntime")
        except ImportError as exc:
            raise RuntimeMissing("onnxruntime is not installed") from exc
        self.version = ort.__version__
        wanted = ORT_PROVIDERS.get(provider)
        if wanted is None:
            raise RuntimeMissing(
                "unknown provider {!r}; known: {}".format(provider, ", ".join(ORT_PROVIDERS))
            )
        if wanted not in ort.get_available_providers():
            raise RuntimeMissing("onnxruntime has no {} on this device".format(wanted))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = int(options.get("inter_op_threads", 1))
        level = options.get("graph_optimization_level", "all")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        try:
            self._session = ort.InferenceSession(path, so, providers=[wanted])
        except Exception as exc:  # onnxruntime raises several unrelated types here
            raise InvalidModel(str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc
        # The provider that actually runs: onnxruntime falls back to CPU silently.
        self.provider = _short_provider(self._session.get_providers()[0])
        self.inputs = [
            (
                i.name,
                tuple(d if isinstance(d, int) else None for d in i.shape),
                _ORT_DTYPES.get(i.type, np.float32),
            )
            for i in self._session.get_inputs()
        ]

    def run(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
        return list(self._session.run(None, feed))


def _short_provider(name: str) -> str:
    for short, full in ORT_PROVIDERS.items():
        if full == name:
            return short
    return name


# LiteRT's Python packages, newest first: older boards only have tflite_runtime.
_TFLITE_MODULES = ("ai_edge_litert.interpreter", "tflite_runtime.interpreter", "tensorflow.lite")


def _tflite_module() -> Tuple[Any, str, str]:
    for name in _TFLITE_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        package = importlib.import_module(name.split(".")[0])
        return module, name.split(".")[0], str(getattr(package, "__version__", "unknown"))
    raise RuntimeMissing("no TFLite runtime (ai_edge_litert, tflite_runtime or tensorflow)")


class LiteRtSession(Session):
    runtime = "litert"

    def __init__(self, path: str, provider: str, threads: int, options: Dict[str, Any]) -> None:
        module, package, self.version = _tflite_module()
        self.package = package
        delegates = []
        if provider not in ("cpu", "xnnpack"):
            delegate_path = options.get("delegate_path")
            if not delegate_path:
                raise RuntimeMissing("provider {!r} needs measure.delegate_path".format(provider))
            try:
                delegates.append(module.load_delegate(delegate_path))
            except (OSError, ValueError) as exc:
                raise RuntimeMissing(
                    "cannot load delegate {}: {}".format(delegate_path, exc)
                ) from exc
        try:
            self._interp = module.Interpreter(
                model_path=path, num_threads=threads, experimental_delegates=delegates or None
            )
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise InvalidModel(str(exc).splitlines()[0]) from exc
        # XNNPACK is the CPU default in every TFLite build fleet supports.
        self.provider = provider if delegates else "xnnpack"
        self._input_details = self._interp.get_input_details()
        self._output_details = self._interp.get_output_details()
        self.inputs = [
            (d["name"], tuple(int(x) for x in d["shape"]), _float_view(d))
            for d in self._input_details
        ]

    def resize(self, batch: int) -> None:
        """Set the batch dimension of every input (TFLite models export batch 1)."""
        for detail in self._input_details:
            shape = list(detail["shape"])
            if shape and shape[0] != batch:
                self._interp.resize_tensor_input(detail["index"], [batch, *shape[1:]])
        self._interp.allocate_tensors()
        self._input_details = self._interp.get_input_details()
        self._output_details = self._interp.get_output_details()

    def prepare(self, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Quantize float inputs for integer-input models, once, outside the timed loop."""
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

    def run(self, feed: Dict[str, np.ndarray]) -> List[np.ndarray]:
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


def import_runtime(runtime: str) -> None:
    """Import a runtime's package up front, so the memory baseline includes it."""
    if runtime == "onnxruntime":
        try:
            importlib.import_module("onnxruntime")
        except ImportError as exc:
            raise RuntimeMissing("onnxruntime is not installed") from exc
    elif runtime == "litert":
        _tflite_module()


def open_session(
    runtime: str, path: str, provider: str, threads: int, options: Dict[str, Any]
) -> Session:
    cls = RUNTIMES.get(runtime)
    if cls is None:
        raise RuntimeMissing("unknown runtime {!r}".format(runtime))
    return cls(path, provider, threads, options)


def available() -> Dict[str, str]:
    """Runtimes importable here, with versions, for the hello event."""
    found = {}
    for name in ("onnxruntime", "ai_edge_litert", "tflite_runtime", "tensorflow"):
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: S112 - a broken install (numpy ABI) is as good as missing
            continue
        found[name] = str(getattr(module, "__version__", "unknown"))
    return found


def feed_for(inputs: Sequence[InputSpec], batch: int, seed: int) -> Dict[str, np.ndarray]:
    """Seeded random inputs shaped like the model's, with the batch dimension set."""
    rng = np.random.default_rng(seed)
    feed = {}
    for name, shape, dtype in inputs:
        dims = [batch if i == 0 else (d if d else 1) for i, d in enumerate(shape)] or [1]
        if np.issubdtype(dtype, np.integer):
            feed[name] = rng.integers(0, 16, size=dims).astype(dtype)
        else:
            feed[name] = rng.random(dims, dtype=np.float32).astype(dtype)
    return feed
