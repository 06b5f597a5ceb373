"""Writing .npz files that a rebuild reproduces byte for byte (zoo/build.py and
zoo/pretrained_build.py, each run as a script from this folder)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """np.savez stamps the current time into the zip; a fixed stamp keeps the bytes stable."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())
