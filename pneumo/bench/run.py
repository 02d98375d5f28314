"""Benchmark the pneumo model side by side with the models users would pick instead, on this machine.

Examples:
    python -m pneumo.bench                       # full mode: readable table (about 2-3 minutes on 2 cores)
    python -m pneumo.bench --quick --json        # a few repetitions, one JSON object (CI)
    python -m pneumo.bench --training            # also time one training epoch and extrapolate a full training
    python -m pneumo.bench --model other.keras   # any pneumo model with its .json metadata
    python -m pneumo.bench --agreement DATA/fullres_samples DATA/chest_xray   # |dp| of decoding
    python -m pneumo.bench --browser DATA/fullres_samples/*/*.jpeg           # the app in Chromium: cold start, upload

Timed items (after warm-up; median and p95 over the repetitions), input a full-resolution JPEG (1500x1200, ~0.3 MB,
made from the largest committed sample, or synthetic on a clone without assets):
    decode_ms           the CLI's decode: load_image(min_side=2 x input) + preprocess (JPEG DCT-domain reduction)
    predict_ms          P(pneumonia) of one preprocessed image (batch 1) with pneumo.pipeline.predict_proba
    explain_ms          the app's per-image work from the pixels it decodes (pneumo.pipeline.ANALYSIS_DECODE, long
                        side <= DISPLAY_MAX_SIDE; 750x600 for the 1500x1200 JPEG):
                        preprocess, probability + heatmap map (CAM: one forward pass where the head allows it, else
                        Grad-CAM), heatmap, overlay at display size
    batch_images_per_s  the prediction CLI path for 32 JPEGs: decode (thread pool, reduced JPEG decoding),
                        pneumo.pipeline.analyze_stream (batches of 8, config.ANALYSIS_WORKERS at once), labels
                        (quick mode uses 8 JPEGs)
    stages              pneumo's per-image path stage by stage: decode for display, decode for the model, scope
                        gate, lung segmentation, preprocess, classifier, explanation, overlay; the scope gate and
                        segmentation models are timed when their files exist (config.SCOPE_MODEL_PATH,
                        config.LUNG_MODEL_PATH), else marked "not present"; app_path_ms times them all in a row
pneumo runs as the app and the CLI do: on the TFLite copies of its networks (pneumo.nets.lite), checked against the
.keras files; its "engine" field says so. Its MACs are counted on the .keras files.
References (random weights, built here, nothing downloaded), timed the same way in the same process (explain_ms with
the same display pixels and overlay code); their batch_images_per_s uses the seed notebook's decoding (every file
decoded in full, one after the other), and batch_images_per_s_pneumo_pipeline the new one:
    densenet121_224     keras.applications.DenseNet121 (CheXNet / torchxrayvision architecture), 224x224, gray
                        repeated to 3 channels, ImageNet normalisation inside the model, GAP + one logit; Grad-CAM on
                        layer 'relu' (the final BN-ReLU after the last dense block, 7x7x1024)
    seed_ensemble_64    five copies of the original notebook's CNN at 64x64, fused into one graph (favourable to
                        the reference: one call instead of five); Grad-CAM on each member's last convolution (8x8x128),
                        averaged; P(pneumonia) = mean of the five softmax outputs
predict_ms, explain_ms and the batches are timed interleaved (one repetition of each model in turn), so that a
changing load on a shared machine affects all sides alike.
Ratios are pneumo / reference, so < 1 means pneumo is faster for *_ms and slower for batch_images_per_s.
peak_rss_mb is measured in a fresh subprocess per model (import, load every model present, one explain, one batch of
32); quick mode measures it for pneumo only. pneumo loads there as the app does (pipeline.load_models:
its TFLite copies alone, no TensorFlow). import_s is the import of what the app's analysis needs
(pneumo: `pneumo.pipeline, pneumo.explain`; references: `pneumo.training.networks`, i.e. Keras) in a fresh
process; cold_start_s is that import + model load + decoding and explaining one JPEG (time to the first result).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumo import __version__

log = logging.getLogger("pneumo.bench")

REFERENCES = ("densenet121_224", "seed_ensemble_64")
TIMED_ITEMS = ("predict_ms", "explain_ms", "batch_images_per_s")
# the per-image stages of pneumo's path, in order; extra models are looked up in config when the benchmark runs
STAGES = (
    "decode_display_ms",
    "decode_model_ms",
    "scope_ms",
    "segmentation_ms",
    "preprocess_ms",
    "classifier_ms",
    "explanation_ms",
    "overlay_ms",
)


@dataclass(frozen=True)
class Plan:
    """Repetition counts and sizes of one benchmark mode."""

    warmup: int  # untimed calls before timing (tf.function tracing, allocator and cache warm-up)
    reps: int  # timed repetitions of each single-image item
    batch_reps: int  # timed batches of `batch_size` JPEGs through the CLI path
    batch_warmup: int  # untimed batches first (the forward pass is already traced by the predict_ms warm-up)
    import_reps: int  # fresh processes timing the package import (median reported)
    train_images: int  # synthetic images of the --training epoch
    batch_size: int = 32  # the prediction CLI's default batch size
    fullres: tuple[int, int] = (1500, 1200)  # (width, height) of the decoded JPEG: the data set's originals are
    # ~1000-1850 px wide, ~0.3-0.6 MB
    train_split_images: int = 4432  # the public train split after the 15% patient validation split (5216 - 784),
    val_split_images: int = 784  # used when a model's metadata does not record its own split


PLANS = {
    "full": Plan(warmup=5, reps=40, batch_reps=5, batch_warmup=1, import_reps=3, train_images=512),
    "quick": Plan(warmup=1, reps=3, batch_reps=1, batch_warmup=0, import_reps=1, train_images=64, batch_size=8),
}


# ----------------------------------------------------------------------------------------------------------------
# measuring
def stats_ms(times_ms: list[float]) -> dict[str, float]:
    """Median, p95, min and count of a list of durations in milliseconds."""
    t = np.asarray(times_ms, dtype=np.float64)
    return {
        "median": round(float(np.median(t)), 3),
        "p95": round(float(np.percentile(t, 95)), 3),
        "min": round(float(t.min()), 3),
        "n": len(t),
    }


def time_ms(fn: Callable[[], Any], reps: int, warmup: int) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times untimed, then ``reps`` times timed; returns :func:`stats_ms`."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return stats_ms(times)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    On Linux this is VmHWM of /proc/self/status: ru_maxrss would also count the parent's RSS at the moment a
    subprocess was spawned (the high-water mark survives exec), inflating the probes' numbers.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB -> MiB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory and library versions: the numbers only mean something together with these."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": cores,
        "memory_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


# ----------------------------------------------------------------------------------------------------------------
# inputs
def fullres_jpeg(size: tuple[int, int], quality: int = 92) -> bytes:
    """A full-resolution JPEG (width, height) in memory: the largest committed sample, resized, else a synthetic one."""
    import cv2

    from pneumo import config

    samples = sorted((config.ASSETS_DIR / "samples").glob("*.jp*g"), key=lambda p: p.stat().st_size)
    img = cv2.imread(str(samples[-1]), cv2.IMREAD_GRAYSCALE) if samples else None
    if img is None:  # a fresh clone without assets: a chest-like synthetic image
        h, w = size[1], size[0]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        u, v = xx / w, yy / h
        img = 200 - 80 * np.exp(-(((u - 0.3) / 0.14) ** 2 + ((v - 0.5) / 0.3) ** 2))
        img -= 80 * np.exp(-(((u - 0.7) / 0.14) ** 2 + ((v - 0.5) / 0.3) ** 2))
        img += np.random.default_rng(0).normal(0, 6, img.shape)
        img = np.clip(img, 0, 255).astype(np.uint8)
    img = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)  # (H, W) uint8
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("could not encode the benchmark JPEG")
    return buf.tobytes()


# ----------------------------------------------------------------------------------------------------------------
# the models
@dataclass
class Candidate:
    """A model as the benchmark sees it: (B, S, S, 1) pixel values 0..255 in, P(pneumonia) (B, 1) out."""

    name: str
    model: Any  # what runs (pneumo: its TFLite copy; references: a keras.Model with a runner attached)
    cam: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # (B, S, S, 1) -> probs (B,), signed cams (B, h, w)
    size: int
    threshold: float
    gradcam_layer: str
    description: str
    file_mb: float | None = None  # None: measured by saving the model to a temporary file
    cam_scale: float | None = None  # absolute heatmap scale (metadata cam_scale); None: per-image maximum
    models: Any = None  # pneumo only: the whole analysis path (pneumo.pipeline.Models: gate, lungs, classifier)
    params: int | None = None  # parameters of the model file (pneumo runs a copy with batch norm folded in)
    engine: str = "TensorFlow"  # what runs the networks (pneumo: its TFLite copies, see pneumo.nets.lite)


def make_gradcam(cam_model, size: int) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Generic Grad-CAM for models whose ``cam_model`` outputs ([feature maps], [class log-odds scores]).

    Each member's score (B, 1) is the log-odds of PNEUMONIA; its gradient weights that member's feature map (like
    pneumo.gradcam). Returns a function (B, S, S, 1) -> (mean member P(pneumonia) (B,), mean signed cam (B, h, w)).
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec((None, size, size, 1), tf.float32)], reduce_retracing=True)
    def cam(x):
        with tf.GradientTape() as tape:
            fmaps, scores = cam_model(x, training=False)  # [(B, h, w, K)], [(B, 1)]
            target = tf.add_n([tf.reduce_sum(s) for s in scores])  # members and images are independent
        grads = tape.gradient(target, fmaps)  # [(B, h, w, K)]
        signed = [
            tf.reduce_sum(tf.reduce_mean(g, axis=(1, 2), keepdims=True) * f, axis=-1)
            for g, f in zip(grads, fmaps, strict=True)
        ]  # [(B, h, w)]
        prob = tf.add_n([tf.sigmoid(s[:, 0]) for s in scores]) / len(scores)  # (B,)
        return prob, tf.add_n(signed) / len(signed)

    def run(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prob, signed = cam(tf.constant(np.asarray(x, dtype=np.float32)))
        return prob.numpy().astype(np.float64), signed.numpy().astype(np.float32)

    return run


_MAC_LAYERS = ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose", "Dense")


def count_macs(model) -> int:
    """Multiply-accumulates of one forward pass for one image: a cost that does not depend on the machine.

    Counts convolutions (plain, separable, depthwise, transposed) and dense layers, also inside nested models
    (ensemble members); normalisation, activations and pooling are left out (a few % of the total).
    """
    import keras

    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if isinstance(layer, keras.Model):
            total += count_macs(layer)
        elif kind in _MAC_LAYERS:
            out = layer.output.shape  # (None, h, w, C) or (None, C)
            hw = int(np.prod(out[1:-1])) if len(out) > 2 else 1  # output positions
            if kind == "SeparableConv2D":
                kh, kw, cin, mult = layer.depthwise_kernel.shape
                total += hw * (kh * kw * cin * mult + cin * mult * int(layer.pointwise_kernel.shape[-1]))
            elif kind == "Conv2DTranspose":  # kernel (kh, kw, out, in); each input pixel scatters the kernel
                kh, kw, cout, cin = layer.kernel.shape
                total += hw * kh * kw * cin * cout // (layer.strides[0] * layer.strides[1])
            else:  # Conv2D (kh, kw, in, out), DepthwiseConv2D (kh, kw, in, mult), Dense (in, out)
                total += hw * int(np.prod(layer.kernel.shape))
    return int(total)


def candidate_mmacs(cand: Candidate) -> dict[str, float]:
    """Millions of multiply-accumulates per image, per network of the candidate's path and in total."""
    if cand.models is None:
        nets = {"classifier": cand.model}
    else:  # pneumo runs TFLite copies: count on the .keras files they were made from
        from pneumo.training.networks import load_keras_with_metadata

        models = cand.models
        paths = {"classifier": models.classifier.path}
        if models.shared_lungs:  # one network is the gate and finds the lungs
            paths["scope_gate_and_lungs"] = models.gate.path
        else:
            paths |= {k: n.path for k, n in (("lungs", models.lungs), ("scope_gate", models.gate)) if n}
        nets = {name: load_keras_with_metadata(p)[0] for name, p in paths.items()}
    # a gate with the mirror head runs on each film and on its mirror image: two passes per image
    passes = {name: 2 if name.startswith("scope_gate") and "mirror" in getattr(m, "output", {}) else 1
              for name, m in nets.items()}  # fmt: skip
    out = {name: round(count_macs(m) * passes[name] / 1e6, 3) for name, m in nets.items() if m is not None}
    out["total"] = round(sum(out.values()), 3)
    return out


