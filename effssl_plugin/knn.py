"""solo-learn's weighted kNN classifier, made to work with torchmetrics >= 1.0."""

from __future__ import annotations

from typing import Any

from solo.utils.knn import WeightedKNNClassifier
from torchmetrics import Metric

__all__ = ["WeightedKNNClassifierTM1"]


class WeightedKNNClassifierTM1(WeightedKNNClassifier):
    """solo-learn's :class:`WeightedKNNClassifier` (same math, same arguments) for torchmetrics 1.x.

    Three differences from solo-learn's class, which targets torchmetrics < 0.12:

    * no ``compute_on_step`` argument (torchmetrics >= 1.0 rejects it);
    * calling the metric only accumulates features (``update``); it never runs the kNN on
      a training batch as torchmetrics 1.x's ``forward`` would;
    * the stored features are cleared after every ``compute``, also under DDP, where
      torchmetrics restores the pre-sync state after ``compute`` and would otherwise keep
      every epoch's features.
    """

    def __init__(
        self,
        k: int = 20,
        T: float = 0.07,
        max_distance_matrix_size: int = int(5e6),
        distance_fx: str = "cosine",
        epsilon: float = 0.00001,
        dist_sync_on_step: bool = False,
    ) -> None:
        Metric.__init__(self, dist_sync_on_step=dist_sync_on_step)
        self.k = k
        self.T = T
        self.max_distance_matrix_size = max_distance_matrix_size
        self.distance_fx = distance_fx
        self.epsilon = epsilon
        self.add_state("train_features", default=[], persistent=False)
        self.add_state("train_targets", default=[], persistent=False)
        self.add_state("test_features", default=[], persistent=False)
        self.add_state("test_targets", default=[], persistent=False)

    def forward(self, *args: Any, **kwargs: Any) -> None:
        self.update(*args, **kwargs)

    def reset(self) -> None:
        # solo-learn's compute() calls reset() while torchmetrics holds the synced state;
        # clearing is done after compute (below) instead
        if not getattr(self, "_inside_compute", False):
            super().reset()

    def _wrap_compute(self, compute):  # noqa: ANN001, ANN202 - torchmetrics' hook
        wrapped = super()._wrap_compute(compute)

        def compute_then_clear(*args: Any, **kwargs: Any):  # noqa: ANN202
            self._inside_compute = True
            try:
                value = wrapped(*args, **kwargs)
            finally:
                self._inside_compute = False
            super(WeightedKNNClassifierTM1, self).reset()
            return value

        return compute_then_clear
