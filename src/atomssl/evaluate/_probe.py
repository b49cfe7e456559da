"""The linear probe: standardised embeddings of a frozen backbone -> ridge / logistic
regression, with the regularisation chosen on validation rows only."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..train._finetune import KINDS
from ._metrics import classification_scores

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------- linear probe
class LinearProbe:
    """Standardised embeddings -> ridge (regression, on the transformed target) or logistic
    regression; the regularisation strength chosen on the validation set."""

    def __init__(self, kind: str, transform: str = "none", n_classes: int | None = None):
        if kind not in KINDS:
            raise ConfigError(f"LinearProbe kind must be one of {KINDS}, got {kind!r}")
        if kind == "spectrum" and transform != "none":
            raise ConfigError("a spectrum linear probe takes no target transform")
        self.kind, self.transform = kind, transform
        #: classification: number of classes (labels 0..n-1); default from the labels seen in fit()
        self.n_classes = n_classes
        self.model: Any | None = None  # the fitted sklearn pipeline (scaler, estimator)
        self.param: float | None = None
        self.val_curve: dict[float, float] = {}
        self.t_range: tuple[float, float] | None = None

    def _f(self, y):
        return np.log(y) if self.transform == "log" else np.asarray(y, float)

    def _finv(self, t):
        # linear extrapolation far outside the data can overflow exp(): keep predictions within
        # the range of the (transformed) training targets
        t = np.clip(t, *self.t_range) if self.t_range is not None else t
        return np.exp(t) if self.transform == "log" else t

    def _make(self, value: float):
        from sklearn.linear_model import LogisticRegression, Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if self.kind in ("regression", "spectrum"):  # spectrum: one ridge per bin, clipped at 0
            return make_pipeline(StandardScaler(), Ridge(alpha=value))
        return make_pipeline(StandardScaler(), LogisticRegression(C=value, max_iter=2000))

    def fit(self, x_train, y_train, x_val, y_val, grid: Sequence[float]) -> LinearProbe:
        if (
            self.kind == "regression"
            and self.transform == "log"
            and (np.asarray(y_train) <= 0).any()
        ):
            raise ConfigError("regression transform 'log' needs positive targets")
        if self.kind == "regression":
            t = self._f(y_train)
            self.t_range = (float(np.min(t)), float(np.max(t)))
        else:
            seen = int(max(np.max(y) for y in (y_train, y_val) if len(y))) + 1
            if self.n_classes is not None and seen > self.n_classes:
                raise ConfigError(
                    f"LinearProbe: label {seen - 1} outside 0..{self.n_classes - 1} (n_classes={self.n_classes})"
                )
            self.n_classes = self.n_classes or seen
        best: tuple[float, float, Any] | None = None
        for value in grid:
            model = self._make(float(value))
            model.fit(x_train, self._f(y_train) if self.kind == "regression" else y_train)
            if len(x_val):
                if self.kind == "spectrum":
                    err = float(np.abs(np.clip(model.predict(x_val), 0, None) - y_val).mean())
                elif self.kind == "regression":
                    err = float(np.abs(self._finv(model.predict(x_val)) - y_val).mean())
                else:
                    err = classification_scores(
                        y_val, model.predict(x_val), self._proba(model, x_val)
                    )["log_loss"]
            else:
                err = 0.0  # nothing to choose on: the first value of the grid
            self.val_curve[float(value)] = err
            if best is None or err < best[0]:
                best = (err, float(value), model)
        if best is None:
            raise ConfigError("LinearProbe.fit: the regularisation grid is empty")
        _, self.param, self.model = best
        return self

    def _fitted(self) -> Any:
        if self.model is None:
            raise RuntimeError("LinearProbe: call fit() first")
        return self.model

    def _proba(self, model, x):
        p = np.zeros((len(x), self.n_classes))
        p[:, model.classes_.astype(int)] = model.predict_proba(x)
        return p

    def predict(self, x) -> dict[str, np.ndarray]:
        model = self._fitted()
        if self.kind == "spectrum":
            return {"prediction": np.clip(model.predict(x), 0, None)}
        if self.kind == "regression":
            return {"prediction": self._finv(model.predict(x))}
        proba = self._proba(model, x)
        return {"prediction": proba.argmax(1), "proba": proba}

    def to_dict(self) -> dict[str, Any]:
        model = self._fitted()
        scaler, est = model[0], model[-1]
        return {
            "kind": self.kind,
            "transform": self.transform,
            "estimator": type(est).__name__,
            "C" if self.kind == "classification" else "alpha": self.param,
            "validation_curve": {str(k): v for k, v in self.val_curve.items()},
            "scaler_mean": scaler.mean_.tolist(),
            "scaler_scale": scaler.scale_.tolist(),
            "coef": np.asarray(est.coef_).tolist(),
            "intercept": np.atleast_1d(est.intercept_).tolist(),
            "classes": getattr(est, "classes_", np.zeros(0)).tolist(),
        }