def _file_mb(model) -> float:
    """Size of the model saved as .keras (in a temporary folder, deleted at once)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "m.keras"
        model.save(path)
        return round(path.stat().st_size / 2**20, 2)


def build_densenet121(size: int = 224) -> Candidate:
    """DenseNet-121 with random weights at 224x224: the CheXNet / torchxrayvision architecture."""
    import keras
    from keras import layers

    from pneumo.training.networks import keras_network

    inp = keras.Input((size, size, 1), name="image")  # (B, S, S, 1), 0..255
    x = layers.Concatenate(name="gray_to_rgb")([inp, inp, inp])  # (B, S, S, 3)
    x = layers.Rescaling(1.0 / 255.0)(x)
    x = layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.229**2, 0.224**2, 0.225**2])(x)  # ImageNet
    base = keras.applications.DenseNet121(include_top=False, weights=None, input_tensor=x)
    fmap = base.get_layer("relu").output  # (B, 7, 7, 1024): last dense block after its final BN + ReLU
    logit = layers.Dense(1, name="logit")(layers.GlobalAveragePooling2D(name="gap")(fmap))  # (B, 1)
    prob = layers.Activation("sigmoid", name="probability")(logit)
    model = keras.Model(inp, prob, name="densenet121_224")
    keras_network(model, {})  # run by pneumo.pipeline.predict_proba on TensorFlow
    cam_model = keras.Model(inp, [[fmap], [logit]])
    return Candidate(
        name="densenet121_224",
        model=model,
        cam=make_gradcam(cam_model, size),
        size=size,
        threshold=0.5,
        gradcam_layer="relu (7x7x1024, after the last dense block)",
        description="keras.applications.DenseNet121(weights=None) + GAP + 1 logit, gray repeated to RGB",
    )


def build_seed_ensemble(size: int = 64, members: int = 5) -> Candidate:
    """Five copies of the original notebook's CNN (random weights), fused into one model."""
    import keras
    from keras import layers

    from pneumo.training.baseline import notebook_cnn
    from pneumo.training.networks import keras_network

    inp = keras.Input((size, size, 1), name="image")  # (B, 64, 64, 1), 0..255
    x0 = layers.Rescaling(1.0 / 255.0)(inp)
    fmaps, scores, probs = [], [], []
    for m in range(members):
        f, logits = notebook_cnn(x0, prefix=f"m{m}_")  # (B, 8, 8, 128), (B, 2): NORMAL, PNEUMONIA
        soft = layers.Softmax()(logits)
        fmaps.append(f)
        # log-odds of PNEUMONIA: sigmoid(l1 - l0) == softmax(l)[1]
        scores.append(layers.Lambda(lambda t: t[:, 1:2] - t[:, 0:1])(logits))  # (B, 1)
        probs.append(layers.Lambda(lambda t: t[:, 1:2])(soft))  # (B, 1)
    prob = layers.Average(name="probability")(probs)  # (B, 1)
    model = keras.Model(inp, prob, name="seed_ensemble_64")
    keras_network(model, {})  # run by pneumo.pipeline.predict_proba on TensorFlow
    cam_model = keras.Model(inp, [fmaps, scores])
    return Candidate(
        name="seed_ensemble_64",
        model=model,
        cam=make_gradcam(cam_model, size),
        size=size,
        threshold=0.5,
        gradcam_layer="each member's last conv (8x8x128), averaged",
        description="5 x notebook CNN (BN, conv32 3x3, pool, dropout, conv32 5x5, pool, conv64 5x5, pool, "
        "conv128 5x5, pool, dense 256, dense 2 softmax), one fused graph",
    )


