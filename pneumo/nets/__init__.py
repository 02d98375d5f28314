"""The networks: model files with their metadata (:mod:`.modelfile`) and their TFLite runtime (:mod:`.lite`)."""

from pneumo.nets.lite import EXPORT_COMMAND, LiteNet, describe, forward, forward_cam, load_network
from pneumo.nets.modelfile import ModelFileError, Network, default_model_path, file_sha256, read_metadata

__all__ = [
    "EXPORT_COMMAND",
    "LiteNet",
    "ModelFileError",
    "Network",
    "default_model_path",
    "describe",
    "file_sha256",
    "forward",
    "forward_cam",
    "load_network",
    "read_metadata",
]
