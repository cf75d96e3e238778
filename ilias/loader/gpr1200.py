"""GPR1200 as its authors distribute it: one flat folder of ``{class}_{name}.jpg`` files.

``GPR1200.zip`` unzips to ``images/`` holding all 12,000 images; the class is the integer
before the first underscore. The authors' loader (``eval/GPR1200.py``) orders the files by
class, and the six subsets (landmarks, iNat, sketch, INSTRE, SOP, faces) are ranges of that
order, so the order is part of the protocol: here class, then file name (the authors keep
``os.listdir`` order inside a class, which is unspecified; a subset spans whole classes, so
both give the same subsets and the same mAP). Every image is both a query and a database
image: the records are the database, and the queries are the same ids.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ilias.errors import DatasetError
from ilias.loader.records import Record, Role

GPR1200_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
#: The subsets in class order; classes 200 * i ... 200 * i + 199 form subset i (class ids
#: 0-1199 in the authors' ``GPR1200_categoryNumber_to_text.json``), which on the full set
#: are exactly the index ranges 2,000 * i ... 2,000 * i + 1,999 the authors score.
GPR1200_SUBSET_NAMES = ("landmarks", "iNat", "sketch", "INSTRE", "SOP", "faces")
CLASSES_PER_SUBSET = 200
_NAME = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class Gpr1200Dataset:
    """The images in protocol order: records (id = file name, payload ``label``) and labels."""

    root: Path
    records: tuple[Record, ...]
    labels: np.ndarray

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.records)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def subsets(self) -> tuple[tuple[str, int, int], ...]:
        """(name, first index, end index) of each subset present, from the class ids, so a
        sample of the folder is still scored per subset (empty subsets are left out)."""
        group = self.labels // CLASSES_PER_SUBSET
        out = []
        for number, name in enumerate(GPR1200_SUBSET_NAMES):
            where = np.flatnonzero(group == number)
            if len(where):
                out.append((name, int(where[0]), int(where[-1]) + 1))
        return tuple(out)


def gpr1200_class(file_name: str) -> int:
    """The class of ``{class}_{name}.jpg``; anything else is refused with the expected form."""
    match = _NAME.match(Path(file_name).stem)
    if not match:
        raise DatasetError(
            f"{file_name!r} is not a GPR1200 file name: expected '<class>_<name>.jpg'"
        )
    return int(match.group(1))


def image_folder(path: Path | str) -> Path:
    """The folder of images: ``path`` itself, or ``path/images`` (the unzipped archive)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder; pass the GPR1200 images folder")
    nested = path / "images"
    if nested.is_dir() and not any(_is_image(p) for p in path.iterdir()):
        return nested
    return path


def is_gpr1200_layout(path: Path | str) -> bool:
    """A flat folder (or ``images/`` under it) whose images are all ``{class}_{name}``."""
    try:
        folder = image_folder(path)
    except DatasetError:
        return False
    names = [p.name for p in folder.iterdir() if _is_image(p)]
    return bool(names) and all(_NAME.match(Path(n).stem) for n in names)


def load_gpr1200(path: Path | str) -> Gpr1200Dataset:
    """Read the GPR1200 folder in protocol order (file names only; no image is opened)."""
    folder = image_folder(path)
    paths = [p for p in folder.iterdir() if _is_image(p)]
    if not paths:
        raise DatasetError(f"{folder} holds no .jpg/.png images; is it the GPR1200 folder?")
    keyed = sorted((gpr1200_class(p.name), p.name, p) for p in paths)
    records = tuple(
        Record(name, path, {"label": label, "subset": _subset(label), "role": str(Role.IMAGE)})
        for label, name, path in keyed
    )
    labels = np.array([label for label, _, _ in keyed], dtype=np.int64)
    return Gpr1200Dataset(folder, records, labels)


def _subset(label: int) -> str:
    number = label // CLASSES_PER_SUBSET
    return GPR1200_SUBSET_NAMES[number] if number < len(GPR1200_SUBSET_NAMES) else "other"


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in GPR1200_SUFFIXES and path.is_file()


__all__ = [
    "CLASSES_PER_SUBSET",
    "GPR1200_SUBSET_NAMES",
    "Gpr1200Dataset",
    "gpr1200_class",
    "image_folder",
    "is_gpr1200_layout",
    "load_gpr1200",
]