def load_pneumo(model_path: Path) -> tuple[Candidate, Any, float]:
    """pneumo as a Candidate (its whole analysis path: gate, lungs, classifier, loaded as the app and the CLI load
    them: the TFLite copies), its classifier, and the load time."""
    from pneumo.explain.cam import class_scale
    from pneumo.nets.lite import forward_cam as explain
    from pneumo.pipeline import load_models

    t0 = time.perf_counter()
    models = load_models(model_path)
    load_s = time.perf_counter() - t0
    loaded = models.classifier
    cand = Candidate(
        name="pneumo",
        model=loaded.model,
        cam=lambda x: explain(loaded.model, x, loaded.gradcam_layer),
        size=loaded.image_size,
        threshold=loaded.threshold,
        gradcam_layer=loaded.gradcam_layer,
        description=f"{loaded.metadata.get('name', model_path.stem)} ({model_path.name}) with "
        + (
            "scope gate with its lung head (one network)"
            if models.shared_lungs
            else ", ".join(n for n, m in (("lung U-Net", models.lungs), ("scope gate", models.gate)) if m is not None)
        ),
        file_mb=round(sum(p.stat().st_size for p in model_files(models)) / 2**20, 2),
        engine=engine_words(models),
        cam_scale=class_scale(loaded.metadata, 1),
        models=models,
        params=loaded.metadata.get("parameters"),
    )
    return cand, loaded, load_s


