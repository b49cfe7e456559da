"""Evaluation: the fine-tuning workflow (train, predict, score, report), the linear probe,
metrics, the matbench protocol, learning curves and per-group scores."""

from ._curves import learning_curves, summarize_curves
from ._finetune import finetune, train_and_predict
from ._matbench import evaluate_matbench, matbench_record
from ._metrics import baseline_scores, classification_scores, regression_scores, score
from ._probe import LinearProbe

__all__ = [
    "finetune",
    "train_and_predict",
    "LinearProbe",
    "score",
    "baseline_scores",
    "regression_scores",
    "classification_scores",
    "evaluate_matbench",
    "matbench_record",
    "learning_curves",
    "summarize_curves",
]
