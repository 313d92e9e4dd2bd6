"""Viola-Jones face detection with OpenCV's Haar cascade files, evaluated in numpy.

OpenCV 5 (what `rapidocr-onnxruntime` installs as `opencv-python`) dropped
`cv2.CascadeClassifier`, and no registry package ships a face-detection network we can load
offline. The trained cascades themselves are data (Debian `opencv-data`, Intel licence), and
evaluating them is simple: integral images, and per stage a sum of decision stumps over
Haar-like rectangle features, normalised by the window's standard deviation, exactly as
OpenCV's `HaarEvaluator` does. Windows are evaluated together, stage by stage, and only the
survivors go on, so a 480-pixel frame costs tens of milliseconds.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import numpy as np

Box = tuple[int, int, int, int]  # x, y, width, height


@dataclass(frozen=True)
class _Stage:
    threshold: float
    rects: np.ndarray  # (K, 3, 4) int: x, y, w, h of each stump's (up to 3) rectangles
    weights: np.ndarray  # (K, 3) float
    node_thresholds: np.ndarray  # (K,)
    leaves: np.ndarray  # (K, 2): value below / above the threshold


class HaarCascade:
    def __init__(self, path: str) -> None:
        root = ET.parse(path).getroot()
        cascade = root.find("cascade")
        if cascade is None or (cascade.findtext("featureType") or "").strip() != "HAAR":
            raise ValueError(f"{path}: not a new-format Haar cascade")
        self.width = int(cascade.findtext("width") or 24)
        self.height = int(cascade.findtext("height") or 24)
        features = []
        for feature in cascade.find("features") or []:
            if (feature.findtext("tilted") or "0").strip() == "1":
                raise ValueError(f"{path}: tilted features are not supported")
            parts = feature.find("rects")
            features.append([[float(v) for v in (r.text or "").split()] for r in parts or []])
        self.stages: list[_Stage] = []
        for stage in cascade.find("stages") or []:
            idx, thr, leaves = [], [], []
            for weak in stage.find("weakClassifiers") or []:
                nodes = (weak.findtext("internalNodes") or "").split()
                if len(nodes) != 4:
                    raise ValueError(f"{path}: only stump classifiers are supported")
                idx.append(int(nodes[2]))
                thr.append(float(nodes[3]))
                leaves.append([float(v) for v in (weak.findtext("leafValues") or "").split()])
            rects = np.zeros((len(idx), 3, 4), np.int64)
            weights = np.zeros((len(idx), 3), np.float64)
            for k, f in enumerate(idx):
                for j, (x, y, w, h, wt) in enumerate(features[f][:3]):
                    rects[k, j] = (int(x), int(y), int(w), int(h))
                    weights[k, j] = wt
            self.stages.append(_Stage(float(stage.findtext("stageThreshold") or 0), rects,
                                      weights, np.array(thr), np.array(leaves)))
        self._offset_cache: dict[int, list[tuple[np.ndarray, ...]]] = {}

    def detect(self, grey: np.ndarray, *, scale_factor: float = 1.2, min_size: int = 30,
               min_neighbors: int = 3) -> list[Box]:
        """Faces in a uint8 greyscale image, as boxes in its coordinates."""
        import cv2

        h, w = grey.shape
        hits: list[Box] = []
        scale = max(1.0, min_size / self.width)
        while w / scale >= self.width and h / scale >= self.height:
            sw, sh = int(w / scale), int(h / scale)
            small = cv2.resize(grey, (sw, sh), interpolation=cv2.INTER_LINEAR)
            step = 1 if scale > 2 else 2
            for x, y in self._windows(small, step):
                hits.append((int(x * scale), int(y * scale), int(self.width * scale),
                             int(self.height * scale)))
            scale *= scale_factor
        return _group(hits, min_neighbors)

    def _offsets(self, stride: int) -> list[tuple[np.ndarray, ...]]:
        cached = self._offset_cache.get(stride)
        if cached is None:
            cached = [_corners(st.rects[..., 0], st.rects[..., 1], st.rects[..., 2],
                               st.rects[..., 3], stride) for st in self.stages]
            self._offset_cache[stride] = cached
        return cached

    def _windows(self, img: np.ndarray, step: int) -> list[tuple[int, int]]:
        h, w = img.shape
        stride = w + 1
        f = img.astype(np.float64)
        ii = np.zeros((h + 1, w + 1))
        ii[1:, 1:] = f.cumsum(0).cumsum(1)
        sq = np.zeros((h + 1, w + 1))
        sq[1:, 1:] = (f * f).cumsum(0).cumsum(1)
        flat, flat_sq = ii.ravel(), sq.ravel()
        ys, xs = np.mgrid[0 : h - self.height + 1 : step, 0 : w - self.width + 1 : step]
        pos = (ys * stride + xs).ravel()

        area = (self.width - 2) * (self.height - 2)
        a, b, c, d = _corners(1, 1, self.width - 2, self.height - 2, stride)
        s = flat[pos + d] - flat[pos + c] - flat[pos + b] + flat[pos + a]
        s2 = flat_sq[pos + d] - flat_sq[pos + c] - flat_sq[pos + b] + flat_sq[pos + a]
        nf = area * s2 - s * s
        nf = np.where(nf > 0, np.sqrt(np.maximum(nf, 0)), 1.0)
        for stage, (sa, sb, sc, sd) in zip(self.stages, self._offsets(stride), strict=True):
            if pos.size == 0:
                break
            base = pos[:, None, None]  # (N, 1, 1) against (K, 3) rectangle corners
            sums = flat[base + sd] - flat[base + sc] - flat[base + sb] + flat[base + sa]
            value = np.einsum("nkj,kj->nk", sums, stage.weights)
            below = value < stage.node_thresholds[None] * nf[:, None]
            total = np.where(below, stage.leaves[None, :, 0], stage.leaves[None, :, 1]).sum(1)
            keep = total >= stage.threshold - 1e-5
            pos, nf = pos[keep], nf[keep]
        return [(int(p % stride), int(p // stride)) for p in pos]


def _corners(x: Any, y: Any, w: Any, h: Any, stride: int) -> tuple[np.ndarray, ...]:
    """Flat offsets of a rectangle's four corners in an integral image with this stride."""
    top_left = np.asarray(y * stride + x)
    return (top_left, top_left + w, top_left + h * stride, top_left + h * stride + w)


