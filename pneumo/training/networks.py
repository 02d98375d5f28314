"""pneumo's Keras networks (training only): the classifier CNN, the lung U-Net, batch-norm folding, and loading a
``.keras`` file as a :class:`pneumo.nets.Network` that runs on TensorFlow (the app and the CLI run TFLite copies)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

from pneumo import config
from pneumo.checks.lungs import LUNG_OUTPUT
from pneumo.nets.lite import attach
from pneumo.nets.modelfile import Network, read_metadata
from pneumo.training.gradcam import explain_batch

log = logging.getLogger(__name__)

# Keras' default 0.99 makes the moving statistics lag for hundreds of steps; with ten BN layers the lag compounds and
# inference-mode outputs collapse to a constant in the first epochs (seen here: validation AUC 0.5). 0.9 tracks fast.
BN_MOMENTUM = 0.9


@keras.saving.register_keras_serializable(package="pneumo")
class PerImageStandardization(layers.Layer):
    """Subtract each image's mean and divide by its standard deviation: exposure and contrast stop mattering.

    Input and output: float (B, H, W, C).
    """

    def __init__(self, epsilon: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, x):  # noqa: D102
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        var = ops.var(x, axis=(1, 2, 3), keepdims=True)
        return (x - mean) / ops.sqrt(var + self.epsilon)

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="pneumo")
class LungMaskPooling(layers.Layer):
    """Masked average pooling: the mean of a feature map over the lung fields only.

    Inputs: feature map f (B, h, w, K) and the lung share of each feature cell m (B, h, w, 1) in [0, 1].
    Output: sum_c m_c f_c / sum_c m_c (B, K). A cell with no lung contributes nothing, so with a dense head the
    class-activation map is exactly zero there (pneumo.training.gradcam). An image whose mask is empty gets zeros.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):  # noqa: D102
        fmap, share = inputs  # (B, h, w, K), (B, h, w, 1)
        total = ops.sum(share, axis=(1, 2))  # (B, 1)
        return ops.sum(fmap * share, axis=(1, 2)) / ops.maximum(total, self.epsilon)  # (B, K)

    def compute_output_shape(self, input_shape):  # noqa: D102
        return (input_shape[0][0], input_shape[0][-1])

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="pneumo")
class TakeChannel(layers.Layer):
    """One channel of a (B, H, W, C) input, times ``scale``: (B, H, W, 1)."""

    def __init__(self, channel: int, scale: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.channel, self.scale = channel, scale

    def call(self, x):  # noqa: D102
        return x[..., self.channel : self.channel + 1] * self.scale

    def compute_output_shape(self, input_shape):  # noqa: D102
        return (*input_shape[:-1], 1)

    def get_config(self) -> dict[str, Any]:  # noqa: D102
        return {**super().get_config(), "channel": self.channel, "scale": self.scale}


def split_image_mask(inputs, feature_stride: int):
    """A two-channel classifier input (B, S, S, 2) -> image (B, S, S, 1) 0..255 and the lung share of each feature
    cell (B, S/stride, S/stride, 1) in [0, 1] (channel 1 holds the lung mask as 0..255)."""
    image = TakeChannel(0, name="image_channel")(inputs)  # (B, S, S, 1) 0..255
    mask = TakeChannel(1, 1.0 / 255.0, name="mask_channel")(inputs)  # (B, S, S, 1) 0..1
    share = layers.AveragePooling2D(feature_stride, name="lung_share")(mask)  # (B, h, w, 1)
    return image, share


def _sep_block(x, filters: int, name: str, weight_decay: float, last_name: str | None = None):
    """Two depthwise-separable 3x3 convolutions, each followed by batch norm and ReLU."""
    reg = keras.regularizers.l2(weight_decay) if weight_decay else None
    for i in (1, 2):
        x = layers.SeparableConv2D(
            filters, 3, padding="same", use_bias=False, pointwise_regularizer=reg, name=f"{name}_sep{i}"
        )(x)
        x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{i}")(x)
        x = layers.ReLU(name=last_name if (i == 2 and last_name) else f"{name}_relu{i}")(x)
    return x


def build_model(
    image_size: int = config.IMAGE_SIZE,
    stem_width: int = 32,
    widths: tuple[int, ...] = (64, 128, 192, 256),
    dropout: float = 0.3,
    weight_decay: float = 1e-4,
    cam_stride: int = 32,
    lung_pooling: bool = False,
) -> keras.Model:
    """Build the classifier: (B, S, S, 1) pixel values 0..255 in, P(pneumonia) (B, 1) out.

    A stride-2 stem convolution and a 2x2 max-pool (S -> S/4), then one block of two separable convolutions per
    width with 2x2 max-pooling between blocks (S/4 -> S/32 for four blocks), global average pooling, dropout and
    one logit. ``cam_stride=16`` drops the last pooling: the explained feature map is then S/16 (10x10 at 160 px).
    The last block's output is named ``config.GRADCAM_LAYER`` (7x7 at 224 px with the default stride 32); the logit
    layer is named
    ``logit`` so that Grad-CAM can differentiate the logit rather than the saturating sigmoid.

    ``lung_pooling``: the input has a second channel, the lung mask (0 or 255), and global average pooling becomes
    :class:`LungMaskPooling` over the lung cells only: the evidence lies inside the lungs by construction.
    """
    channels = 2 if lung_pooling else config.CHANNELS
    inputs = keras.Input((image_size, image_size, channels), name="image")  # (B, S, S, C), 0..255
    image, share = split_image_mask(inputs, cam_stride) if lung_pooling else (inputs, None)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(image)  # (B, S, S, 1), 0..1
    x = PerImageStandardization(name="standardize")(x)  # zero mean, unit variance per image
    x = layers.Conv2D(stem_width, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)  # S/2
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(2, name="stem_pool")(x)  # (B, S/4, S/4, stem_width)
    for i, w in enumerate(widths, start=1):
        last = i == len(widths)
        x = _sep_block(x, w, f"block{i}", weight_decay, last_name=config.GRADCAM_LAYER if last else None)
        if not last and not (cam_stride == 16 and i == len(widths) - 1):
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)  # halves H and W
    if share is None:
        x = layers.GlobalAveragePooling2D(name="gap")(x)  # (B, widths[-1])
    else:
        x = LungMaskPooling(name="gap")([x, share])  # (B, widths[-1]): the mean over lung cells only
    x = layers.Dropout(dropout, name="dropout")(x)
    logit = layers.Dense(1, name="logit")(x)  # (B, 1)
    prob = layers.Activation("sigmoid", name="probability", dtype="float32")(logit)  # (B, 1) = P(PNEUMONIA)
    return keras.Model(inputs, prob, name="pneumo_cnn")


