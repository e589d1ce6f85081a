"""solo-learn's weighted kNN classifier, fixed for torchmetrics 1.x, validation subsets, mixed
precision, bounded memory and DDP."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from solo.utils.knn import WeightedKNNClassifier
from torch import Tensor
from torchmetrics import Metric

from effssl_plugin.distributed import all_gather_cat, is_distributed, world_size

__all__ = ["WeightedKNNClassifierTM1", "validation_follows_epoch"]


class WeightedKNNClassifierTM1(WeightedKNNClassifier):
    """solo-learn's :class:`WeightedKNNClassifier` (same math, same arguments), working with
    torchmetrics 0.11 (solo-learn's pin) and 1.x alike.

    For a test feature ``q`` and its ``k`` nearest training features ``x_j`` (labels
    ``y_j``), class ``c`` scores ``sum_{j: y_j = c} w_j`` with ``w_j = exp(cos(q, x_j) / T)``
    (cosine) or ``1 / (||q - x_j|| + epsilon)`` (euclidean); predictions rank the scores.

    Differences from solo-learn's class, which targets torchmetrics < 0.12:

    * no ``compute_on_step`` argument (torchmetrics >= 1.0 rejects it);
    * calling the metric only accumulates features (``update``); it never runs the kNN on
      a training batch as torchmetrics 1.x's ``forward`` would;
    * the kNN runs in float32 whatever the features' dtype: under 16-mixed the backbone's
      float16 features made ``exp(sim / 0.07)`` overflow to inf for ``sim > 0.776``, and
      the votes tie;
    * the stored features take bounded memory: cosine features are normalised (float32)
      and stored in ``feature_dtype`` (float16: unit-norm rows cannot overflow, about 3
      significant digits), euclidean ones in float32 (their scale matters); features on a
      GPU are copied to pinned host memory without waiting, so none stay on the device;
    * under DDP each rank keeps its own training features: the test features are gathered
      (small), every rank finds the ``k`` nearest among its own training features, and
      only those ``k`` candidates per test feature are gathered and merged (torchmetrics'
      own sync would gather every rank's training features on every rank);
    * the stored features are cleared after every ``compute``; with
      :meth:`start_training_epoch` called at the start of each training epoch, training
      features are collected only in epochs that a validation follows and never kept
      beyond one epoch (solo-learn's kept every step's, forever when no validation ran);
    * the number of classes comes from the train and test labels together (solo-learn
      counts the distinct test labels only, and crashes when a validation subset lacks
      some classes);
    * training features of unlabelled images (target -1) are dropped when the kNN runs, not
      by the caller at every step: a boolean mask there would stall a CUDA stream.
    """

    #: training features moved to the compute device at a time, in float32
    train_chunk_rows: int = 16384
    #: test features whose candidates are merged across ranks at a time
    merge_chunk_rows: int = 4096

    def __init__(
        self,
        k: int = 20,
        T: float = 0.07,
        max_distance_matrix_size: int = int(5e6),
        distance_fx: str = "cosine",
        epsilon: float = 0.00001,
        dist_sync_on_step: bool = False,
        feature_dtype: torch.dtype = torch.float16,
    ) -> None:
        Metric.__init__(self, dist_sync_on_step=dist_sync_on_step)
        self.compute_with_cache = False  # torchmetrics >= 1.0; compute clears the features
        self.k = k
        self.T = T
        self.max_distance_matrix_size = max_distance_matrix_size
        self.distance_fx = distance_fx
        self.epsilon = epsilon
        self.feature_dtype = feature_dtype if distance_fx == "cosine" else torch.float32
        #: whether ``update`` stores training features (:meth:`start_training_epoch`)
        self.collect_train = True
        self.add_state("train_features", default=[], persistent=False)
        self.add_state("train_targets", default=[], persistent=False)
        self.add_state("test_features", default=[], persistent=False)
        self.add_state("test_targets", default=[], persistent=False)

    def update(
        self,
        train_features: Tensor | None = None,
        train_targets: Tensor | None = None,
        test_features: Tensor | None = None,
        test_targets: Tensor | None = None,
    ) -> None:
        """Stores a batch of train and/or test features with their targets (see the class)."""
        for features, targets, kind in (
            (train_features, train_targets, "train"),
            (test_features, test_targets, "test"),
        ):
            if (features is None) != (targets is None):
                raise ValueError(f"{kind}_features and {kind}_targets go together")
            if features is None or (kind == "train" and not self.collect_train):
                continue
            if features.shape[0] != targets.shape[0]:
                raise ValueError(f"{features.shape[0]} {kind} features, {targets.shape[0]} targets")
            getattr(self, f"{kind}_features").append(_to_host(self._prepare(features)))
            getattr(self, f"{kind}_targets").append(_to_host(targets.detach().long()))

    def start_training_epoch(self, trainer: Any) -> None:
        """Called when a training epoch starts: training features are collected in it only
        if a validation follows (:func:`validation_follows_epoch`); features that no
        validation used are dropped (unless validation is counted in steps across epochs,
        ``check_val_every_n_epoch=None``)."""
        self.collect_train = validation_follows_epoch(trainer)
        if trainer.check_val_every_n_epoch is not None:
            self.reset()

    def _prepare(self, features: Tensor) -> Tensor:
        """The stored form: normalised in float32 then ``feature_dtype`` (cosine), float32."""
        features = features.detach().float()
        if self.distance_fx == "cosine":
            features = F.normalize(features, dim=1)
        return features.to(self.feature_dtype)

    def sync(self, *args: Any, **kwargs: Any) -> None:
        """No torchmetrics gather: :meth:`compute` runs its own collectives (see the class)."""

    def compute(self) -> tuple[float, float]:
        """Weighted kNN top-1 / top-5 (%) of the stored features (under DDP: of every rank's),
        which it then clears. Returns ``(-1, -1)`` without train or test features."""
        accuracy = self._weighted_knn_accuracy()
        self.reset()
        return accuracy

    @torch.no_grad()
    def _weighted_knn_accuracy(self) -> tuple[float, float]:
        device = self.device
        if device.type == "cuda":  # the host copies queued by update() are complete
            torch.cuda.current_stream(device).synchronize()
        num_train = sum(int((y >= 0).sum()) for y in self.train_targets)
        dim = next((int(x.shape[1]) for x in self.train_features + self.test_features), 0)
        num_test = sum(int(y.numel()) for y in self.test_targets)
        top_label = max(
            (int(y.max()) for y in self.train_targets + self.test_targets if y.numel()), default=-1
        )
        info = torch.tensor([[num_train, num_test, dim, top_label]], device=device)
        info = all_gather_cat(info).tolist()  # every rank decides alike (no hung collective)
        total_train, total_test = sum(r[0] for r in info), sum(r[1] for r in info)
        if not total_train or not total_test:
            return -1, -1
        dim, num_classes = max(r[2] for r in info), max(r[3] for r in info) + 1
        k = min(self.k, total_train)

        test_x = self._cat(self.test_features, (0, dim), self.feature_dtype, device)
        test_y = self._cat(self.test_targets, (0,), torch.long, device)
        test_x, test_y = all_gather_cat(test_x), all_gather_cat(test_y)
        best, best_y = self._local_top_k(test_x, k, device)
        if is_distributed():
            best, best_y = self._merge_across_ranks(best, best_y, k)
        if self.distance_fx == "cosine":
            weights = (best / self.T).exp()  # float32: at most exp(1 / T); -inf pads give 0
        else:
            weights = best.clamp_min(0)
        votes = torch.zeros(test_y.numel(), num_classes, device=device)
        votes.scatter_add_(1, best_y, weights)
        preds = votes.argsort(dim=1, descending=True)
        correct = preds.eq(test_y.view(-1, 1))
        top1 = int(correct[:, :1].sum())
        top5 = int(correct[:, : min(5, k, num_classes)].sum())
        return top1 * 100.0 / test_y.numel(), top5 * 100.0 / test_y.numel()

    @staticmethod
    def _cat(
        parts: list[Tensor], empty: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        if not parts:
            return torch.empty(empty, dtype=dtype, device=device)
        return torch.cat([p.to(device, non_blocking=True) for p in parts])

    def _train_chunks(self, device: torch.device) -> Any:
        """This rank's labelled training features in float32 chunks on ``device``, with
        their labels."""
        group: list[int] = []
        rows = 0
        for i, y in enumerate(self.train_targets):
            group.append(i)
            rows += y.numel()
            if rows >= self.train_chunk_rows or i == len(self.train_targets) - 1:
                x = torch.cat([self.train_features[j].to(device, non_blocking=True) for j in group])
                y = torch.cat([self.train_targets[j].to(device, non_blocking=True) for j in group])
                keep = y >= 0
                if bool(keep.any()):
                    yield x[keep].float(), y[keep]
                group, rows = [], 0

    def _local_top_k(self, test_x: Tensor, k: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """For every test feature, the ``k`` largest similarities (float32) to this rank's
        training features and their labels; ``-inf`` pads where the rank holds fewer."""
        num_test = test_x.shape[0]
        best = torch.full((num_test, k), float("-inf"), device=device)
        best_y = torch.zeros((num_test, k), dtype=torch.long, device=device)
        for train_x, train_y in self._train_chunks(device):
            step = max(1, self.max_distance_matrix_size // train_x.shape[0])
            for start in range(0, num_test, step):
                rows = slice(start, start + step)
                query = test_x[rows].float()
                if self.distance_fx == "cosine":
                    sims = query @ train_x.t()
                elif self.distance_fx == "euclidean":
                    sims = 1 / (torch.cdist(query, train_x) + self.epsilon)
                else:
                    raise NotImplementedError(self.distance_fx)
                labels = train_y.expand(query.shape[0], -1)
                candidates = torch.cat([best[rows], sims], dim=1)
                top, idx = candidates.topk(k, dim=1)
                best[rows] = top
                best_y[rows] = torch.cat([best_y[rows], labels], dim=1).gather(1, idx)
        return best, best_y

    def _merge_across_ranks(self, best: Tensor, best_y: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The ``k`` best of every rank's ``k`` candidates, per test feature: the global
        ``k`` nearest training features (every rank holds the same gathered test set)."""
        n = world_size()
        for start in range(0, best.shape[0], self.merge_chunk_rows):
            rows = slice(start, start + self.merge_chunk_rows)
            merged = []
            for local in (best[rows].contiguous(), best_y[rows].contiguous()):
                parts = [torch.empty_like(local) for _ in range(n)]
                dist.all_gather(parts, local)
                merged.append(torch.cat(parts, dim=1))
            top, idx = merged[0].topk(k, dim=1)
            best[rows], best_y[rows] = top, merged[1].gather(1, idx)
        return best, best_y

    def forward(self, *args: Any, **kwargs: Any) -> None:
        self.update(*args, **kwargs)


def _to_host(tensor: Tensor) -> Tensor:
    """A GPU tensor copied to pinned host memory without waiting for the device (read it only
    after a sync: :meth:`WeightedKNNClassifierTM1.compute` makes one); else ``tensor``."""
    if tensor.device.type != "cuda":
        return tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    return host.copy_(tensor, non_blocking=True)


def validation_follows_epoch(trainer: Any) -> bool:
    """Whether Lightning's fit loop will validate during or after the current training epoch,
    as it decides: validation enabled (a val dataloader, a ``validation_step``,
    ``limit_val_batches > 0``), the epoch a multiple of ``check_val_every_n_epoch``, and, once
    the val loader is set up, at least one val batch. Only then do kNN training features
    have a use."""
    if not trainer.enable_validation:
        return False
    every = trainer.check_val_every_n_epoch
    if every is not None and (trainer.current_epoch + 1) % every:
        return False
    batches = trainer.num_val_batches
    return not batches or sum(batches) > 0
