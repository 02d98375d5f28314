"""The reference class-activation maps of a Keras classifier (training and tests; the app runs the TFLite copy).

PNEUMONIA is explained with +logit and NORMAL with -logit; one signed map serves both: the heatmaps are ReLU(+cam)
and ReLU(-cam).

Two ways to get the signed map, equal to float tolerance (tests/training/test_gradcam.py checks it):

- **CAM** (the default when the head allows it): pneumo's head is global average pooling -> dropout -> one dense
  logit, so logit = b + sum_k w_k * mean_hw(F_k). Grad-CAM's channel weights, mean_hw(d logit / d F_k), are then
  exactly w_k / (h*w), and the Grad-CAM map sum_k w_k / (h*w) * F_k is a 1x1 convolution of the feature map with the
  dense kernel. It needs no backward pass: probability and map come from ONE forward pass. Its spatial mean plus the
  dense bias is the logit, so the map is in logit units and one absolute scale means the same on every image.
- **Lung-mask pooling** (:class:`pneumo.training.networks.LungMaskPooling`): logit = b + sum_c s_c w.F_c / sum_c s_c,
  with s_c the lung share of cell c. The map is the evidence density d_c = w.F_c / sum_c s_c, so that
  logit = b + sum_c s_c d_c exactly (with s = 1 everywhere it is the CAM above): a cell without lung adds nothing,
  and the drawn map is d times the lung mask, zero outside the lungs. Grad-CAM is not the same map here (its
  channel weights average the gradient over all cells, lung or not).
- **Grad-CAM** (any other head, or ``method="gradcam"``): one forward and one backward pass.

The loaded model is never modified: a second functional model shares its layers. The export
(pneumo.training.export) bakes the CAM into the classifier's TFLite copy; turning a map into heat and drawing it live
in pneumo.explain. Nothing here touches files or Streamlit.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from pneumo import config

log = logging.getLogger(__name__)

_CAM_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
# Layers that may sit between global average pooling and the logit without breaking CAM == Grad-CAM at inference.
_PASS_THROUGH = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.GaussianNoise)


def _producer(tensor) -> keras.layers.Layer | None:
    """The layer that produced a symbolic Keras tensor (None when unknown)."""
    history = getattr(tensor, "_keras_history", None)
    return getattr(history, "operation", None) if history is not None else None


def cam_head(model: keras.Model, layer_name: str = config.GRADCAM_LAYER) -> keras.layers.Dense | None:
    """The dense 'logit' layer when the head is feature map -> GAP -> (dropout) -> Dense(1, linear), else None.

    Only for such a head are CAM and Grad-CAM the same map.
    """
    try:
        dense = model.get_layer("logit")
        fmap_layer = model.get_layer(layer_name)
    except ValueError:
        return None
    if not isinstance(dense, keras.layers.Dense) or dense.units != 1:
        return None
    if getattr(dense.activation, "__name__", "") != "linear":
        return None
    layer = _producer(dense.input)
    while isinstance(layer, _PASS_THROUGH):
        layer = _producer(layer.input)
    if type(layer).__name__ == "LungMaskPooling":  # (feature map, lung share) -> masked mean
        return dense if _producer(layer.input[0]) is fmap_layer else None
    if not isinstance(layer, keras.layers.GlobalAveragePooling2D) or layer.keepdims:
        return None
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    return dense if _producer(layer.input) is fmap_layer else None


def lung_share_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The layer giving the lung share of each feature cell (B, h, w, 1) of a lung-pooled classifier, else None."""
    try:
        return model.get_layer("lung_share")
    except ValueError:
        return None


