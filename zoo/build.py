"""Build the model zoo: `python zoo/build.py [mlp|cnn|gpt|all]`.

Everything comes from data that ships with scikit-learn or with this repository; nothing is
downloaded. Seeds are fixed, torch runs single-threaded with deterministic algorithms, and
the .npz files are written with fixed zip timestamps so that a rebuild on the same software
stack reproduces the same bytes (see zoo/README.md for what was checked).

Needs the `zoo` extra (torch, scikit-learn); nothing else in the project imports torch.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import importlib
import inspect
import io
import json
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import yaml
from npz import save_npz
from sklearn.datasets import load_digits
from torch import nn

ZOO = Path(__file__).resolve().parent
SEED = 0
OPSET = 17
TEST_SIZE = 360  # digits has 1797 images; a fixed 20% is held out
CALIB_SIZE = 100
GPT_STEPS = int(os.environ.get("ZOO_GPT_STEPS", "1500"))
ARTIFACT_SUFFIXES = (".onnx", ".npz", ".json", ".txt")


def seed_everything() -> None:
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


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


GPT_CONTEXT = 128
GPT_PROMPTS = 32
CORPUS = ZOO / "tiny_gpt_corpus.txt"
# The stdlib modules whose docstrings make up the corpus (after the Zen of Python).
CORPUS_MODULES = (  # noqa: SIM905 - a word list reads better than 51 quoted lines
    "collections itertools functools json re os pathlib string textwrap argparse random "
    "statistics heapq bisect datetime fractions decimal subprocess threading socket zipfile csv "
    "logging unittest typing dataclasses enum abc contextlib shutil tempfile pickle copy math "
    "operator io time calendar difflib glob fnmatch hashlib base64 struct array queue sched "
    "selectors email http urllib.parse"
).split()


def corpus_text() -> str:
    """The committed corpus is the source of truth: docstrings differ between Python versions,
    so the file is generated from the running stdlib only when it is missing."""
    if CORPUS.exists():
        return CORPUS.read_text(encoding="ascii")
    with contextlib.redirect_stdout(io.StringIO()):
        import this  # noqa: F401 - importing it prints the Zen

    parts = [codecs.decode(sys.modules["this"].s, "rot13")]
    for name in CORPUS_MODULES:
        module = importlib.import_module(name)
        members = [module] + [
            v
            for k, v in sorted(vars(module).items())
            if not k.startswith("_") and getattr(v, "__module__", None) == module.__name__
        ]
        parts += [doc for doc in map(inspect.getdoc, members) if doc]
    text = "\n\n".join(p for p in parts if p.isascii()) + "\n"
    CORPUS.write_text(text, encoding="ascii")
    return text


class Block(nn.Module):
    """Pre-norm transformer block as in nanoGPT, attention written out in plain ops so the
    export is MatMul/Softmax/Where rather than a fused attention op."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model)
        )
        future = torch.triu(torch.ones(GPT_CONTEXT, GPT_CONTEXT, dtype=torch.bool), 1)
        self.register_buffer("future", future, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) * (d // self.heads) ** -0.5
        scores = scores.masked_fill(self.future[:t, :t], float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class TinyGPT(nn.Module):
    def __init__(self, vocab: int, d_model: int = 128, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.zeros(GPT_CONTEXT, d_model))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.Sequential(*(Block(d_model, heads) for _ in range(layers)))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.tok(tokens) + self.pos[: tokens.shape[1]]
        return self.head(self.ln(self.blocks(x)))


def next_token_accuracy(
    logits: np.ndarray, tokens: np.ndarray, lengths: np.ndarray, next_token: np.ndarray
) -> float:
    """Every real position of every prompt predicts the character after it."""
    hits = [
        logits[row, :n].argmax(-1) == np.append(tokens[row, 1:n], next_token[row])
        for row, n in enumerate(lengths)
    ]
    return float(np.concatenate(hits).mean())


def build_gpt() -> dict[str, object]:
    seed_everything()
    text = corpus_text()
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text], dtype=np.int64)
    split = int(len(ids) * 0.9)  # the last 10% is held out; the prompts come from it
    train, held_out = torch.from_numpy(ids[:split]), ids[split:]
    model = TinyGPT(len(chars))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=GPT_STEPS)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for step in range(GPT_STEPS):
        starts = torch.randint(len(train) - GPT_CONTEXT - 1, (32,), generator=gen)
        window = torch.stack([train[s : s + GPT_CONTEXT + 1] for s in starts.tolist()])
        logits = model(window[:, :-1])
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), window[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"tiny_gpt: step {step} loss {loss.item():.3f}")
    model.eval()

    rng = np.random.default_rng(SEED)
    lengths = np.linspace(8, GPT_CONTEXT, GPT_PROMPTS).round().astype(np.int64)
    starts = rng.choice(len(held_out) - GPT_CONTEXT - 1, GPT_PROMPTS, replace=False)
    tokens = np.zeros((GPT_PROMPTS, GPT_CONTEXT), dtype=np.int64)  # 0 pads; see README
    for row, (s, n) in enumerate(zip(starts, lengths, strict=True)):
        tokens[row, :n] = held_out[s : s + n]
    next_token = np.array([held_out[s + n] for s, n in zip(starts, lengths, strict=True)])
    save_npz(ZOO / "tiny_gpt_prompts.npz", tokens=tokens, lengths=lengths, next_token=next_token)
    (ZOO / "tiny_gpt_vocab.json").write_text(json.dumps({"chars": chars}, indent=0) + "\n")

    path = ZOO / "tiny_gpt.onnx"
    export(model, torch.from_numpy(tokens[:1]), path, "tokens", "logits", dynamic_batch=False)
    logits = np.concatenate([check_against_torch(model, path, t[None]) for t in tokens])
    accuracy = next_token_accuracy(logits, tokens, lengths, next_token)
    print(f"tiny_gpt: next-token accuracy {accuracy:.4f} over {lengths.sum()} held-out positions")
    return {
        "name": "tiny_gpt",
        "file": path.name,
        "family": "compact",
        "architecture": "decoder",
        "base_model": "none",
        "trained_on": f"{CORPUS.name} (Python 3.11 stdlib docstrings, first 90%)",
        "dataset": "tiny_gpt_prompts.npz",
        "metric": "next_token_accuracy",
        "accuracy": round(accuracy, 4),
        "params": param_count(model),
        "context_tokens": GPT_CONTEXT,
        "vocab": "tiny_gpt_vocab.json",
    }


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
        "calibration": dataset.replace("_test", "_calib"),
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


BUILDERS: dict[str, Callable[[], dict[str, object]]] = {
    "mlp": build_mlp,
    "cnn": build_cnn,
    "gpt": build_gpt,
}


def main(argv: list[str]) -> None:
    target = argv[0] if argv else "all"
    if target != "all" and target not in BUILDERS:
        sys.exit(f"usage: python zoo/build.py [{'|'.join(BUILDERS)}|all] (got {target!r})")
    names = list(BUILDERS) if target == "all" else [target]
    write_index([BUILDERS[n]() for n in names])


if __name__ == "__main__":
    main(sys.argv[1:])
