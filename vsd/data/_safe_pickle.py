"""A restricted unpickler for the CIFAR python batches: builtin containers and numpy arrays, nothing else.

The CIFAR batches (torchvision's on-disk format) are pickled dicts of lists, strings, bytes and numpy arrays.
Rebuilding an array needs exactly three globals; every other global - the way a malicious pickle runs code -
is refused with :class:`pickle.UnpicklingError`.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

__all__ = ["load_restricted_pickle"]

# Files written under numpy 1.x name the module numpy.core, under numpy 2.x numpy._core: both map to the same
# object, resolved here rather than imported from the name found in the file.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}: only numpy arrays and builtin "
                                         "containers are allowed in a data batch") from None


def load_restricted_pickle(path: Path) -> Any:
    """Unpickle ``path`` (latin-1 strings, as torchvision reads the Python 2 CIFAR batches) allowing only
    builtin containers and numpy arrays."""
    with open(path, "rb") as f:
        try:
            return _RestrictedUnpickler(f, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError,
                KeyError) as err:  # what a truncated or corrupt pickle raises
            detail = " ".join(str(err).split()) or type(err).__name__
            raise pickle.UnpicklingError(f"cannot read data batch {path}: {detail}") from None
