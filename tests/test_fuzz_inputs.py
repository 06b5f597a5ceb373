"""Generated malformed inputs through the real loaders (issue 12, "Done when": the fuzz test).

Hundreds of suites, inventories, fleet.toml files and data files, broken every way hypothesis
finds (random structures, wrong types, huge and non-finite numbers, unicode, aliases, deep
nesting, truncated or garbage .npz), go through load_suite, load_inventory, load_config and
load_samples. Each either loads or raises a FleetError whose message is one line: never
another exception (exit 3), never a hang (hypothesis' deadline), never unbounded memory.
A few go through `python -m fleet` to check the exit code the user sees.
"""

from __future__ import annotations

import io
import os
import re
import resource
import subprocess
import sys
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.artifacts.data import load_npz, load_samples
from fleet.artifacts.variant import KNOWN
from fleet.config import load_config
from fleet.errors import FleetError
from fleet.inventory import DEVICE_CLASSES, load_inventory
from fleet.suite import BUDGETS, DECLARED_KEYS, MEASURE_DEFAULTS, load_suite
from fleet.yamlfile import MAX_DEPTH

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "zoo" / "digits_mlp.onnx"
DATASET = ROOT / "zoo" / "digits_test.npz"
PROMPTS = ROOT / "zoo" / "tiny_gpt_prompts.npz"