def engine_words(models: Any) -> str:
    """Which runtime runs each network of the path (pneumo.nets.describe)."""
    from pneumo.nets.lite import describe

    return describe(models)


def model_files(models: Any) -> list[Path]:
    """The .keras files of the analysis path: classifier, lung model and gate when present."""
    from pneumo import config

    files = [models.classifier.path]
    if models.lungs is not None:
        files.append(models.lungs.path)
    if models.gate is not None and not models.shared_lungs:  # a shared gate is the lung file already
        files.append(models.classifier.path.parent / config.SCOPE_MODEL_PATH.name)
    return files


def build_reference(name: str) -> Candidate:
    """One of REFERENCES, with fresh random weights."""
    if name == "densenet121_224":
        return build_densenet121()
    if name == "seed_ensemble_64":
        return build_seed_ensemble()
    raise ValueError(f"unknown reference: {name}")


# ----------------------------------------------------------------------------------------------------------------
# the per-model work, exactly as the app and the CLI do it
def display_pixels(jpeg: bytes) -> np.ndarray:
    """The app's decode (pneumo.pipeline.analyze_bytes: the analysis decode, JPEG reduced while each side stays >= 448
    px) at the app's display size (long side at most DISPLAY_MAX_SIDE): uint8 (h, w), the pixels the app analyses
    and draws its overlay on."""
    from pneumo import config
    from pneumo.io.decode import load_image, shrink_to_side
    from pneumo.pipeline import ANALYSIS_DECODE

    pixels = load_image(jpeg, **ANALYSIS_DECODE).pixels
    return shrink_to_side(pixels, config.DISPLAY_MAX_SIDE)  # (h, w): 750x600 for a 1500x1200 JPEG


def explain_one(cand: Candidate, pixels: np.ndarray) -> np.ndarray:
    """The app's per-image path: display pixels uint8 (H, W) -> overlay uint8 (H, W, 3) of the predicted class.

    pneumo: the whole analysis path (scope gate, orientation, lungs, classifier with its CAM) and the overlay within
    the lungs with their outline, exactly as the app draws it. References: preprocess, model + Grad-CAM, overlay.
    """
    from pneumo.explain.cam import heatmap_from_cam
    from pneumo.explain.draw import overlay_heatmap
    from pneumo.io.preprocess import preprocess
    from pneumo.pipeline import label_for

    if cand.models is not None:
        from pneumo.explain.cam import shown_class
        from pneumo.explain.draw import result_overlay
        from pneumo.io.decode import LoadedImage
        from pneumo.pipeline import analyze_images

        res = analyze_images(cand.models, [LoadedImage(pixels)], force=True)[0]
        cls = shown_class(res, None, cand.threshold)
        return result_overlay(res, cand.models.metadata, cls, image=pixels)  # (H, W, 3)
    x = preprocess(pixels, cand.size)  # (S, S, 1) uint8
    probs, cams = cand.cam(x[None])  # (1,), (1, h, w)
    cls = 1 if label_for(float(probs[0]), cand.threshold) == "PNEUMONIA" else 0
    heat = heatmap_from_cam(cams[0], cls, cand.size, cand.cam_scale)  # (S, S) in [0, 1]
    return overlay_heatmap(pixels, heat)  # (H, W, 3)


def predict_files(cand: Candidate, blobs: list[bytes], batch_size: int, pipeline: str = "pneumo") -> list[str]:
    """The prediction CLI's path (without the model load): decode, preprocess, batch, label.

    pipeline 'pneumo': pneumo.io.load_many (thread pool) with min_side = DECODE_MIN_FACTOR x input (reduced JPEG
    decoding), as pneumo.predict does; 'seed': every file decoded in full, one after the other (the seed notebook).
    """
    from pneumo import config
    from pneumo.io.decode import load_image, load_many
    from pneumo.io.preprocess import preprocess
    from pneumo.pipeline import label_for, predict_proba

    labels: list[str] = []
    if pipeline == "pneumo" and cand.models is not None:  # pneumo.predict: decode stream, the whole analysis path
        from pneumo.pipeline import ANALYSIS_DECODE, analyze_stream

        stream = load_many(blobs, prefetch=batch_size, **ANALYSIS_DECODE)
        labels += [r.label for _, r in analyze_stream(cand.models, stream, batch_size)]
    elif pipeline == "pneumo":  # as the CLI: one decoding stream, the next batch decodes while the model runs
        stream = load_many(blobs, min_side=config.DECODE_MIN_FACTOR * cand.size, prefetch=batch_size)
        inputs: list[np.ndarray] = []
        for i, (_, img) in enumerate(stream, start=1):
            inputs.append(preprocess(img.pixels, cand.size))  # (S, S, 1)
            if len(inputs) == batch_size or i == len(blobs):
                probs = predict_proba(cand.model, np.stack(inputs), batch_size)
                labels += [label_for(float(p), cand.threshold) for p in probs]
                inputs = []
    elif pipeline == "seed":
        for start in range(0, len(blobs), batch_size):
            x = np.stack([preprocess(load_image(b).pixels, cand.size) for b in blobs[start : start + batch_size]])
            labels += [label_for(float(p), cand.threshold) for p in predict_proba(cand.model, x, batch_size)]
    else:
        raise ValueError(f"unknown pipeline: {pipeline}")
    return labels


def time_interleaved(fns: dict[str, Callable[[], Any]], reps: int, warmup: int) -> dict[str, dict[str, float]]:
    """Time several functions round-robin (rep 1 of each, then rep 2 of each, in a rotating order).

    On a shared machine the load changes from minute to minute; interleaving makes every function see the same load,
    so that the ratios between them hold even when the absolute times do not.
    """
    names = list(fns)
    for name in names:
        for _ in range(warmup):
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return {name: stats_ms(t) for name, t in times.items()}


def _classifier_input(x: np.ndarray, model: Any) -> np.ndarray:
    """(1, S, S, 1) -> the model's channels: a lung-pooled classifier (2 channels) gets a mask of all lung (same
    arithmetic as any real mask)."""
    if int(model.input_shape[-1]) == 2:
        return np.concatenate([x, np.full_like(x, 255)], axis=-1)  # (1, S, S, 2)
    return x


