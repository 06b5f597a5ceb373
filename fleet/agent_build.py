"""Build the device agent into a zipapp named by its content hash."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import fleet_agent
from fleet import paths

_MAIN = b"import sys\nfrom fleet_agent.__main__ import main\nsys.exit(main())\n"
# A fixed timestamp makes the archive, and so its name, depend on content only.
_EPOCH = (2020, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class AgentApp:
    path: Path
    sha256: str

    @property
    def name(self) -> str:
        return f"agent-{self.sha256[:12]}.pyz"


def build_agent(cache: Path | None = None) -> AgentApp:
    """Zip the fleet_agent package (sources only) into cache/agent-<sha12>.pyz."""
    source = Path(fleet_agent.__file__).parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("__main__.py", _EPOCH), _MAIN)
        for file in sorted(source.rglob("*.py")):
            name = f"fleet_agent/{file.relative_to(source).as_posix()}"
            archive.writestr(zipfile.ZipInfo(name, _EPOCH), file.read_bytes())
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    folder = cache or paths.cache_dir() / "agents"
    folder.mkdir(parents=True, exist_ok=True)
    app = AgentApp(folder / f"agent-{sha[:12]}.pyz", sha)
    if not app.path.exists():
        # A name of its own per writer: two runs may build the same agent at once.
        tmp = app.path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(app.path)
    return app
