"""Progress of multi-run loops (matbench folds, learning-curve runs) on one bar: a Lightning
callback that writes the epoch and validation score of the run in progress beside the bar's
count, so a loop of long runs shows life with Lightning's own per-epoch bar off."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback

from ..utils._progress import show


class EpochReport(Callback):
    """After every training epoch (its validation done): ``PREFIX: epoch E/M, val mae X`` on
    ``bar`` (a :func:`atomssl.utils.progress_bar`)."""

    KEYS = ("val/mae", "val/loss", "train/loss_epoch", "train/loss")

    def __init__(self, bar, prefix: str = "") -> None:
        self.bar, self.prefix = bar, prefix

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        text = f"epoch {trainer.current_epoch + 1}"
        if trainer.max_epochs and trainer.max_epochs > 0:
            text += f"/{trainer.max_epochs}"
        metrics = trainer.callback_metrics
        key = next((k for k in self.KEYS if k in metrics), None)
        if key is not None:
            text += f", {key.replace('/', ' ').replace('_epoch', '')} {float(metrics[key]):.4g}"
        show(self.bar, f"{self.prefix}: {text}" if self.prefix else text)