def measure_all(cands: list[Candidate], jpeg: bytes, plan: Plan) -> dict[str, dict[str, Any]]:
    """predict_ms, explain_ms, batch_ms and batch_images_per_s of every candidate, timed interleaved.

    The first candidate is pneumo; its CLI batch uses pneumo's decoding. The references' batch uses the seed
    notebook's decoding, and batch_images_per_s_pneumo_pipeline theirs through pneumo's (model vs pipeline).
    """
    from pneumo.io.preprocess import preprocess
    from pneumo.pipeline import predict_proba

    pixels = display_pixels(jpeg)  # (h, w) uint8, long side <= DISPLAY_MAX_SIDE
    blobs = [jpeg] * plan.batch_size
    xs = {c.name: _classifier_input(preprocess(pixels, c.size)[None], c.model) for c in cands}  # (1, S, S, C) each
    pipeline = {c.name: "pneumo" if i == 0 else "seed" for i, c in enumerate(cands)}
    log.info("timing %s, interleaved", ", ".join(c.name for c in cands))
    predict = time_interleaved(
        {c.name: (lambda c=c: predict_proba(c.model, xs[c.name])) for c in cands}, plan.reps, plan.warmup
    )
    explain = time_interleaved({c.name: (lambda c=c: explain_one(c, pixels)) for c in cands}, plan.reps, plan.warmup)
    batch_fns = {c.name: (lambda c=c: predict_files(c, blobs, plan.batch_size, pipeline[c.name])) for c in cands}
    batch_fns.update(
        {f"{c.name}+pneumo": (lambda c=c: predict_files(c, blobs, plan.batch_size, "pneumo")) for c in cands[1:]}
    )
    batch = time_interleaved(batch_fns, plan.batch_reps, plan.batch_warmup)

    def per_s(stats: dict[str, float]) -> float:
        return round(plan.batch_size / (stats["median"] / 1000.0), 2)

    out: dict[str, dict[str, Any]] = {}
    for c in cands:
        m: dict[str, Any] = {
            "predict_ms": predict[c.name],
            "explain_ms": explain[c.name],
            "batch_pipeline": pipeline[c.name],
            "batch_ms": batch[c.name],
            "batch_images_per_s": per_s(batch[c.name]),
        }
        if f"{c.name}+pneumo" in batch:
            m["batch_images_per_s_pneumo_pipeline"] = per_s(batch[f"{c.name}+pneumo"])
        m.update(
            model_params=int(c.params or c.model.count_params()),
            model_mmacs=candidate_mmacs(c),
            model_file_mb=c.file_mb if c.file_mb is not None else _file_mb(c.model),
            input_size=c.size,
            gradcam_layer=c.gradcam_layer,
            description=c.description,
            engine=c.engine,
        )
        out[c.name] = m
    return out


def measure_pipeline_stages(cand: Candidate, jpeg: bytes, plan: Plan) -> dict[str, Any]:
    """pneumo's per-image path stage by stage, with the real stage functions of pneumo.pipeline, plus the whole app
    path in a row (app_path_ms = decode for display + analyze_images + overlay)."""
    from pneumo import config
    from pneumo.checks import lungs, scope
    from pneumo.explain.cam import class_heat
    from pneumo.explain.draw import result_overlay
    from pneumo.io.decode import LoadedImage, load_image
    from pneumo.io.preprocess import preprocess
    from pneumo.nets.lite import forward_cam as explain
    from pneumo.pipeline import analyze_images, classifier_inputs, predict_proba

    models, reps, warm = cand.models, plan.reps, plan.warmup
    pixels = display_pixels(jpeg)  # (h, w) uint8
    img = LoadedImage(pixels)
    x224 = preprocess(pixels, 224)[..., 0][None]  # (1, 224, 224)
    x, _ = classifier_inputs(models, x224)  # (1, S, S, 1)
    res = analyze_images(models, [img], force=True)[0]
    out: dict[str, Any] = {
        "decode_display_ms": time_ms(lambda: display_pixels(jpeg), reps, warm),
        "decode_model_ms": time_ms(lambda: load_image(jpeg, min_side=config.DECODE_MIN_FACTOR * 224), reps, warm),
        "scope_ms": time_ms(lambda: scope.assess_batch([img], models.gate), reps, warm)
        if models.gate is not None
        else {"status": "not present", "path": str(models.path.parent / config.SCOPE_MODEL_PATH.name)},
        "preprocess_ms": time_ms(lambda: preprocess(pixels, 224), reps, warm),
    }
    if models.shared_lungs:  # the gate's pass found the lungs: what is left is the post-processing
        prob, t_lung = res_gate_map(models, img), lungs.lung_threshold(models.lungs)
        out["segmentation_ms"] = time_ms(lambda: lungs.masks_from(lungs.upsample(prob), t_lung), reps, warm)
        out["segmentation_note"] = "post-processing only: the scope gate's pass gives P(lung) (scope_ms includes it)"
        mask = res.lung_mask
        out["lung_input_ms"] = time_ms(lambda: lungs.lung_input(x224[0], mask, cand.size), reps, warm)
    elif models.lungs is not None:
        out["segmentation_ms"] = time_ms(lambda: lungs.segment(models.lungs, x224), reps, warm)
        mask = res.lung_mask
        out["lung_input_ms"] = time_ms(lambda: lungs.lung_input(x224[0], mask, cand.size), reps, warm)
    else:
        out["segmentation_ms"] = {"status": "not present", "path": "this classifier reads the whole image"}
    out["classifier_ms"] = time_ms(lambda: predict_proba(cand.model, x), reps, warm)
    out["explanation_ms"] = time_ms(lambda: explain(cand.model, x, cand.gradcam_layer), reps, warm)  # as the app
    out["heat_ms"] = time_ms(lambda: class_heat(res.cam224, 1, models.metadata), reps, warm)
    out["overlay_ms"] = time_ms(lambda: result_overlay(res, models.metadata, 1, image=pixels), reps, warm)
    out["app_path_ms"] = time_ms(lambda: explain_one(cand, display_pixels(jpeg)), reps, warm)
    out["app_path_stages"] = ["decode_display_ms", "analyze_images (scope, lungs, classifier + CAM)", "overlay_ms"]
    out["explanation_method"] = cam_method(cand)
    return out


