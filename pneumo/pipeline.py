"""The one analysis path: decoded image -> scope checks -> 224 squash -> lungs -> classifier -> explanation.

The app (:func:`analyze_bytes`), the CLI (pneumo.predict), the robustness measurements (pneumo.training.robustness)
and the report all go through :func:`analyze_images` or :func:`classify_224`, so they cannot disagree. Bytes or
arrays in, one :class:`Result` out: no files written, no Streamlit, nothing logged about an image.

Shapes (defaults): pixels uint8 (H, W) -> x224 uint8 (224, 224) -> lung mask bool (224, 224) -> classifier input
uint8 (S, S, 1) -> P(pneumonia) and a signed CAM (h, w) -> the CAM pasted back over the 224 squash (224, 224).
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np

from pneumo import config
from pneumo.checks import lungs, scope
from pneumo.io.decode import ImageLoadError, LoadedImage, load_image
from pneumo.io.preprocess import preprocess
from pneumo.nets.lite import forward, forward_cam, load_network
from pneumo.nets.modelfile import Network

log = logging.getLogger(__name__)

K = TypeVar("K")
SQUASH = 224  # every model reads the 224 squash first: the data set's copies are 224x224
LABEL_OUT_OF_SCOPE = "OUT_OF_SCOPE"
LABEL_ERROR = "ERROR"
# How the app and the CLI decode a file for analysis (the same, so they agree): a JPEG is reduced in the DCT domain
# only while each side stays >= twice the 224 squash, so the area resize to 224 stays nearly exact.
ANALYSIS_DECODE = {"min_side": config.DECODE_MIN_FACTOR * SQUASH}


@dataclass(frozen=True)
class Models:
    """Everything the path runs: the classifier, the lung network (None for a 'full'-input classifier) and the gate
    (None: rules only). The lung network may be the gate itself (one encoder, a lung head: ``shared_lungs``)."""

    classifier: Network
    lungs: Network | None = None
    gate: Network | None = None

    @property
    def threshold(self) -> float:
        return self.classifier.threshold

    @property
    def shared_lungs(self) -> bool:
        """Whether the gate's lung head finds the lungs: the gate's pass gives the masks, no third network runs."""
        return self.lungs is not None and self.lungs is self.gate

    @property
    def metadata(self) -> dict[str, Any]:
        """The classifier's metadata (threshold, metrics, cam_scale, ...)."""
        return self.classifier.metadata

    @property
    def path(self) -> Path:
        return self.classifier.path


def load_models(
    classifier_path: str | Path = config.DEFAULT_MODEL_PATH,
    with_gate: bool = True,
    loader: Callable[[Path, str], Network] = load_network,
) -> Models:
    """Load the classifier and what it needs: the lung model its metadata names (from the same folder) and the gate.

    The default loader runs each network's TFLite copy (pneumo.nets.load_network: no TensorFlow, ~0.1 s and ~80 MB)
    and raises pneumo.nets.ModelFileError, naming the export command, when a copy is missing or stale. Training
    passes ``pneumo.training.networks.load_keras_network`` to run freshly trained Keras networks instead.
    """
    path = Path(classifier_path)
    clf = loader(path, "classifier")
    seg = None
    if clf.input_mode == "lungs":  # the lung network its metadata names: a U-Net, or the gate with its lung head
        seg = loader(path.parent / (clf.metadata.get("lung_model") or {}).get("file", config.LUNG_MODEL_PATH.name),
                     "lung model")  # fmt: skip
    gate_path = path.parent / config.SCOPE_MODEL_PATH.name
    if seg is not None and seg.path.resolve() == gate_path.resolve():  # the gate finds the lungs: load it once
        return Models(clf, seg, seg if with_gate else None)
    gate = loader(gate_path, "scope gate") if with_gate and gate_path.exists() else None
    return Models(clf, seg, gate)


def label_for(probability: float, threshold: float) -> str:
    """NORMAL or PNEUMONIA at the threshold (probability >= threshold -> PNEUMONIA)."""
    return config.CLASS_NAMES[1] if probability >= threshold else config.CLASS_NAMES[0]


