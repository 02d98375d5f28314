"""The trainers' command line, one implementation for the three scripts: the common flags and the overrides of a
script's ``Settings`` block."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from pneumo import __version__

# The Settings field types a flag can set (tuples such as widths stay in the presets and the code).
_FLAG_TYPES = {"int": int, "float": float, "str": str}


def add_setting_args(parser: argparse.ArgumentParser, settings_cls: type) -> None:
    """One ``--field-name`` flag per int/float/str field of the Settings dataclass, ``--field-name`` /
    ``--no-field-name`` per bool field (default: unset)."""
    for f in dataclasses.fields(settings_cls):
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        flag = f"--{f.name.replace('_', '-')}"
        if type_name == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif type_name in _FLAG_TYPES:
            parser.add_argument(flag, type=_FLAG_TYPES[type_name], default=None)


def settings_from(args: argparse.Namespace, settings_cls: type, preset: dict[str, Any]) -> Any:
    """The preset's Settings with every flag that was given applied on top."""
    settings = settings_cls(**preset)
    for f in dataclasses.fields(settings_cls):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(settings, f.name, value)
    return settings


def trainer_parser(prog: str, doc: str, name: str, presets: dict[str, dict]) -> argparse.ArgumentParser:
    """A trainer's parser with the flags all three share: --version, --data, --out, --name, --preset."""
    p = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--data", required=True, type=Path, help="folder with train/{NORMAL,PNEUMONIA} (and val/, test/)")
    p.add_argument("--out", default=Path("models"), type=Path, help="output folder (default: models/)")
    p.add_argument("--name", default=name, help="file stem of the model and its metadata")
    p.add_argument("--preset", default="full", choices=sorted(presets))
    return p