def res_gate_map(models: Any, img: Any) -> np.ndarray:
    """P(lung) (1, s, s) that the gate's lung head gives for one decoded image (its pass on the corrected film)."""
    from pneumo.checks import scope

    return scope.assess_batch([img], models.gate)[0].lung_probability[None]


def measure_stages(cand: Candidate, jpeg: bytes, plan: Plan) -> dict[str, Any]:
    """Each stage of pneumo's per-image path timed on its own (see :func:`measure_pipeline_stages`)."""
    return measure_pipeline_stages(cand, jpeg, plan)


def cam_method(cand: Candidate) -> str:
    """'CAM (one forward pass)' or 'Grad-CAM (forward + backward)' for pneumo's model."""
    from pneumo.training.gradcam import cam_head
    from pneumo.training.networks import load_keras_with_metadata

    model = load_keras_with_metadata(cand.models.path)[0] if cand.models is not None else cand.model
    layer = cand.gradcam_layer.split(" ")[0]
    return "CAM (one forward pass)" if cam_head(model, layer) is not None else "Grad-CAM (forward + backward)"


# ----------------------------------------------------------------------------------------------------------------
# fresh-process measurements: import time and peak memory
# run by `python -c` in a fresh process: the import is timed before anything else is imported
_PROBE_CODE = """import sys, time
t0 = time.perf_counter()
if sys.argv[1] == "pneumo":  # what the app and the CLI import: no TensorFlow where the TFLite copies match
    import pneumo.pipeline, pneumo.explain
else:  # a reference runs on Keras
    import pneumo.training.networks, pneumo.training.gradcam
import_s = time.perf_counter() - t0
from pneumo.bench import run as bench
bench.probe(sys.argv[1], sys.argv[2], import_s, t0)
"""


def probe(name: str, model_path: str, import_s: float, t0: float | None = None) -> None:
    """In a fresh process: load (pneumo: every model present, as the app loads them), decode and explain one JPEG (the
    first result: cold start), one batch of 32; then print import time, cold start and peak RSS as JSON."""
    cand = load_pneumo(Path(model_path))[0] if name == "pneumo" else build_reference(name)
    plan = PLANS["full"]  # peak memory at the CLI's real batch size, in every mode
    jpeg = fullres_jpeg(plan.fullres)
    pixels = display_pixels(jpeg)
    explain_one(cand, pixels)
    cold_s = time.perf_counter() - t0 if t0 is not None else None
    predict_files(cand, [jpeg] * plan.batch_size, plan.batch_size, "pneumo" if name == "pneumo" else "seed")
    out = {"import_s": round(import_s, 3), "peak_rss_mb": peak_rss_mb()}
    if cold_s is not None:
        out["cold_start_s"] = round(cold_s, 3)
    sys.stdout.write(json.dumps(out) + "\n")  # read back by run_probe


