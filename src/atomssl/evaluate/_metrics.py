"""Scores of predictions: matbench's regression scores, classification scores, spectrum
scores, and the scores of the trivial predictor fitted on the training targets."""

from __future__ import annotations

import math

import numpy as np


def regression_scores(y_true, y_pred) -> dict[str, float]:
    """matbench's regression scores: mae, rmse, mape, max_error (scikit-learn)."""
    from sklearn import metrics

    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    return {
        "mae": float(metrics.mean_absolute_error(y_true, y_pred)),
        "rmse": float(math.sqrt(metrics.mean_squared_error(y_true, y_pred))),
        "mape": float(metrics.mean_absolute_percentage_error(y_true, y_pred)),
        "max_error": float(metrics.max_error(y_true, y_pred)),
    }


def classification_scores(y_true, y_pred, proba=None) -> dict[str, float]:
    """accuracy, balanced accuracy, macro F1, and log loss when class probabilities are given."""
    from sklearn import metrics

    out = {
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
        "f1_macro": float(metrics.f1_score(y_true, y_pred, average="macro")),
    }
    if proba is not None:
        out["log_loss"] = float(
            metrics.log_loss(y_true, np.clip(proba, 1e-12, 1), labels=list(range(proba.shape[1])))
        )
    return out


def score(kind: str, y_true, pred: dict[str, np.ndarray]) -> dict[str, float]:
    """The scores of ``kind`` (regression, classification or spectrum) for predictions ``pred``."""
    if kind == "spectrum":
        from ..train._spectrum import spectrum_scores

        return spectrum_scores(y_true, pred["prediction"])
    if kind == "regression":
        return regression_scores(y_true, pred["prediction"])
    return classification_scores(y_true, pred["prediction"], pred.get("proba"))


def baseline_scores(kind: str, y_train, y_true) -> dict[str, float]:
    """Scores of the trivial predictor fitted on training targets (mean / majority class)."""
    y_train = np.asarray(y_train)
    if kind == "spectrum":
        from ..train._spectrum import spectrum_baseline_scores

        return spectrum_baseline_scores(y_train, y_true)
    if kind == "regression":
        return regression_scores(y_true, np.full(len(y_true), float(np.mean(y_train))))
    majority = int(np.bincount(y_train.astype(np.int64)).argmax())
    return classification_scores(y_true, np.full(len(y_true), majority))
