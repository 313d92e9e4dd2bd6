"""Smart Turn v3.2: an audio end-of-turn model (BSD-2-Clause, 8.7 MB ONNX, by Daily).

It hears intonation and rhythm, which a transcript cannot show: a falling "Yes." is finished,
a "so..." trailing off is not. The ONNX file ships inside the `pipecat-ai` wheel (installed
with `--no-deps`; extra `turn-model`); we only read the file, we never import pipecat.

Input: the last 8 s of the turn at 16 kHz, left-padded with zeros, normalised to zero mean and
unit variance, as Whisper log-mel features (80 x 800); output: the probability that the turn
is complete. faster-whisper's feature extractor makes the same features.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np

from .audio import PIPELINE_RATE
from .worker import PRIORITY_URGENT, ModelWorker

MODEL_FILE = "smart-turn-v3.2-cpu.onnx"
WINDOW_S = 8
_VARIANCE_EPS = 1e-7


def smart_turn_model_path() -> Path:
    """The ONNX file inside the installed pipecat-ai package (found, not imported)."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the Smart Turn model is not installed: pip install --no-deps pipecat-ai==1.14.0"
        )
    path = Path(spec.submodule_search_locations[0]) / "audio/turn/smart_turn/data" / MODEL_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: pip install --no-deps pipecat-ai==1.14.0")
    return path


def smart_turn_available() -> bool:
    try:
        smart_turn_model_path()
    except RuntimeError:
        return False
    return True


class SmartTurnModel:
    """One ONNX session shared by every call, on its own worker thread (1 compute thread:
    a check costs 30-100 ms and must not take both cores from Whisper)."""

    name = "smart-turn-v3.2"

    def __init__(self, path: Path | None = None, *, threads: int = 1,
                 worker: ModelWorker | None = None) -> None:
        import onnxruntime
        from faster_whisper.feature_extractor import FeatureExtractor

        started = time.perf_counter()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = onnxruntime.InferenceSession(
            str(path or smart_turn_model_path()), sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self._features = FeatureExtractor(feature_size=80, chunk_length=WINDOW_S)
        self.load_s = time.perf_counter() - started
        self._worker = worker or ModelWorker("turn-smart-turn")

    def features(self, pcm: np.ndarray) -> np.ndarray:
        """(1, 80, 800) float32 log-mel features of the last 8 s of 16 kHz int16 `pcm`."""
        n = WINDOW_S * PIPELINE_RATE
        audio = pcm[-n:].astype(np.float32) / 32768.0
        if audio.size < n:
            audio = np.pad(audio, (n - audio.size, 0))
        audio = (audio - audio.mean()) / np.sqrt(audio.var() + _VARIANCE_EPS)
        mel = self._features(audio, padding=0)
        return np.ascontiguousarray(mel[None, :, : WINDOW_S * 100], dtype=np.float32)

    def predict_sync(self, pcm: np.ndarray) -> float:
        """Probability (0..1) that the turn in `pcm` (16 kHz mono int16) is complete."""
        out = self._session.run(None, {"input_features": self.features(pcm)})
        return float(np.asarray(out[0]).reshape(-1)[0])

    async def predict(self, pcm: np.ndarray) -> float:
        return await self._worker.submit(self.predict_sync, pcm, priority=PRIORITY_URGENT)

    def warm_up(self) -> None:
        noise = np.random.default_rng(0).normal(0, 300, PIPELINE_RATE).astype(np.int16)
        self.predict_sync(noise)

    def close(self) -> None:
        self._worker.close()