def run_probe(name: str, model_path: Path) -> dict[str, float]:
    """:func:`probe` in a fresh Python process, so that nothing measured before counts."""
    from pneumo import config

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(config.ROOT_DIR), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-c", _PROBE_CODE, name, str(model_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"probe {name} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# training time
def bench_training(loaded, plan: Plan) -> dict[str, Any]:
    """Time one epoch of the real training step on synthetic images and extrapolate to the model's training run.

    The model, augmentation, optimiser, loss, metric, class weights and tf.data pipeline are those of pneumo.train,
    with the settings recorded in the model's metadata. Epoch 1 (which traces the step) and epoch 2 are timed;
    the validation pass that Keras runs after every epoch is timed separately and scaled to the validation size.
    """
    import dataclasses

    import keras
    import tensorflow as tf

    from pneumo.training.augment import image_augment
    from pneumo.training.networks import build_model
    from pneumo.training.train import Settings

    meta_training = loaded.metadata.get("training", {})
    s = Settings()
    known = {f.name for f in dataclasses.fields(Settings)}
    for k, v in meta_training.get("settings", {}).items():
        if k in known:
            setattr(s, k, tuple(v) if isinstance(v, list) else v)
    s.image_size = loaded.image_size
    data = meta_training.get("data", {})
    n_val = int(loaded.metadata.get("validation_split", {}).get("images", plan.val_split_images))
    n_train = int(data["train_images"]) - n_val if "train_images" in data else plan.train_split_images
    epochs_run = meta_training.get("epochs_run")

    n, size = plan.train_images, s.image_size
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, size, size, 1)).astype("float32")  # (N, S, S, 1) 0..255
    y = (rng.random(n) < 0.74).astype("float32")  # the train split's PNEUMONIA share
    counts = np.bincount(y.astype(int), minlength=2)
    class_weight = {c: float(n / (2.0 * max(counts[c], 1))) for c in (0, 1)}
    ds = (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(n, seed=s.seed, reshuffle_each_iteration=True)
        .batch(s.batch_size)
        .map(image_augment(s), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    keras.utils.set_random_seed(s.seed)
    model = build_model(s.image_size, s.stem_width, s.widths, s.dropout, s.weight_decay)
    model.compile(
        optimizer=keras.optimizers.Adam(s.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc")],
    )

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):  # noqa: D102
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):  # noqa: D102
            self.times.append(time.perf_counter() - self.t0)

    log.info("timing training: 2 epochs of %d synthetic %dx%d images", n, size, size)
    timer = EpochTimer()
    # shuffle=False only silences Keras' warning: the tf.data pipeline shuffles, as in pneumo.train
    model.fit(ds, epochs=2, class_weight=class_weight, callbacks=[timer], verbose=0, shuffle=False)
    first_s, epoch_s = timer.times
    n_vb = min(n, 256)
    model.evaluate(x[:n_vb], y[:n_vb], batch_size=32, verbose=0)  # traces the test step
    t0 = time.perf_counter()
    model.evaluate(x[:n_vb], y[:n_vb], batch_size=32, verbose=0)
    val_s = time.perf_counter() - t0

    per_epoch = epoch_s * n_train / n + val_s * n_val / n_vb
    out: dict[str, Any] = {
        "synthetic_images": n,
        "image_size": size,
        "batch_size": s.batch_size,
        "first_epoch_s": round(first_s, 2),
        "epoch_s": round(epoch_s, 4),  # 4 decimals: a quick-mode epoch is < 0.1 s and is extrapolated ~70x
        "train_ms_per_image": round(1000 * epoch_s / n, 2),
        "validation_ms_per_image": round(1000 * val_s / n_vb, 2),
        "train_split_images": n_train,
        "validation_images": n_val,
        "extrapolated_epoch_s": round(per_epoch, 1),
        "epochs_run": epochs_run,
        "extrapolated_training_s": None,
        "recorded_training_s": meta_training.get("seconds"),
    }
    if epochs_run:
        out["extrapolated_training_s"] = round(per_epoch * int(epochs_run) + (first_s - epoch_s), 1)
    return out


# ----------------------------------------------------------------------------------------------------------------
def run_benchmark(model_path: Path, quick: bool = False, training: bool = False) -> dict[str, Any]:
    """The whole benchmark; returns the JSON-ready result."""
    import keras

    from pneumo import config
    from pneumo.io.decode import load_image
    from pneumo.io.preprocess import preprocess

    mode = "quick" if quick else "full"
    plan = PLANS[mode]
    result: dict[str, Any] = {"mode": mode, "plan": asdict(plan), "machine": machine_info()}
    if result["machine"]["load_avg_1m_at_start"] and result["machine"]["load_avg_1m_at_start"] > 0.5:
        log.warning(
            "load average %.2f at start: other processes use the CPU, timings will be slower than usual",
            result["machine"]["load_avg_1m_at_start"],
        )

    # fresh processes first, while nothing else of ours runs
    log.info("timing the package import and peak memory in fresh processes")
    probes = [run_probe("pneumo", model_path) for _ in range(plan.import_reps)]
    jpeg = fullres_jpeg(plan.fullres)
    full = load_image(jpeg)
    shown = display_pixels(jpeg)
    result["input"] = {
        "jpeg_bytes": len(jpeg),
        "width": int(full.size[0]),
        "height": int(full.size[1]),
        "display_width": int(shown.shape[1]),
        "display_height": int(shown.shape[0]),
    }

    cand, loaded, load_s = load_pneumo(model_path)
    log.info("timing decode")
    pn: dict[str, Any] = {
        "decode_ms": time_ms(
            lambda: preprocess(load_image(jpeg, min_side=config.DECODE_MIN_FACTOR * cand.size).pixels, cand.size),
            plan.reps,
            plan.warmup,
        ),
    }
    log.info("timing the per-image stages")
    pn["stages"] = measure_stages(cand, jpeg, plan)
    pn["import_s"] = round(float(np.median([p["import_s"] for p in probes])), 3)
    pn["cold_start_s"] = round(float(np.median([p["cold_start_s"] for p in probes])), 3)
    pn["load_model_s"] = round(load_s, 3)
    pn["peak_rss_mb"] = max(p["peak_rss_mb"] for p in probes)
    pn["peak_rss_mb_this_process"] = peak_rss_mb()  # pneumo only so far: references come next

    refs = []
    for name in REFERENCES:
        log.info("building %s (random weights)", name)
        keras.utils.set_random_seed(0)
        refs.append(build_reference(name))
    timed = measure_all([cand, *refs], jpeg, plan)
    pn.update(timed["pneumo"])
    result["pneumo"] = pn
    for name in REFERENCES:
        result[name] = timed[name]
        result[name]["peak_rss_mb"] = None if quick else run_probe(name, model_path)["peak_rss_mb"]

    result["ratios"] = {name: ratios(pn, result[name]) for name in REFERENCES}
    seed = result["ratios"]["seed_ensemble_64"]
    result["targets"] = {
        "explain_ms_le_half_seed_ensemble": seed["explain_ms"] <= 0.5,
        "batch_images_per_s_ge_2x_seed_ensemble": seed["batch_images_per_s"] >= 2.0,
        "peak_rss_mb_le_900_all_models": pn["peak_rss_mb"] <= 900.0,
    }
    if training:
        result["training"] = bench_training(loaded, plan)
    return result


def fullres_agreement(model_path: Path, fullres_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Mean and max |dp| between full-resolution originals and the data set's 224 px copies of the same files.

    fullres_dir holds CLASS/name.jpeg originals; their 224 copies are found by name under data_dir/SPLIT/CLASS/.
    Each original is decoded in full and as the app and the CLI decode it (pneumo.pipeline.ANALYSIS_DECODE: JPEG
    DCT-domain reduction while each side stays >= 448), then goes through the whole path (lungs, classifier).
    """
    from pneumo.io.decode import load_image
    from pneumo.io.preprocess import preprocess
    from pneumo.pipeline import ANALYSIS_DECODE, classify_224, load_models

    models = load_models(model_path, with_gate=False)
    ways = {"full": {}, "app_and_cli": ANALYSIS_DECODE}
    copies, inputs = [], {w: [] for w in ways}
    for original in sorted(fullres_dir.glob("*/*.jp*g")):
        matches = sorted(data_dir.glob(f"*/{original.parent.name}/{original.name}"))
        if not matches:
            continue
        copies.append(preprocess(load_image(matches[0]).pixels, 224)[..., 0])  # (224, 224)
        for way, kwargs in ways.items():
            inputs[way].append(preprocess(load_image(original, **kwargs).pixels, 224)[..., 0])
    if not copies:
        raise ValueError(f"no original in {fullres_dir} has a copy under {data_dir}")
    p_copy = classify_224(models, np.stack(copies)).prob
    out: dict[str, Any] = {"images": len(copies)}
    for way in ways:
        dp = np.abs(classify_224(models, np.stack(inputs[way])).prob - p_copy)
        out[way] = {"mean_abs_dp": round(float(dp.mean()), 5), "max_abs_dp": round(float(dp.max()), 5)}
    return out


def ratios(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """pneumo / reference for each timed item (medians) and each size; 5 significant digits."""
    out = {}
    for item in (*TIMED_ITEMS, "model_params", "model_file_mb", "peak_rss_mb"):
        a, b = mine.get(item), theirs.get(item)
        if isinstance(a, dict):
            a, b = a["median"], b["median"]
        if a is not None and b:
            out[item] = float(f"{a / b:.5g}")
    return out


def _fmt_stat(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict):
        return f"{v['median']:.1f} / {v['p95']:.1f}"
    if isinstance(v, float):
        return f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    return f"{v:,}"


def format_table(r: dict[str, Any]) -> str:
    """The result as a readable plain-text table."""
    m = r["machine"]
    lines = [
        f"pneumo benchmark ({r['mode']} mode): {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, "
        f"TensorFlow {m['tensorflow']}, Keras {m['keras']}, Python {m['python']}",
        f"input: {r['input']['width']}x{r['input']['height']} JPEG, {r['input']['jpeg_bytes'] / 1024:.0f} KB; "
        f"times: median / p95 over {r['plan']['reps']} runs after {r['plan']['warmup']} warm-up runs",
        "",
    ]
    cols = ("pneumo", *REFERENCES)
    head = f"{'item':<26}" + "".join(f"{c:>20}" for c in cols) + "".join(f"{'pneumo/' + c[:8]:>18}" for c in REFERENCES)
    lines += [head, "-" * len(head)]
    items = (
        "decode_ms",
        "predict_ms",
        "explain_ms",
        "batch_images_per_s",
        "peak_rss_mb",
        "model_params",
        "model_file_mb",
        "import_s",
        "load_model_s",
        "cold_start_s",
        "batch_images_per_s_pneumo_pipeline",
    )
    for item in items:
        row = f"{item:<26}" + "".join(f"{_fmt_stat(r[c].get(item)):>20}" for c in cols)
        ratios = [r["ratios"][c].get(item) for c in REFERENCES]
        row += "".join(f"{'' if q is None else f'{q:.3g}':>18}" for q in ratios)
        lines.append(row)
    lines += [
        "ratios are pneumo / reference of the medians: below 1 is faster or smaller, except batch_images_per_s "
        "where above 1 is faster",
        "references' batch_images_per_s: the seed notebook's decoding (full, sequential); "
        "batch_images_per_s_pneumo_pipeline: theirs through pneumo's decoding",
        "",
        "engines: " + "; ".join(f"{c}: {r[c].get('engine', '?')}" for c in cols),
        "",
        f"pneumo per-image stages (median / p95 ms; explanation: {r['pneumo']['stages']['explanation_method']}):",
    ]
    st = r["pneumo"]["stages"]
    for stage in (*STAGES, "app_path_ms"):
        v = st.get(stage, {})
        shown = _fmt_stat(v) if "median" in v else v.get("status", "-")
        lines.append(f"  {stage:<24}{shown:>20}")
    lines += [
        "  app_path_ms = " + " + ".join(st["app_path_stages"]) + " in a row",
        "",
        "targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in r["targets"].items()),
    ]
    if "training" in r:
        t = r["training"]
        lines += [
            "",
            f"training: {t['synthetic_images']} synthetic {t['image_size']}px images, batch {t['batch_size']}: "
            f"first epoch {t['first_epoch_s']} s (includes tracing), then {t['epoch_s']} s "
            f"({t['train_ms_per_image']} ms/image) + validation {t['validation_ms_per_image']} ms/image",
            f"extrapolated: {t['extrapolated_epoch_s']} s per epoch on {t['train_split_images']} training + "
            f"{t['validation_images']} validation images; {t['epochs_run']} epochs -> "
            f"{_fmt_stat(t['extrapolated_training_s'])} s (recorded run: {_fmt_stat(t['recorded_training_s'])} s)",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from pneumo import config

    p = argparse.ArgumentParser(prog="pneumo-bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--quick", action="store_true", help="a few repetitions, just to prove it works (CI)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--training", action="store_true", help="also time training epochs and extrapolate")
    p.add_argument("--model", type=Path, default=config.DEFAULT_MODEL_PATH, help="a .keras model with its .json")
    p.add_argument(
        "--agreement",
        nargs=2,
        type=Path,
        metavar=("FULLRES_DIR", "DATA_DIR"),
        help="only measure |dp| between full-resolution originals (FULLRES_DIR/CLASS/*.jpeg) and their 224 copies "
        "(DATA_DIR/SPLIT/CLASS/), decoded in full, as the CLI and as the app decode them",
    )
    p.add_argument(
        "--browser",
        nargs="+",
        type=Path,
        metavar="IMAGE",
        help="only time the app in headless Chromium: cold start, and upload -> probability of each IMAGE "
        "(pneumo.bench_browser; needs the dev requirements and Debian's chromium)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    if not args.model.exists():
        p.error(f"model not found: {args.model} (train one with `python -m pneumo.training.train` or pass --model)")
    if args.agreement:
        sys.stdout.write(json.dumps(fullres_agreement(args.model, *args.agreement), indent=1) + "\n")
        return 0
    if args.browser:
        from pneumo.bench.browser import measure_browser

        sys.stdout.write(json.dumps(measure_browser(args.browser), indent=1) + "\n")
        return 0
    result = run_benchmark(args.model, quick=args.quick, training=args.training)
    sys.stdout.write((json.dumps(result, indent=1, allow_nan=False) if args.json else format_table(result)) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
