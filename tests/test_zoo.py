"""The committed zoo: checksums, budgets, interfaces and accuracy, with onnxruntime only."""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import yaml

ZOO = Path(__file__).resolve().parent.parent / "zoo"
CARDS = yaml.safe_load((ZOO / "models.yaml").read_text())["models"]
BY_NAME = {card["name"]: card for card in CARDS}
CLASSIFIERS = [c["name"] for c in CARDS if c["metric"] == "top1_accuracy"]
VOCAB = json.loads((ZOO / "tiny_gpt_vocab.json").read_text())["chars"]
# name -> (input name, input shape, output name, output shape) as zoo/README.md documents them
INTERFACES = {
    "digits_mlp": ("input", ["batch", 64], "logits", ["batch", 10]),
    "digits_cnn": ("input", ["batch", 1, 8, 8], "logits", ["batch", 10]),
    "tiny_gpt": ("tokens", [1, 128], "logits", [1, 128, len(VOCAB)]),
}


@cache
def session(name: str) -> ort.InferenceSession:
    path = ZOO / BY_NAME[name]["file"]
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def dataset(name: str) -> Any:
    return np.load(ZOO / BY_NAME[name]["dataset"])


def logits(name: str, inputs: np.ndarray) -> np.ndarray:
    (out,) = session(name).run(None, {session(name).get_inputs()[0].name: inputs})
    return np.asarray(out)


def gpt_logits(tokens: np.ndarray) -> np.ndarray:
    """The decoder has a fixed batch of 1."""
    return np.concatenate([logits("tiny_gpt", row[None]) for row in tokens])


def next_token_targets(prompts: Any) -> tuple[np.ndarray, np.ndarray]:
    """(row, position) pairs and the character each position should predict."""
    tokens, lengths, nxt = prompts["tokens"], prompts["lengths"], prompts["next_token"]
    rows = np.concatenate([np.full(n, r) for r, n in enumerate(lengths)])
    cols = np.concatenate([np.arange(n) for n in lengths])
    targets = np.concatenate([np.append(tokens[r, 1:n], nxt[r]) for r, n in enumerate(lengths)])
    return np.stack([rows, cols]), targets