def predict_proba(model: Any, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """P(pneumonia) float64 (B,) of a classifier (a Network's ``model``) for inputs (B, S, S, 1) or one (S, S, 1)."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if len(x) == 0:
        return np.zeros(0)
    return np.asarray(forward(model, x, batch_size)).reshape(-1).astype(np.float64)


def warm_up(models: Models) -> None:
    """Run the whole path once on a synthetic image, so that every compiled network is traced before the first real
    image arrives (the app calls this in the background at start-up: the first upload then waits for nothing)."""
    yy, xx = np.mgrid[0:SQUASH, 0:SQUASH]  # (224, 224)
    ramp = (64 + 96 * np.sin(xx / 19.0) * np.cos(yy / 23.0) + 64).astype(np.uint8)  # not uniform: the full path runs
    analyze_images(models, [LoadedImage(ramp)], force=True)


@dataclass(frozen=True)
class BatchOutput:
    """What the networks say about a batch of 224 squashes.

    prob: float64 (B,) P(pneumonia). cam224: float32 (B, 224, 224) signed CAM over the squash (> 0 supports
    PNEUMONIA, < 0 NORMAL, 0 where the classifier cannot see). masks: bool (B, 224, 224) lung masks or None.
    """

    prob: np.ndarray
    cam224: np.ndarray
    masks: np.ndarray | None


def classifier_inputs(
    models: Models, x224: np.ndarray, lung_prob: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 (B, 224, 224) -> classifier inputs uint8 (B, S, S, C) and the lung masks (B, 224, 224) or None.

    C = 1: the lung view; C = 2 (a classifier that pools over the lungs only): the lung view and the lung mask.
    lung_prob: P(lung) float (B, s, s) of these squashes when the gate's lung head gave it already (its pass on the
    corrected image); otherwise the lung network runs here.
    """
    size = models.classifier.image_size
    if models.classifier.input_mode != "lungs":
        x = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in x224])
        return x[..., None], None
    if models.lungs is None:
        raise ValueError("this classifier reads the lungs: load it with its lung model (pneumo.pipeline.load_models)")
    if lung_prob is None:
        masks, _ = lungs.segment(models.lungs, x224)  # (B, 224, 224) bool
    else:
        masks = lungs.masks_from(lungs.upsample(lung_prob, x224.shape[1:3]), lungs.lung_threshold(models.lungs))
    two = models.classifier.channels == 2  # the view and the lung mask the classifier pools over
    x = np.stack([lungs.lung_input(im, m, size, with_mask=two) for im, m in zip(x224, masks, strict=False)])
    return (x if two else x[..., None]), masks  # (B, S, S, C)


def classify_224(
    models: Models,
    x224: np.ndarray,
    batch_size: int = config.PIPELINE_BATCH,
    lung_prob: np.ndarray | None = None,
) -> BatchOutput:
    """Run lungs, classifier and CAM on squashes uint8 (B, 224, 224): one forward pass per model and batch.
    lung_prob: P(lung) float (B, s, s) from the gate's lung head, when it ran (see :func:`classifier_inputs`)."""
    x224 = np.asarray(x224, np.uint8).reshape(-1, SQUASH, SQUASH)
    probs, cams, all_masks = [], [], []
    for i in range(0, len(x224), batch_size):
        chunk = x224[i : i + batch_size]
        x, masks = classifier_inputs(models, chunk, None if lung_prob is None else lung_prob[i : i + batch_size])
        p, cam = forward_cam(models.classifier.model, x, models.classifier.gradcam_layer)  # (b,), (b, h, w)
        probs.append(p)
        if masks is None:
            cams.append(np.stack([cv2.resize(c, (SQUASH, SQUASH), interpolation=cv2.INTER_LINEAR) for c in cam]))
        else:
            inside = models.classifier.channels == 2  # pooled over the lungs: no evidence outside them
            cams.append(
                np.stack([lungs.paste_back(c, m, inside_only=inside) for c, m in zip(cam, masks, strict=False)])
            )
            all_masks.append(masks)
    if not probs:
        return BatchOutput(np.zeros(0), np.zeros((0, SQUASH, SQUASH), np.float32), None)
    return BatchOutput(
        np.concatenate(probs).astype(np.float64),
        np.concatenate(cams).astype(np.float32),
        np.concatenate(all_masks) if all_masks else None,
    )


