"""Arbitrary-scale through-plane super-resolution of CT and MRI volumes (CycleINR).

Importing the package is cheap: no torch, no napari, no Qt. The model lives in `napari_cycleinr.model`,
the file formats in `napari_cycleinr.io`, the napari shell in the underscore modules.
"""

from napari_cycleinr.errors import Cancelled, CycleINRError
from napari_cycleinr.volume import Volume

__version__ = "0.1.0"

__all__ = ["Cancelled", "CycleINRError", "Volume", "__version__"]
