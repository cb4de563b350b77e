"""Type aliases shared across the library."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Internal dense index of a user or an item (contiguous ints from 0).
IntArray = npt.NDArray[np.int64]
#: Scores, weights and timestamps.
FloatArray = npt.NDArray[np.float64]
#: Factor matrices are float32: half the memory, and plenty of precision for SGD.
Float32Array = npt.NDArray[np.float32]