@dataclass(frozen=True)
class Result:
    """The answer for one image, the one result type of the app, the CLI and the report; arrays are read-only.

    label: NORMAL / PNEUMONIA at the model's threshold, OUT_OF_SCOPE, or ERROR (``error`` says why).
    probability: P(pneumonia); None when out of scope and not forced, or unreadable. warnings: stable codes
    (pneumo.checks.scope.WARNING_CODES); scope_text: why the image is out of scope, in plain words.
    pixels: uint8 (H, W) upright (as analysed). x224: the squash the models read. lung_mask: bool (224, 224) or None.
    cam224: float32 (224, 224) signed CAM over the squash (> 0 supports PNEUMONIA, < 0 NORMAL, 0 outside the lungs).
    name, digest, facts: the file's name (display only), SHA-256 and display-safe facts, for :func:`analyze_bytes`.
    """

    label: str
    probability: float | None
    warnings: tuple[str, ...] = ()
    in_scope: bool = True
    scope_text: str = ""
    pixels: np.ndarray | None = None
    x224: np.ndarray | None = None
    lung_mask: np.ndarray | None = None
    cam224: np.ndarray | None = None
    facts: dict[str, str] = field(default_factory=dict)
    name: str = ""
    digest: str = ""
    error: str = ""

    @property
    def has_probability(self) -> bool:
        return self.probability is not None

    @property
    def warning_texts(self) -> tuple[str, ...]:
        """The warnings in plain words, one sentence per code."""
        return tuple(scope.WARNING_CODES.get(c, c) for c in self.warnings)


def _readonly(a: np.ndarray | None) -> np.ndarray | None:
    if a is not None:
        a = np.ascontiguousarray(a)
        a.setflags(write=False)
    return a


def analyze_images(models: Models, images: list[LoadedImage], force: bool = False) -> list[Result]:
    """The whole path for decoded images, batched: scope checks, orientation fix, lungs, classifier, CAM.

    An image outside the intended use gets label OUT_OF_SCOPE and no probability, unless ``force``: then it gets
    its probability and NORMAL/PNEUMONIA label, and keeps its warnings.
    """
    if not images:
        return []
    squashed = np.stack([preprocess(im.pixels, SQUASH)[..., 0] for im in images])  # (B, 224, 224) as given
    checks = scope.assess_batch(images, models.gate, squashed)  # one gate pass for the batch
    x224 = np.stack([q if c.corrected is im.pixels else preprocess(c.corrected, SQUASH)[..., 0]
                     for q, c, im in zip(squashed, checks, images, strict=True)])  # fmt: skip  # (B, 224, 224) upright
    shared = models.shared_lungs and all(c.lung_probability is not None for c in checks)
    lung_prob = np.stack([c.lung_probability for c in checks]) if shared else None  # (B, s, s): the gate found them
    out = classify_224(models, x224, lung_prob=lung_prob)  # every readable image runs: --force / "show anyway"
    results: list[Result] = []
    for i, c in enumerate(checks):
        base = dict(warnings=tuple(c.codes), in_scope=c.in_scope, scope_text=c.explanation,
                    pixels=_readonly(c.corrected), x224=_readonly(x224[i]))  # fmt: skip
        p = float(out.prob[i])
        mask = None if out.masks is None else _readonly(out.masks[i])
        facts = lungs.mask_facts(mask) if mask is not None and c.in_scope else None  # one labelling for both checks
        if facts is not None and not lungs.plausible(mask, facts):
            base["warnings"] = (*base["warnings"], "lungs_not_found")
        elif facts is not None and facts["height_ratio"] < config.LUNG_HEIGHT_RATIO_MIN:
            base["warnings"] = (*base["warnings"], "lung_field_short")
        label = label_for(p, models.threshold) if (c.in_scope or force) else LABEL_OUT_OF_SCOPE
        results.append(
            Result(
                label=label,
                probability=p if (c.in_scope or force) else None,
                lung_mask=mask,
                cam224=_readonly(out.cam224[i]),
                **base,
            )
        )
    return results


