"""Isolation on the lab: a worker the kernel kills for memory (a 300 MB device), a case that runs
out of time and a model unreadable on the device each end their own case, and the run goes on
with the next one."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import yaml
from click.testing import CliRunner
from onnx import TensorProto, helper

from fleet import lab as lab_lib
from fleet.cli import main
from fleet.results.store import Store

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "zoo"

pytestmark = pytest.mark.slow


def memory_hog(path: Path) -> Path:
    """A small file that needs about 1 GiB to run: the input tiled 2**22 times, then
    averaged. It depends on the input, so nothing is folded away when the model loads."""
    nodes = [
        helper.make_node("Tile", ["x", "repeats"], ["big"]),
        helper.make_node("ReduceMean", ["big"], ["y"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "memory_hog",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor("repeats", TensorProto.INT64, [2], [1, 1 << 22])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def run(suite: dict[str, object], tmp_path: Path, lab: Path, store: str) -> tuple[int, str]:
    path = tmp_path / f"{suite['name']}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    args = ["run", str(path), "--inventory", str(lab / "inventory.yaml"), "--devices", "lab"]
    result = CliRunner().invoke(main, [*args, "--store", str(tmp_path / store)])
    return result.exit_code, result.output


def model(name: str, path: Path) -> dict[str, object]:
    return {"name": name, "path": str(path), "variants": ["onnx:fp32"]}


def statuses(tmp_path: Path, store: str) -> dict[str, tuple[str, str]]:
    return {
        r.tags["model"]: (str(r.fields["status"]), str(r.fields.get("message", "")))
        for r in Store(tmp_path / store).records(measurement="result")
    }


def test_out_of_memory_timeout_and_invalid_model_each_end_one_case(tmp_path):
    folder = tmp_path / "lab"
    (device,) = lab_lib.up(folder, 1, memory_mb=300)
    if device.memory_mb is None:
        pytest.skip("no writable memory cgroup here, so no lab device can be memory-capped")
    # The cases that must finish have a few seconds of work, even on a busy machine, and
    # timeout_s is far above that; the decoder asked for 100,000 tokens (a full pass per
    # token, at least 0.1 ms each, seven times at each context length) cannot finish in it
    # on any machine.
    measure = {
        "repetitions": 1,
        "warmup_iterations": 5,
        "min_iterations": 200,
        "max_seconds": 4,  # warm-up and timed phase together: 5 s at most
        "timeout_s": 30,
        "decode_tokens": 100_000,
    }
    gpt = {**model("tiny_gpt", ZOO / "tiny_gpt.onnx"), "architecture": "decoder"}
    first = {
        "name": "isolation",
        "measure": measure,
        "models": [
            model("hog", memory_hog(tmp_path / "hog.onnx")),
            gpt,
            model("digits_mlp", ZOO / "digits_mlp.onnx"),
        ],
    }
    try:
        code, output = run(first, tmp_path, folder, "first.sqlite")
        assert code == 1, output  # out of memory and timeout are findings (exit 1)
        got = statuses(tmp_path, "first.sqlite")
        assert got["hog"] == (
            "out_of_memory",
            "worker killed by the kernel's OOM killer in measure, memory limit 300 MB",
        )
        assert got["tiny_gpt"] == (
            "timeout",
            "no result after 30 s (timeout_s), while in generate",
        )
        assert got["digits_mlp"][0] == "ok"

        # The MLP's file goes bad on the device (a worn SD card): the agent finds out, says
        # so, deletes it (the next run sends it again) and goes on with the next case.
        mlp = next(
            r
            for r in Store(tmp_path / "first.sqlite").records(measurement="result")
            if r.tags["model"] == "digits_mlp"
        )
        artifact = Path(device.workdir) / "cache" / f"{mlp.fields['model_sha256']}.onnx"
        artifact.write_bytes(artifact.read_bytes()[:1000])
        second = {
            "name": "isolation2",
            "measure": measure,
            "models": [
                model("digits_mlp", ZOO / "digits_mlp.onnx"),
                model("cnn", ZOO / "digits_cnn.onnx"),
            ],
        }
        code, output = run(second, tmp_path, folder, "second.sqlite")
        assert code == 2, output  # an invalid model is an error
        got = statuses(tmp_path, "second.sqlite")
        assert got["digits_mlp"] == (
            "invalid_model",
            f"{artifact} does not match its sha256; it will be sent again",
        )
        assert got["cnn"][0] == "ok"
        assert not artifact.exists()
        code, output = run(second, tmp_path, folder, "third.sqlite")
        assert code == 0, output
    finally:
        lab_lib.down(folder)