def ensemble_model(members: list[keras.Model]) -> keras.Model:
    """One model whose logit is the mean of the members' logits, built so that CAM still applies.

    Each member is feature map f_i -> GAP -> dense (w_i, b_i). The mean logit is mean(b_i) + sum_i (w_i / N) . GAP(f_i),
    which is a GAP + dense head over the concatenated feature maps: the ensemble's ``gradcam_conv`` is that
    concatenation (B, h, w, N*K) and its CAM is the mean of the members' CAMs.
    """
    if not members:
        raise ValueError("an ensemble needs members")
    n = len(members)
    shape = members[0].input_shape[1:]  # (S, S, C)
    inputs = keras.Input(shape, name="image")  # (B, S, S, C), 0..255
    pooled = isinstance(members[0].get_layer("gap"), LungMaskPooling)
    if pooled:
        stride = shape[0] // int(members[0].get_layer(config.GRADCAM_LAYER).output.shape[1])
        image, share = split_image_mask(inputs, stride)  # (B, S, S, 1), (B, h, w, 1)
    else:
        image, share = inputs, None
    fmaps = []
    for i, m in enumerate(members):
        source = m.get_layer("image_channel").output if pooled else m.inputs
        body = keras.Model(source, m.get_layer(config.GRADCAM_LAYER).output, name=f"member{i + 1}")
        fmaps.append(body(image))  # (B, h, w, K)
    x = layers.Concatenate(name=config.GRADCAM_LAYER)(fmaps) if n > 1 else fmaps[0]  # (B, h, w, N*K)
    if pooled:
        x = LungMaskPooling(name="gap")([x, share])  # (B, N*K): the mean over the lung cells
    else:
        x = layers.GlobalAveragePooling2D(name="gap")(x)
    logit = layers.Dense(1, name="logit")(x)
    prob = layers.Activation("sigmoid", name="probability", dtype="float32")(logit)
    model = keras.Model(inputs, prob, name=f"pneumo_cnn_ensemble{n}")
    kernels = [np.asarray(m.get_layer("logit").get_weights()[0]) / n for m in members]  # (K, 1) each
    bias = np.mean([np.asarray(m.get_layer("logit").get_weights()[1]) for m in members], axis=0)  # (1,)
    model.get_layer("logit").set_weights([np.concatenate(kernels, axis=0), bias])
    return model


