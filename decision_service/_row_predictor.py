"""A serving model's predictions through LightGBM's C API, with everything but the rows set up once.

`lightgbm.Booster.predict` builds a predictor object, deep-copies its keyword arguments, renders
them to a parameter string and checks the input's type on every call: about 15 µs of Python
around 60-80 µs of trees for a 20-candidate decision (`bench/decide_inprocess.py`). The service
scores the same kind of matrix every time (float64, C order, one thread), so it calls
``LGBM_BoosterPredictForMat`` directly with arguments prepared once. Written by hand because
LightGBM offers no prepared predictor for a matrix; its single-row "fast" API costs a call per row
and measured no faster for tens of rows. Anything the direct call does not cover (several classes,
a LightGBM without the attributes it uses) goes through ``Booster.predict``; tests check both give
the same numbers.
"""

from __future__ import annotations

import ctypes
from typing import Any

import lightgbm as lgb
import numpy as np

_FLOAT64 = 1  # C_API_DTYPE_FLOAT64
_ROW_MAJOR = 1
_NORMAL = 0  # C_API_PREDICT_NORMAL: the transformed output (a probability for binary objectives)


class RowPredictor:
    """Predicts rows of float64 features with one booster, one thread, all its iterations."""

    def __init__(self, booster: lgb.Booster) -> None:
        self._booster = booster
        self._library: Any = getattr(getattr(lgb, "basic", None), "_LIB", None)
        self._handle = getattr(booster, "_handle", None)
        self._iterations = ctypes.c_int(booster.best_iteration if booster.best_iteration > 0 else -1)
        self._parameters = b"num_threads=1"
        self.direct = self._library is not None and self._handle is not None and _one_output(booster)
        """False: predictions go through ``Booster.predict``."""

    def predict(self, rows: np.ndarray) -> np.ndarray:
        if not self.direct:
            return self._library_predict(rows)
        rows = np.ascontiguousarray(rows, dtype=np.float64)
        count, columns = rows.shape
        predictions = np.empty(count, dtype=np.float64)
        written = ctypes.c_int64(0)
        status = self._library.LGBM_BoosterPredictForMat(
            self._handle,
            rows.ctypes.data_as(ctypes.c_void_p),
            ctypes.c_int(_FLOAT64),
            ctypes.c_int32(count),
            ctypes.c_int32(columns),
            ctypes.c_int(_ROW_MAJOR),
            ctypes.c_int(_NORMAL),
            ctypes.c_int(0),
            self._iterations,
            ctypes.c_char_p(self._parameters),
            ctypes.byref(written),
            predictions.ctypes.data_as(ctypes.c_void_p),
        )
        if status != 0 or written.value != count:  # LightGBM's own call raises its error message
            return self._library_predict(rows)
        return predictions

    def _library_predict(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self._booster.predict(rows, num_threads=1))


def _one_output(booster: lgb.Booster) -> bool:
    """One prediction per row (not a multi-class model): what the direct call's buffer holds."""
    return booster.num_model_per_iteration() == 1