def _gradcam_fn(model: keras.Model, layer_name: str) -> Callable:
    """Compiled Grad-CAM: (B, S, S, 1) float32 -> (P(pneumonia) (B,), signed cam (B, h, w)); forward + backward."""
    grad_model = keras.Model(
        model.inputs, [model.get_layer(layer_name).output, model.get_layer("logit").output], name="gradcam"
    )
    size = model.input_shape[1:]

    @tf.function(input_signature=[tf.TensorSpec((None, *size), tf.float32)], reduce_retracing=True)
    def gradcam(x):
        with tf.GradientTape() as tape:
            fmap, logit = grad_model(x, training=False)  # (B, h, w, K), (B, 1)
            target = tf.reduce_sum(logit)  # the images of a batch are independent: one gradient call
        grads = tape.gradient(target, fmap)  # (B, h, w, K)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # (B, 1, 1, K)
        signed = tf.reduce_sum(weights * fmap, axis=-1)  # (B, h, w): >0 supports PNEUMONIA, <0 NORMAL
        return tf.sigmoid(logit[:, 0]), signed

    return gradcam


def _cam_fn(model: keras.Model, layer_name: str, dense: keras.layers.Dense) -> Callable:
    """Compiled CAM: (B, S, S, 1) float32 -> (P(pneumonia) (B,), signed cam (B, h, w)) from one forward pass."""
    share_layer = lung_share_layer(model)
    outputs = [model.get_layer(layer_name).output, dense.output]
    if share_layer is not None:
        outputs.append(share_layer.output)  # (B, h, w, 1) lung share per cell
    cam_model = keras.Model(model.inputs, outputs, name="cam")
    size = model.input_shape[1:]
    kernel = dense.kernel  # (K, 1) variable: read at call time, so the map follows the model's current weights

    @tf.function(input_signature=[tf.TensorSpec((None, *size), tf.float32)], reduce_retracing=True)
    def cam(x):
        fmap, logit, *share = cam_model(x, training=False)  # (B, h, w, K), (B, 1)[, (B, h, w, 1)]
        if share:  # lung-mask pooling: the density per unit of lung share
            denom = tf.maximum(tf.reduce_sum(share[0], axis=[1, 2, 3]), 1e-6)[:, None, None]  # (B, 1, 1)
        else:
            denom = tf.cast(tf.shape(fmap)[1] * tf.shape(fmap)[2], fmap.dtype)
        w = tf.cast(tf.convert_to_tensor(kernel), fmap.dtype)[:, 0]  # (K,)
        signed = tf.tensordot(fmap, w, axes=[[3], [0]]) / denom  # (B, h, w): a 1x1 convolution, scaled
        return tf.sigmoid(logit[:, 0]), signed

    return cam


def _explain_fn(model: keras.Model, layer_name: str, method: str) -> Callable:
    """The compiled explanation function of a model, cached per (model, layer, method) without keeping it alive."""
    if method not in ("auto", "cam", "gradcam"):
        raise ValueError("method must be 'auto', 'cam' or 'gradcam'")
    per_model = _CAM_FNS.setdefault(model, {})
    key = (layer_name, method)
    if key not in per_model:
        dense = cam_head(model, layer_name) if method != "gradcam" else None
        if method == "cam" and dense is None:
            raise ValueError("CAM needs a GAP -> dense head after the explained layer; use method='gradcam'")
        if dense is None and method == "auto":
            log.info("model head is not GAP + dense: using Grad-CAM (forward and backward pass)")
        per_model[key] = _cam_fn(model, layer_name, dense) if dense is not None else _gradcam_fn(model, layer_name)
    return per_model[key]


def _as_batch(x: np.ndarray) -> np.ndarray:
    """(S, S, 1) or (B, S, S, 1) -> float32 (B, S, S, 1)."""
    x = np.asarray(x, dtype=np.float32)
    return x[None] if x.ndim == 3 else x


def explain_batch(
    model: keras.Model, x: np.ndarray, layer_name: str = config.GRADCAM_LAYER, *, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """P(pneumonia) float64 (B,) and the signed class-activation map float32 (B, h, w) for inputs (B, S, S, 1).

    method: 'auto' (CAM from one forward pass when the head is GAP + dense, else Grad-CAM), 'cam' or 'gradcam'.
    The map is positive where the features push towards PNEUMONIA and negative where they push towards NORMAL.
    """
    prob, signed = _explain_fn(model, layer_name, method)(_as_batch(x))
    return np.asarray(prob, np.float64), np.asarray(signed, np.float32)