def layer_rows(model: keras.Model) -> list[dict[str, Any]]:
    """One row per layer of a Keras model: name, type, output shape and parameter count (metadata ``layers``)."""
    rows = []
    for layer in model.layers:
        try:
            shape = str(tuple(layer.output.shape))
        except (AttributeError, ValueError):
            shape = "?"
        rows.append(
            {"layer": layer.name, "type": type(layer).__name__, "output shape": shape,
             "parameters": int(layer.count_params())}
        )  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------------------------------------
# an inference copy with batch norm folded into the convolutions (fewer, fused ops: ~25 % faster on 2 CPU cores)
_FOLDABLE = (layers.Conv2D, layers.SeparableConv2D)  # Conv2DTranspose is never followed by BN here


class FoldedBatchNorm(layers.Layer):
    """Where a BatchNormalization was: its scale and shift now live in the convolution before it."""

    def call(self, x, training=None, mask=None):
        return x


def _foldable_pairs(model: keras.Model) -> dict[str, layers.Layer]:
    """{BN layer name: the convolution feeding it} where that convolution is called once, has no activation, is not
    the explained layer and feeds nothing else (no other layer, no model output)."""
    inputs = [t for layer in model.layers for node in layer._inbound_nodes for t in node.input_tensors]
    uses: dict[int, int] = {}  # id(layer) -> how many tensors of it are read (by layers or as model outputs)
    for t in [*inputs, *model.outputs]:
        uses[id(t._keras_history.operation)] = uses.get(id(t._keras_history.operation), 0) + 1
    pairs = {}
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization) and len(layer._inbound_nodes) == 1:
            src = layer.input._keras_history.operation
            if (
                isinstance(src, _FOLDABLE)
                and uses.get(id(src)) == 1
                and len(src._inbound_nodes) == 1
                and src.get_config().get("activation") == "linear"
                and src.name != config.GRADCAM_LAYER
                and layer.axis in (-1, 3)
            ):
                pairs[layer.name] = src
    return pairs


def _folded_weights(conv: layers.Layer, bn: layers.BatchNormalization) -> list[np.ndarray]:
    """The convolution's weights with bn applied: kernel * s (per output channel), bias (b - mean) * s + beta."""
    mean, var = np.asarray(bn.moving_mean), np.asarray(bn.moving_variance)  # (C,)
    gamma = np.asarray(bn.gamma) if bn.scale else np.ones_like(mean)
    beta = np.asarray(bn.beta) if bn.center else np.zeros_like(mean)
    s = gamma / np.sqrt(var + bn.epsilon)  # (C,)
    w = conv.get_weights()
    bias = w[-1] if conv.use_bias else np.zeros_like(mean)
    kernels = w[:-1] if conv.use_bias else w  # Conv2D: [kernel]; SeparableConv2D: [depthwise, pointwise]
    return [*kernels[:-1], kernels[-1] * s, (bias - mean) * s + beta]  # the last kernel's axis -1 is C


def fold_batchnorm(model: keras.Model) -> keras.Model:
    """An inference copy of a functional model (nested ones included) with every BatchNormalization that follows a
    convolution folded into it. Same layer names and outputs (to float rounding); for inference only: the copy does
    not follow later changes to the original's weights."""
    pairs = _foldable_pairs(model)
    convs = {c.name: bn for bn, c in pairs.items()}

    def clone(layer: layers.Layer) -> layers.Layer:
        if isinstance(layer, keras.Model):
            return fold_batchnorm(layer)
        if layer.name in pairs:
            return FoldedBatchNorm(name=layer.name)
        cfg = layer.get_config()
        if layer.name in convs:
            cfg["use_bias"] = True
        return layer.__class__.from_config(cfg)

    folded = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if isinstance(layer, keras.Model) or layer.name in pairs or not layer.weights:
            continue
        bn = model.get_layer(convs[layer.name]) if layer.name in convs else None
        folded.get_layer(layer.name).set_weights(_folded_weights(layer, bn) if bn else layer.get_weights())
    return folded


def load_keras_with_metadata(path: str | Path, what: str = "model") -> tuple[keras.Model, dict[str, Any]]:
    """(Keras model, metadata dict) from a ``.keras`` file and the JSON beside it (required); pneumo's layers are
    registered by importing this module."""
    metadata = read_metadata(path, what)
    return keras.saving.load_model(path, compile=False), metadata