def analyze_stream(
    models: Models,
    stream: Iterable[tuple[K, LoadedImage | Exception]],
    batch_size: int = 32,
    workers: int = config.ANALYSIS_WORKERS,
    force: bool = False,
) -> Iterator[tuple[K, Result | Exception]]:
    """:func:`analyze_images` over a stream of decoded images (``pneumo.io.load_many``), in batches of
    min(``batch_size``, ``config.PIPELINE_BATCH``), ``workers`` batches at a time: the networks and OpenCV release
    the GIL, so batches run on separate cores.

    Yields (key, Result) in input order; a decode error passes through as (key, the error).
    """
    batch_size = max(1, min(batch_size, config.PIPELINE_BATCH))
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="pneumo-analyse")
    pending: deque = deque()  # (items [(key, image or error)], future of the images' results)

    def submit(items: list) -> None:
        images = [img for _, img in items if not isinstance(img, Exception)]
        pending.append((items, pool.submit(analyze_images, models, images, force) if images else None))

    def finish() -> Iterator[tuple[K, Result | Exception]]:
        items, fut = pending.popleft()
        results = iter(fut.result() if fut is not None else [])
        for key, img in items:
            yield key, img if isinstance(img, Exception) else next(results)

    try:
        items: list = []
        n_images = 0
        for key, img in stream:
            items.append((key, img))
            n_images += not isinstance(img, Exception)
            if n_images == batch_size:
                submit(items)
                items, n_images = [], 0
                while len(pending) > max(1, workers):
                    yield from finish()
        if items:
            submit(items)
        while pending:
            yield from finish()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(stream, "close", None)
        if close is not None:  # a generator (load_many): stop its decoding pool now, not at garbage collection
            close()


def safe_facts(info: dict[str, Any]) -> dict[str, str]:
    """Display facts from a LoadedImage.info: format and size, plus modality, view position (standard codes or
    "other", see pneumo.io.decode) and, for a multi-frame file, the frame analysed, for DICOM only."""
    facts = {"Format": str(info.get("format", "unknown"))}
    size = info.get("original_size")
    if size:
        facts["Size"] = f"{int(size[0])} × {int(size[1])} pixels"
    if info.get("format") == "DICOM":
        facts["Modality"] = str(info.get("modality", "unknown"))
        facts["View position"] = str(info.get("view_position", "unknown"))
        if int(info.get("frames", 1)) > 1:
            facts["Frame"] = f"1 of {int(info['frames'])}"
    return facts


def analyze_bytes(data: bytes, name: str, models: Models) -> Result:
    """The app's entry: decode one file as the CLI does (:data:`ANALYSIS_DECODE`) and run the path on it once.

    The probability is computed even out of scope (forced), because the app shows it on request; the label is then
    OUT_OF_SCOPE. An unreadable file gives label ERROR with ``error`` set; never raises ImageLoadError.
    """
    digest = hashlib.sha256(data).hexdigest()  # the cache key of the analysis: same bytes, same result
    try:
        img = load_image(data, name=name, **ANALYSIS_DECODE)
    except ImageLoadError as exc:
        return Result(LABEL_ERROR, None, in_scope=False, name=name, digest=digest, error=str(exc))
    res = analyze_images(models, [img], force=True)[0]
    label = res.label if res.in_scope else LABEL_OUT_OF_SCOPE
    return replace(res, label=label, facts=safe_facts(img.info), name=name, digest=digest)
