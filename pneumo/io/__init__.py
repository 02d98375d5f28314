"""Bytes in, pixels out: decoding (:mod:`.decode`), the 224 squash every network reads (:mod:`.preprocess`) and the
shipped samples (:mod:`.samples`). Nothing here knows about networks."""

from pneumo.io.decode import ImageLoadError, LoadedImage, jpeg_reduction, load_image, load_many, shrink_to_side
from pneumo.io.preprocess import preprocess

__all__ = ["ImageLoadError", "LoadedImage", "jpeg_reduction", "load_image", "load_many", "preprocess", "shrink_to_side"]