class KerasRunner:
    """Runs a Keras model for pneumo.nets.lite.forward: float32 (B, ...) -> its outputs in order, compiled once."""

    def __init__(self, model: keras.Model) -> None:
        self._model = weakref.ref(model)  # the attachment must not keep the model alive
        out = model.output
        self.outputs = list(out) if isinstance(out, dict) else list(model.output_names)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        out = compiled_forward(self._model())(x)
        if isinstance(out, dict):
            return [np.asarray(out[k]) for k in self.outputs]
        if isinstance(out, (list, tuple)):
            return [np.asarray(o) for o in out]
        return [np.asarray(out)]


class KerasCamRunner:
    """Runs a classifier's reference Grad-CAM (pneumo.training.gradcam) for pneumo.nets.lite.forward_cam."""

    outputs = ("probability", "cam")

    def __init__(self, model: keras.Model, layer_name: str) -> None:
        self._model, self._layer = weakref.ref(model), layer_name

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return list(explain_batch(self._model(), x, self._layer))


def keras_network(model: keras.Model, metadata: dict[str, Any], path: str | Path = "") -> Network:
    """A Keras model as a pneumo.nets.Network that the analysis path runs on TensorFlow."""
    attach(model, "forward", KerasRunner(model))
    layer = str(metadata.get("gradcam_layer", config.GRADCAM_LAYER))
    if any(layer_.name == layer for layer_ in model.layers):
        attach(model, ("cam", layer), KerasCamRunner(model, layer))
    return Network(model, metadata, Path(path))


def load_keras_network(path: str | Path, what: str = "model") -> Network:
    """The ``.keras`` file at ``path`` as a Network on TensorFlow, batch norm folded into its convolutions (the
    loader that training and the benchmark pass to pneumo.pipeline.load_models)."""
    model, metadata = load_keras_with_metadata(path, what)
    return keras_network(fold_batchnorm(model), metadata, path)


_FORWARD_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def compiled_forward(model: keras.Model) -> Callable:
    """The model's inference pass compiled once for any batch size (float32 in, numpy out), cached per model.

    Calling a Keras model eagerly costs ~40 ms of Python overhead per call on 2 CPU cores (see pneumo.bench).
    """
    if not isinstance(model, keras.Model):  # a plain callable (a test double): nothing to compile
        return lambda x: model(x, training=False)
    if model not in _FORWARD_FNS:
        ref = weakref.ref(model)  # the cached function must not keep the model alive
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        fn = tf.function(lambda x: ref()(x, training=False), input_signature=[spec], reduce_retracing=True)
        _FORWARD_FNS[model] = lambda x: fn(tf.constant(x, dtype=tf.float32))
    return _FORWARD_FNS[model]


def build_unet(size: int = config.LUNG_SEG_SIZE, widths: tuple[int, ...] = (8, 16, 32, 64, 128)):
    """A U-Net: (B, S, S, 1) pixel values 0..255 in, P(lung) (B, S, S, 1) out.

    Two 3x3 conv + BN + ReLU per level, 2x2 max-pooling down, transposed convolution up, skip connections.
    len(widths) levels: the last is the bottleneck at S / 2**(len(widths) - 1).
    """

    def block(x, w: int, name: str):
        for i in (1, 2):
            x = layers.Conv2D(w, 3, padding="same", use_bias=False, name=f"{name}_conv{i}")(x)
            x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{i}")(x)
            x = layers.ReLU(name=f"{name}_relu{i}")(x)
        return x

    inputs = keras.Input((size, size, 1), name="image")  # (B, S, S, 1), 0..255
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = PerImageStandardization(name="standardize")(x)
    skips = []
    for i, w in enumerate(widths[:-1], start=1):
        x = block(x, w, f"down{i}")  # (B, S/2**(i-1), ., w)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = block(x, widths[-1], "bottleneck")  # (B, S/2**(L-1), ., widths[-1])
    for i, w in reversed(list(enumerate(widths[:-1], start=1))):
        x = layers.Conv2DTranspose(w, 2, strides=2, padding="same", name=f"up{i}_tconv")(x)
        x = layers.Concatenate(name=f"up{i}_concat")([x, skips[i - 1]])
        x = block(x, w, f"up{i}")
    out = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name=LUNG_OUTPUT)(x)  # (B, S, S, 1)
    return keras.Model(inputs, out, name="pneumo_lungs")


def dice_loss(y_true, y_pred):
    """BCE plus soft Dice per image, (B, S, S, 1) each -> (B,): BCE for the pixels, Dice for the overlap a lung mask
    is judged by (the U-Net's and the gate's lung head's loss)."""
    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    denom = ops.sum(y_true, axis=(1, 2, 3)) + ops.sum(y_pred, axis=(1, 2, 3))
    soft_dice = 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)
    return ops.mean(keras.losses.binary_crossentropy(y_true, y_pred), axis=(1, 2)) + soft_dice
