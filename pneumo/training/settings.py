"""Command-line overrides for a training script's ``Settings`` block: one implementation for the three scripts."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

# The Settings field types a flag can set (tuples such as widths stay in the presets and the code).
_FLAG_TYPES = {"int": int, "float": float, "str": str}


def add_setting_args(parser: argparse.ArgumentParser, settings_cls: type) -> None:
    """One ``--field-name`` flag per int/float/str field of the Settings dataclass (default: unset)."""
    for f in dataclasses.fields(settings_cls):
        kind = _FLAG_TYPES.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
        if kind is not None:
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None)


def settings_from(args: argparse.Namespace, settings_cls: type, preset: dict[str, Any]) -> Any:
    """The preset's Settings with every flag that was given applied on top."""
    settings = settings_cls(**preset)
    for f in dataclasses.fields(settings_cls):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(settings, f.name, value)
    return settings
