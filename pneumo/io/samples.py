"""The sample images shipped in ``assets/samples`` and what ``samples.json`` says about each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pneumo import config

SAMPLES_DIR = config.ASSETS_DIR / "samples"
# How samples.json's pneumo_split reads in the sample menu.
_SPLIT_WORDS = {
    # not trained on, but the split chose the threshold (and the design): not a new patient either
    "validation": "validation split: not trained on, but it chose the threshold",
    "training": "seen in training: its result is optimistic",
}


@dataclass(frozen=True)
class Sample:
    """One shipped sample image and what samples.json says about it."""

    file: str
    label: str
    split: str
    path: Path

    @property
    def title(self) -> str:
        """A menu entry such as 'PNEUMONIA · person724_virus_1343 (validation split: ...)'."""
        stem = self.file.split("_", 1)[-1].rsplit(".", 1)[0]
        return f"{self.label} · {stem} ({_SPLIT_WORDS.get(self.split, self.split)})"


def list_samples(folder: Path = SAMPLES_DIR) -> list[Sample]:
    """The sample images listed in ``samples.json`` that exist in ``folder``, NORMAL first; [] when there are none."""
    index = folder / "samples.json"
    if not index.exists():
        return []
    entries = json.loads(index.read_text())
    out = [
        Sample(str(e["file"]), str(e.get("label", "?")), str(e.get("pneumo_split", "unknown")), folder / e["file"])
        for e in entries
        if (folder / str(e["file"])).is_file()
    ]
    return sorted(out, key=lambda s: (s.label, s.file))