# The whole module stays under a minute on a 2-core machine: a few hundred cases per loader.
FUZZ = settings(
    max_examples=200,
    deadline=timedelta(seconds=10),  # far above any one load: only a hang exceeds it
    database=None,  # nothing written into the working tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
pytestmark = pytest.mark.timeout(300)


def loads_or_refuses(load: Callable[[], object]) -> None:
    """The property every loader keeps: success, or one FleetError line naming the problem."""
    try:
        load()
    except FleetError as exc:
        message = str(exc)
        assert message, "an error without a message"
        assert len(message.splitlines()) == 1, f"not one line: {message!r}"
        assert len(message) < 2000, f"not a short line: {len(message)} characters"


@pytest.fixture(autouse=True)
def bounded_memory() -> Iterator[None]:
    """No case may grow the process by more than a generous bound (a YAML bomb took GBs)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 256, f"peak memory grew by {grown_mb:.0f} MB"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# Values of every kind a YAML file can hold, biased towards the ones that broke fleet.
NASTY = [
    "../../tmp/x",
    "a/b",
    "$(touch /tmp/pwned)",
    "`id`",
    "x\ny",
    "a'b\"c",
    "",
    " ",
    "1e20",
    "é",
    "\u2028",
    "\x85",
    "~",
    "onnx:fp32",
    "tflite:int8",
    "cpu",
    "x" * 300,
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(NASTY),
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.sampled_from(NASTY), children, max_size=4)
    ),
    max_leaves=10,
)

# Fragments that are valid YAML syntax on their own but nasty in context.
SNIPPETS = [
    "&a [1, 2]",
    "*a",
    "*undefined",
    "&a [*a]",
    "!!python/object:os.system x",
    "!!binary AAA",
    "!!int 0x",
    "!!bool maybe",
    "2001-02-30",
    "{",
    "]",
    "'unclosed",
    "? [a]\n: 1",
    "<<: {a: 1}",
    "\t",
    "\x00",
    "\ufeff",
    "%YAML 1.1",
    "---\n---",
    "[" * (MAX_DEPTH + 5),
    "1" * 5000,
]


@st.composite
def mutated(draw: st.DrawFn, document: Any) -> str:
    """`document` as YAML, then maybe cut short or with a nasty fragment spliced in."""
    text = yaml.safe_dump(document, allow_unicode=draw(st.booleans()))
    how = draw(st.sampled_from(["as is", "as is", "as is", "truncated", "spliced", "duplicated"]))
    if how == "truncated":
        return text[: draw(st.integers(0, len(text)))]
    lines = text.splitlines()
    at = draw(st.integers(0, len(lines)))
    if how == "spliced":
        lines.insert(at, draw(st.sampled_from(SNIPPETS) | st.text(max_size=30)))
    elif how == "duplicated" and lines:
        lines.insert(at, lines[min(at, len(lines) - 1)])
    return "\n".join(lines) + "\n"


def bomb(levels: int) -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        name, previous = chr(ord("a") + level), chr(ord("a") + level - 1)
        lines.append(f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]")
    return "\n".join(lines) + "\nname: s\nmodels: *" + chr(ord("a") + levels - 1) + "\n"


# --- suites ---------------------------------------------------------------------------------


# Settings near their valid ranges, so most cases reach the checks past the first error.
settings_values = st.one_of(
    st.integers(-2, 2000),
    st.floats(-1, 1e5),
    st.sampled_from(["cpu", "cuda", "gpu", "builtin", "all", "fast", "", "/lib/d.so"]),
    st.lists(st.integers(-1, 200), max_size=3),
    values,
)


@st.composite
def suites(draw: st.DrawFn) -> str:
    def mostly(strategy: st.SearchStrategy[Any], other: st.SearchStrategy[Any] = values) -> Any:
        """Usually from `strategy`, sometimes anything at all."""
        return draw(other if draw(st.sampled_from(range(8))) == 7 else strategy)

    model: dict[str, Any] = {
        "name": mostly(st.sampled_from(["m", "digits_mlp", "a.b-c_d"])),
        "path": mostly(st.sampled_from([str(MODEL), str(MODEL), "nope.onnx", ".", ""])),
    }
    if draw(st.booleans()):
        model["variants"] = mostly(st.lists(st.sampled_from([*KNOWN, "onnx:int3"]), max_size=3))
    if draw(st.booleans()):
        model["dataset"] = mostly(st.sampled_from([str(DATASET), str(MODEL), str(ROOT)]))
    for key in draw(st.lists(st.sampled_from([*DECLARED_KEYS, "budgets", "bogus"]), max_size=2)):
        model[key] = mostly(st.sampled_from(["cnn", "decoder", 3]))
    measure_keys = st.sampled_from([*sorted(MEASURE_DEFAULTS), "bogus"])
    measure = draw(st.dictionaries(measure_keys, settings_values, max_size=4))
    budgets = st.dictionaries(st.sampled_from([*sorted(BUDGETS), "p95"]), settings_values)
    suite: dict[str, Any] = {
        "name": mostly(st.sampled_from(["s", "night-1.2"])),
        "models": mostly(st.just([model]), st.sampled_from([[model, model], model, []])),
        "measure": measure,
        "budgets": draw(budgets),
    }
    if draw(st.booleans()):
        classes = st.sampled_from([*DEVICE_CLASSES, "toaster"])
        override = st.fixed_dictionaries(
            {}, optional={"measure": st.just(measure), "budgets": budgets}
        )
        suite["classes"] = draw(st.dictionaries(classes, st.one_of(override, override, values)))
    return draw(mutated(suite))


@FUZZ
@given(text=suites())
def test_generated_suites_load_or_are_refused_in_one_line(folder: Path, text: str) -> None:
    path = folder / "suite.yaml"
    path.write_text(text, encoding="utf-8")
    loads_or_refuses(lambda: load_suite(path))


@FUZZ
@given(
    text=st.lists(
        st.sampled_from([*"[]{}:,&*!|>-?#'\"\n\t %@`=", "a", "b", "1", ".5", "é", "\x00"]),
        max_size=200,
    ).map("".join)
)
def test_random_yaml_text_loads_or_is_refused_in_one_line(folder: Path, text: str) -> None:
    path = folder / "raw.yaml"
    path.write_text(text, encoding="utf-8")
    loads_or_refuses(lambda: load_suite(path))
    loads_or_refuses(lambda: load_inventory(path))


# --- inventories ----------------------------------------------------------------------------

HOST_VARS = [
    "ansible_host",
    "ansible_port",
    "ansible_user",
    "ansible_ssh_private_key_file",
    "fleet_class",
    "fleet_python",
    "fleet_workdir",
    "fleet_tags",
    "fleet_bogus",
    "other",
]


@st.composite
def inventories(draw: st.DrawFn) -> str:
    names = st.sampled_from(["pi5-a", "10.0.0.1", "local", "h"]) | st.text(max_size=8)
    host_vars = st.dictionaries(st.sampled_from(HOST_VARS), values, max_size=4) | values
    hosts = st.dictionaries(names, host_vars, max_size=3)
    group = st.fixed_dictionaries(
        {}, optional={"hosts": hosts | values, "vars": host_vars, "children": values}
    )
    children = st.dictionaries(st.sampled_from(["pi", "all", "lab"]) | st.text(max_size=5), group)
    top = draw(group)
    if draw(st.booleans()):
        top["children"] = draw(children)
    document = draw(st.sampled_from([{"all": top}, {"all": top}, top, [top]]))
    return draw(mutated(document))


@FUZZ
@given(text=inventories())
def test_generated_inventories_load_or_are_refused_in_one_line(folder: Path, text: str) -> None:
    path = folder / "inventory.yaml"
    path.write_text(text, encoding="utf-8")
    loads_or_refuses(lambda: load_inventory(path))


# --- fleet.toml and its environment ---------------------------------------------------------

toml_values = st.one_of(
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["nan", "inf", "-inf", "1e308", "true", "false", "[1, [2]]", "{a = 1}"]),
    st.sampled_from(['"http://h:8086"', '"https://[::1]:8086/"', '"ftp://x"', '"http://u:p@h"']),
    st.text(max_size=10),
)
SECRET_FILE = "<secret file>"
TOML_KEYS = ["url", "dialect", "database", "user", "token", "token_file", "batch_size", "gzip"]


@st.composite
def configs(draw: st.DrawFn) -> tuple[str, dict[str, str], bytes]:
    section = draw(st.sampled_from(["[influx]", "[influxdb]", "", "[[influx]]", "influx = 1"]))
    keys = st.sampled_from([*TOML_KEYS, "timeout_s", "retry_total_s", "password_file", "x"])
    lines = [f"{key} = {draw(toml_values)}" for key in draw(st.lists(keys, max_size=5))]
    text = "\n".join([section, *lines]) + draw(st.sampled_from(["\n", "", "\n[" * 40]))
    variables = [f"FLEET_INFLUX_{n}" for n in ["URL", "USER", "TOKEN", "PASSWORD", "DB", "GZIP"]]
    env = draw(st.dictionaries(st.sampled_from([*variables, "FLEET_INFLUX_TOKEN_FILE"]), st.text()))
    if draw(st.booleans()):
        env["FLEET_INFLUX_TOKEN_FILE"] = SECRET_FILE  # the test writes random bytes there
    if draw(st.booleans()):
        env["FLEET_INFLUX_URL"] = "https://influx.example:8086"
    return text, env, draw(st.binary(max_size=64))


@FUZZ
@given(case=configs())
def test_generated_configs_load_or_are_refused_in_one_line(
    folder: Path, case: tuple[str, dict[str, str], bytes]
) -> None:
    text, env, secret_file = case
    path = folder / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    (folder / "secret").write_bytes(secret_file)
    if env.get("FLEET_INFLUX_TOKEN_FILE") == SECRET_FILE:
        env["FLEET_INFLUX_TOKEN_FILE"] = str(folder / "secret")
    loads_or_refuses(lambda: load_config(path, env=env))


# --- data files -----------------------------------------------------------------------------


def npz_bytes(compressed: bool = False, **arrays: Any) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


VALID_NPZ = [
    DATASET.read_bytes(),
    PROMPTS.read_bytes(),
    npz_bytes(True, inputs=np.ones((5, 3), np.float32), labels=np.arange(5)),
]
DTYPES = ["float32", "float64", "int64", "int8", "uint8", "bool", "U3", "complex64"]


@st.composite
def data_files(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["garbage", "truncated", "flipped", "appended", "arrays"]))
    if kind == "garbage":
        return draw(st.binary(max_size=2000))
    valid = draw(st.sampled_from(VALID_NPZ))
    if kind == "truncated":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "flipped":
        at = draw(st.integers(0, len(valid) - 1))
        return valid[:at] + bytes([valid[at] ^ draw(st.integers(1, 255))]) + valid[at + 1 :]
    if kind == "appended":
        return valid + draw(st.binary(min_size=1, max_size=100))
    keys = st.sampled_from(["inputs", "labels", "tokens", "lengths", "next_token", "x", "a/b"])
    arrays = {
        key: np.asarray(draw(st.lists(st.integers(-5, 300), max_size=12)), dtype=np.int64)
        .astype(draw(st.sampled_from(DTYPES)))
        .reshape(draw(st.sampled_from([(-1,), (-1, 1), (1, -1)])))
        for key in draw(st.lists(keys, min_size=1, max_size=4, unique=True))
    }
    return npz_bytes(draw(st.booleans()), **arrays)


CLASSIFIER = [{"name": "x", "shape": ["batch", 1], "dtype": "float32"}]
DECODER = [{"name": "ids", "shape": [1, "tokens"], "dtype": "int64"}]


@FUZZ
@given(content=data_files(), inputs=st.sampled_from([CLASSIFIER, DECODER]))
def test_generated_data_files_load_or_are_refused_in_one_line(
    folder: Path, content: bytes, inputs: Any
) -> None:
    path = folder / "data.npz"
    path.write_bytes(content)
    loads_or_refuses(lambda: load_npz(path))
    loads_or_refuses(lambda: load_samples(path, inputs))


def test_an_npz_whose_header_lies_about_its_size_allocates_nothing(tmp_path: Path) -> None:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    )
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("inputs.npy", header.getvalue() + bytes(64))
    tracemalloc.start()
    try:
        with pytest.raises(FleetError, match=r"liar.npz: array 'inputs' is cut short"):
            load_npz(path)
        assert tracemalloc.get_traced_memory()[1] < 10 * 2**20
    finally:
        tracemalloc.stop()


def test_a_yaml_bomb_is_refused_in_bounded_time_and_memory(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb(10))
    tracemalloc.start()
    try:
        with pytest.raises(FleetError, match=r"bomb.yaml:\d+: invalid YAML: aliases expand"):
            load_suite(path)
        assert tracemalloc.get_traced_memory()[1] < 10 * 2**20
    finally:
        tracemalloc.stop()


# --- through the command line: exit 2 and one line, never exit 3 ----------------------------


def fleet(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"FLEET_HOME": str(tmp_path / "home"), "FLEET_CACHE": str(tmp_path / "cache")}
    return subprocess.run(
        [sys.executable, "-m", "fleet", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}, **env},
        check=False,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (bomb(9), r"suite.yaml:\d+: invalid YAML: aliases expand to more than"),
        ("name: s\nmodels: " + "[" * 100_000 + "\n", r"suite.yaml:2: invalid YAML: nested deeper"),
        (
            f"name: s\nmodels:\n  - {{name: ../../../../tmp/x, path: {MODEL}}}\n",
            r"suite.yaml:3: a model name must be",
        ),
        (
            f"name: s\nmodels:\n  - {{name: m, path: {MODEL}, dataset: garbage.npz}}\n",
            r"suite.yaml:3: dataset .*garbage.npz: not a readable .npz file",
        ),
    ],
    ids=["yaml-bomb", "deep-nesting", "traversal-name", "garbage-dataset"],
)
def test_bad_suites_are_exit_2_with_one_line(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "garbage.npz").write_bytes(b"PK\x03\x04 truncated")
    (tmp_path / "suite.yaml").write_text(text)
    proc = fleet(tmp_path, "run", "suite.yaml", "--plan")
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert re.search(message, line), line
    assert not (tmp_path / "home" / "debug.log").exists()