def _group(hits: list[Box], min_neighbors: int, eps: float = 0.2) -> list[Box]:
    """OpenCV's groupRectangles, simplified: cluster similar boxes, keep the well-supported
    clusters (their average box), drop clusters inside a bigger one."""
    clusters: list[list[Box]] = []
    for box in hits:
        for cluster in clusters:
            if _similar(cluster[0], box, eps):
                cluster.append(box)
                break
        else:
            clusters.append([box])
    boxes = []
    for cluster in clusters:
        if len(cluster) >= min_neighbors:
            arr = np.array(cluster, np.float64).mean(axis=0)
            boxes.append((len(cluster), tuple(int(v) for v in arr)))
    out: list[Box] = []
    for _, b in sorted(boxes, key=lambda nb: -nb[1][2]):
        if not any(_inside(b, o) for o in out):
            out.append(b)  # type: ignore[arg-type]
    return out


def _similar(a: Box, b: Box, eps: float) -> bool:
    delta = eps * (min(a[2], b[2]) + min(a[3], b[3])) * 0.5
    return (abs(a[0] - b[0]) <= delta and abs(a[1] - b[1]) <= delta
            and abs(a[0] + a[2] - b[0] - b[2]) <= delta
            and abs(a[1] + a[3] - b[1] - b[3]) <= delta)


def _inside(a: tuple[int, ...], b: Box) -> bool:
    return (a[0] >= b[0] - a[2] * 0.2 and a[1] >= b[1] - a[3] * 0.2
            and a[0] + a[2] <= b[0] + b[2] * 1.2 and a[1] + a[3] <= b[1] + b[3] * 1.2)
