"""solo-learn's weighted kNN classifier, fixed for torchmetrics 1.x and for validation subsets."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from solo.utils.knn import WeightedKNNClassifier
from torchmetrics import Metric

__all__ = ["WeightedKNNClassifierTM1"]


class WeightedKNNClassifierTM1(WeightedKNNClassifier):
    """solo-learn's :class:`WeightedKNNClassifier` (same math, same arguments), working with
    torchmetrics 0.11 (solo-learn's pin) and 1.x alike.

    Four differences from solo-learn's class, which targets torchmetrics < 0.12:

    * no ``compute_on_step`` argument (torchmetrics >= 1.0 rejects it);
    * calling the metric only accumulates features (``update``); it never runs the kNN on
      a training batch as torchmetrics 1.x's ``forward`` would;
    * the stored features are cleared after every ``compute`` (:meth:`Metric.reset` at its
      end), also under DDP: ``reset`` drops the gathered features and the local copies that
      torchmetrics would otherwise restore after ``compute``, keeping every epoch's features;
    * the number of classes comes from the train and test labels together (solo-learn
      counts the distinct test labels only, and crashes when a validation subset lacks
      some classes);
    * training features of unlabelled images (target -1) are dropped when the kNN runs, not
      by the caller at every step: a boolean mask there would stall a CUDA stream.
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

    def compute(self) -> tuple[float, float]:
        """Weighted kNN top-1 / top-5 (%) of the stored (under DDP: gathered) features, which
        it then clears. Returns ``(-1, -1)`` without train or test features."""
        accuracy = self._weighted_knn_accuracy()
        self.reset()
        return accuracy

    @torch.no_grad()
    def _weighted_knn_accuracy(self) -> tuple[float, float]:
        """As solo-learn's ``compute``: cosine weights ``exp(sim / T)`` or inverse euclidean
        distance, summed per class over the k nearest train features."""
        if not self.train_features or not self.test_features:
            return -1, -1
        train_x, train_y = torch.cat(self.train_features), torch.cat(self.train_targets)
        labelled = train_y >= 0
        train_x, train_y = train_x[labelled], train_y[labelled]
        if not train_y.numel():
            return -1, -1
        test_x, test_y = torch.cat(self.test_features), torch.cat(self.test_targets)
        if self.distance_fx == "cosine":
            train_x, test_x = F.normalize(train_x), F.normalize(test_x)
        num_classes = int(torch.cat([train_y, test_y]).max()) + 1
        k = min(self.k, train_y.numel())
        chunk = max(1, min(self.max_distance_matrix_size // train_y.numel(), test_y.numel()))
        top1 = top5 = 0
        for start in range(0, test_y.numel(), chunk):
            feats, targets = test_x[start : start + chunk], test_y[start : start + chunk]
            if self.distance_fx == "cosine":
                sims = feats @ train_x.t()
            elif self.distance_fx == "euclidean":
                sims = 1 / (torch.cdist(feats, train_x) + self.epsilon)
            else:
                raise NotImplementedError(self.distance_fx)
            sims, idx = sims.topk(k, largest=True, sorted=True)
            if self.distance_fx == "cosine":
                sims = (sims / self.T).exp()
            votes = torch.zeros(feats.shape[0], num_classes, device=feats.device, dtype=sims.dtype)
            votes.scatter_add_(1, train_y[idx], sims)
            preds = votes.argsort(dim=1, descending=True)
            correct = preds.eq(targets.view(-1, 1))
            top1 += int(correct[:, :1].sum())
            top5 += int(correct[:, : min(5, k, num_classes)].sum())
        return top1 * 100.0 / test_y.numel(), top5 * 100.0 / test_y.numel()

    def forward(self, *args: Any, **kwargs: Any) -> None:
        self.update(*args, **kwargs)