def test_every_artifact_matches_sha256sums() -> None:
    listed = {}
    for line in (ZOO / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        listed[name] = digest
    on_disk = {p.name for p in ZOO.iterdir() if p.suffix in {".onnx", ".npz", ".json", ".txt"}}
    assert set(listed) == on_disk
    for name, digest in listed.items():
        assert hashlib.sha256((ZOO / name).read_bytes()).hexdigest() == digest, name


def test_zoo_stays_within_embedded_budget() -> None:
    for card in CARDS:
        assert (ZOO / card["file"]).stat().st_size < 100 * 2**20, card["file"]
    total = sum(p.stat().st_size for p in ZOO.iterdir())
    assert total < 5 * 2**20


def test_cards_declare_what_results_are_sliced_by() -> None:
    assert set(BY_NAME) == set(INTERFACES)
    for card in CARDS:
        assert card["base_model"] == "none"
        assert card["family"] in {"dense", "compact"}
        assert card["architecture"] in {"mlp", "cnn", "decoder"}
        assert card["params"] > 0
        assert card["trained_on"]
        assert (ZOO / card["dataset"]).is_file()


@pytest.mark.parametrize("name", sorted(INTERFACES))
def test_model_interface(name: str) -> None:
    in_name, in_shape, out_name, out_shape = INTERFACES[name]
    (inp,), (out,) = session(name).get_inputs(), session(name).get_outputs()
    assert (inp.name, inp.shape, out.name, out.shape) == (in_name, in_shape, out_name, out_shape)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_datasets_and_dynamic_batch(name: str) -> None:
    test = dataset(name)
    calib = np.load(ZOO / BY_NAME[name]["calibration"])
    feature_shape = INTERFACES[name][1][1:]
    for inputs in (test["inputs"], calib["inputs"]):
        assert inputs.dtype == np.float32
        assert list(inputs.shape[1:]) == feature_shape
        assert inputs.min() >= 0.0
        assert inputs.max() <= 1.0
    assert test["labels"].dtype == np.int64
    assert len(test["labels"]) == len(test["inputs"])
    batch = test["inputs"][:7]
    one_by_one = np.concatenate([logits(name, x[None]) for x in batch])
    np.testing.assert_allclose(logits(name, batch), one_by_one, atol=1e-5)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_accuracy_meets_its_card(name: str) -> None:
    test = dataset(name)
    accuracy = (logits(name, test["inputs"]).argmax(-1) == test["labels"]).mean()
    assert accuracy >= BY_NAME[name]["accuracy"] - 0.005
    assert accuracy >= 0.95


def test_classifiers_share_one_split() -> None:
    mlp, cnn = dataset("digits_mlp"), dataset("digits_cnn")
    np.testing.assert_array_equal(mlp["inputs"].reshape(cnn["inputs"].shape), cnn["inputs"])
    np.testing.assert_array_equal(mlp["labels"], cnn["labels"])


def test_gpt_next_token_accuracy_meets_its_card_and_beats_unigram() -> None:
    prompts = dataset("tiny_gpt")
    where, targets = next_token_targets(prompts)
    predicted = gpt_logits(prompts["tokens"])[where[0], where[1]].argmax(-1)
    accuracy = (predicted == targets).mean()
    # The best single character for these very targets: a baseline that cannot be beaten
    # without using the context.
    unigram = np.bincount(targets).max() / len(targets)
    assert accuracy >= BY_NAME["tiny_gpt"]["accuracy"] - 0.005
    assert accuracy > unigram + 0.2


def test_gpt_padding_after_the_prompt_does_not_change_its_logits() -> None:
    """Why a runner may left-align L tokens in the fixed context and read position L-1."""
    prompts = dataset("tiny_gpt")
    row = int(np.argmin(prompts["lengths"]))
    n = int(prompts["lengths"][row])
    tokens = prompts["tokens"][row : row + 1].copy()
    assert n < 128
    assert (tokens[0, n:] == 0).all()
    other = tokens.copy()
    other[0, n:] = np.random.default_rng(0).integers(0, len(VOCAB), 128 - n)
    np.testing.assert_allclose(gpt_logits(tokens)[0, :n], gpt_logits(other)[0, :n], atol=1e-5)
    assert logits("tiny_gpt", tokens).shape == (1, 128, len(VOCAB))


def test_gpt_vocabulary_covers_the_corpus() -> None:
    assert sorted(set((ZOO / "tiny_gpt_corpus.txt").read_text(encoding="ascii"))) == VOCAB
    prompts = dataset("tiny_gpt")
    assert prompts["tokens"].dtype == np.int64
    assert prompts["tokens"].shape[1] == 128
    assert prompts["tokens"].max() < len(VOCAB)


# --- the pretrained models, built into the cache from packaged weights (zoo/pretrained.py) ---


def pretrained() -> Any:
    """zoo/pretrained.py as a module (zoo/ is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("zoo_pretrained", ZOO / "pretrained.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built() -> dict[str, Path]:
    """Each pretrained model's folder: built once per machine (the venv takes minutes)."""
    zoo = pretrained()
    return {name: zoo.ensure(name) for name in zoo.MODELS}


@pytest.mark.slow
def test_pretrained_builds_are_cached_and_named_by_their_recipe(built: dict[str, Path]) -> None:
    zoo = pretrained()
    for name, folder in built.items():
        assert folder.name == f"{name}-{zoo.recipe()}"
        assert (folder / "DONE").read_text().split() == list(zoo.MODELS[name])
        before = {f: (folder / f).stat().st_mtime_ns for f in zoo.MODELS[name]}
        assert zoo.ensure(name) == folder  # built before: nothing runs again
        assert before == {f: (folder / f).stat().st_mtime_ns for f in zoo.MODELS[name]}
    # Pins, the build script and the sentences are the recipe: what changes them builds anew.
    assert {f.name for f in zoo.RECIPE_FILES} == {
        "pretrained_build.py",
        "npz.py",
        "minilm_sentences.txt",
    }


@pytest.mark.slow
def test_minilm_embeds_real_sentences(built: dict[str, Path]) -> None:
    folder = built["minilm"]
    encoder = ort.InferenceSession(
        str(folder / "minilm_l6.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [(i.name, i.shape, i.type) for i in encoder.get_inputs()]
    assert names == [
        ("input_ids", ["batch", "sequence"], "tensor(int64)"),
        ("attention_mask", ["batch", "sequence"], "tensor(int64)"),
    ]
    assert [(o.name, o.shape) for o in encoder.get_outputs()] == [("embedding", ["batch", 384])]
    with np.load(folder / "minilm_sentences.npz") as data:
        feeds = {k: data[k] for k in ("input_ids", "attention_mask")}
    assert feeds["input_ids"].shape == (48, 128)
    assert sorted(np.load(folder / "minilm_calib.npz").files) == ["attention_mask", "input_ids"]
    (emb,) = encoder.run(None, feeds)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    similar = emb @ emb.T
    np.fill_diagonal(similar, -1)
    # The sentences come in paraphrase pairs: each one's nearest neighbour is its pair.
    assert (similar.argmax(axis=1) == np.arange(48) ^ 1).mean() > 0.9
    # Any dynamic length: the same sentence cut to 32 tokens gives the same embedding.
    short = {k: v[:4, :32] for k, v in feeds.items()}
    assert short["attention_mask"][:, 31].sum() == 0  # these sentences fit in 32 tokens
    np.testing.assert_allclose(encoder.run(None, short)[0], emb[:4], atol=1e-5)


@pytest.mark.slow
def test_ppocr_detector_finds_text_on_a_page(built: dict[str, Path]) -> None:
    folder = built["ppocr_det"]
    detector = ort.InferenceSession(
        str(folder / "ppocr_det.onnx"), providers=["CPUExecutionProvider"]
    )
    with np.load(folder / "ppocr_images.npz") as data:
        images = data["x"]
    assert images.shape == (6, 3, 320, 320) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    probs, features, pooled = detector.run(None, {"x": images[:2]})
    # NCHW, each: the layouts a TFLite conversion may change.
    assert probs.shape == (2, 1, 320, 320)
    assert features.shape == (2, 96, 80, 80)
    assert pooled.shape == (2, 384, 1, 1)
    text = (probs > 0.3).mean(axis=(1, 2, 3))
    assert text[0] > 0.02  # skimage's page.png: a scanned page of text
