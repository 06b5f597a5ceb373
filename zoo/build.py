"""Build the model zoo: `python zoo/build.py [mlp|cnn|gpt|all]`.

Everything comes from data that ships with scikit-learn or with this repository; nothing is
downloaded. Seeds are fixed, torch runs single-threaded with deterministic algorithms, and
the .npz files are written with fixed zip timestamps so that a rebuild on the same software
stack reproduces the same bytes (see zoo/README.md for what was checked).

Needs the `zoo` extra (torch, scikit-learn); nothing else in the project imports torch.
"""

from __future__ import annotations

import hashlib
import io
import random
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import yaml
from sklearn.datasets import load_digits
from torch import nn

ZOO = Path(__file__).resolve().parent
SEED = 0
OPSET = 17
TEST_SIZE = 360  # digits has 1797 images; a fixed 20% is held out
CALIB_SIZE = 100
ARTIFACT_SUFFIXES = (".onnx", ".npz", ".json", ".txt")


def seed_everything() -> None:
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez stamps the current time into the zip; a fixed stamp keeps the bytes stable."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels scaled to [0, 1]; one fixed permutation shared by every digits model."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    test, train = order[:TEST_SIZE], order[TEST_SIZE:]
    return x[train], y[train], x[test], y[test]


def train_classifier(
    model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float
) -> nn.Module:
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()


def export(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    in_name: str,
    out_name: str,
    dynamic_batch: bool,
) -> None:
    axes = {in_name: {0: "batch"}, out_name: {0: "batch"}} if dynamic_batch else None
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        (example,),
        buf,
        input_names=[in_name],
        output_names=[out_name],
        dynamic_axes=axes,
        opset_version=OPSET,
        do_constant_folding=True,  # also folds BatchNorm into the preceding Conv
        dynamo=False,
    )
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    path.write_bytes(proto.SerializeToString())


def check_against_torch(model: nn.Module, path: Path, x: np.ndarray) -> np.ndarray:
    """Run the exported file in onnxruntime and fail the build if it drifts from torch."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {sess.get_inputs()[0].name: x})
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(got - want).max())
    if diff > 1e-4:
        sys.exit(f"{path.name}: onnxruntime differs from torch by {diff:.2e}")
    print(f"{path.name}: max |onnxruntime - torch| = {diff:.2e}")
    return got


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_mlp() -> dict[str, object]:
    seed_everything()
    x_train, y_train, x_test, y_test = digits_split()
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    train_classifier(model, x_train, y_train, epochs=60, lr=3e-3)
    path = ZOO / "digits_mlp.onnx"
    export(model, torch.from_numpy(x_test[:1]), path, "input", "logits", dynamic_batch=True)
    save_npz(ZOO / "digits_test.npz", inputs=x_test, labels=y_test)
    save_npz(ZOO / "digits_calib.npz", inputs=x_train[:CALIB_SIZE])
    logits = check_against_torch(model, path, x_test)
    return card("digits_mlp", path, "dense", "mlp", "digits_test.npz", model, logits, y_test)


def conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(),
    )


def separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """MobileNet v1 block: depthwise 3x3 then pointwise 1x1, each with BatchNorm and ReLU6."""
    return nn.Sequential(conv_bn(cin, cin, stride, groups=cin), conv_bn(cin, cout, k=1))


def build_cnn() -> dict[str, object]:
    seed_everything()
    x_train, y_train, x_test, y_test = digits_split()
    x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    model = nn.Sequential(
        conv_bn(1, 16),
        separable(16, 32, stride=1),
        separable(32, 64, stride=2),
        separable(64, 64, stride=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )
    train_classifier(model, x_train, y_train, epochs=40, lr=3e-3)
    path = ZOO / "digits_cnn.onnx"
    export(model, torch.from_numpy(x_test[:1]), path, "input", "logits", dynamic_batch=True)
    save_npz(ZOO / "digits_cnn_test.npz", inputs=x_test, labels=y_test)
    save_npz(ZOO / "digits_cnn_calib.npz", inputs=x_train[:CALIB_SIZE])
    logits = check_against_torch(model, path, x_test)
    return card("digits_cnn", path, "compact", "cnn", "digits_cnn_test.npz", model, logits, y_test)


def card(
    name: str,
    path: Path,
    family: str,
    architecture: str,
    dataset: str,
    model: nn.Module,
    logits: np.ndarray,
    labels: np.ndarray,
) -> dict[str, object]:
    accuracy = float((logits.argmax(-1) == labels).mean())
    print(f"{name}: accuracy {accuracy:.4f} on {len(labels)} held-out samples")
    return {
        "name": name,
        "file": path.name,
        "family": family,
        "architecture": architecture,
        "base_model": "none",
        "trained_on": "scikit-learn load_digits (8x8 handwritten digits, 1437 train images)",
        "dataset": dataset,
        "metric": "top1_accuracy",
        "accuracy": round(accuracy, 4),
        "params": param_count(model),
    }


def write_index(cards: list[dict[str, object]]) -> None:
    """models.yaml keeps models that were not rebuilt; SHA256SUMS covers every artifact."""
    index_path = ZOO / "models.yaml"
    models = {}
    if index_path.exists():
        models = {m["name"]: m for m in yaml.safe_load(index_path.read_text())["models"]}
    models.update({c["name"]: c for c in cards})
    text = yaml.safe_dump({"models": [models[k] for k in sorted(models)]}, sort_keys=False)
    index_path.write_text(text)
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
        for p in sorted(ZOO.iterdir())
        if p.suffix in ARTIFACT_SUFFIXES
    ]
    (ZOO / "SHA256SUMS").write_text("".join(lines))


BUILDERS: dict[str, Callable[[], dict[str, object]]] = {"mlp": build_mlp, "cnn": build_cnn}


def main(argv: list[str]) -> None:
    target = argv[0] if argv else "all"
    if target != "all" and target not in BUILDERS:
        sys.exit(f"usage: python zoo/build.py [{'|'.join(BUILDERS)}|all] (got {target!r})")
    names = list(BUILDERS) if target == "all" else [target]
    write_index([BUILDERS[n]() for n in names])


if __name__ == "__main__":
    main(sys.argv[1:])
