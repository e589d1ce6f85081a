"""The EffSSL memory bank: one unit-norm row per training image, in pure PyTorch.

The bank ``W`` (``N x D``) is a persistent buffer, stored in float32, float16 or bfloat16;
all arithmetic is float32. Two update rules are provided:

* NPID's EMA (:meth:`MemoryBank.update_ema`)::

      w_i <- normalize(m * w_i + (1 - m) * mean_{j: idx_j = i} z_j)

* the paper's gradient-following correction (:meth:`MemoryBank.update_grad`)::

      Delta = (Y - P)^T Z                       (= -tau * B * dL_CE / dW_C)
      w_c   <- normalize(w_c + eta * Delta_c)   for every column c,  eta = (1 - m) / m

When ``torch.distributed`` is initialised every update is a collective that leaves all
replicas bit-identical: the EMA gathers indexes and features from all ranks, the gradient
rule all-reduces ``Delta`` over columns that every rank chose identically.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from effssl_plugin.distributed import (
    all_gather_cat,
    all_reduce_min_,
    all_reduce_sum_,
    is_distributed,
)

__all__ = [
    "MemoryBank",
    "BANK_DTYPES",
    "ce_bank_delta",
    "matmul_as",
    "soft_targets",
    "negatives_generator",
]

BANK_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def matmul_as(a: Tensor, b: Tensor, dtype: torch.dtype) -> Tensor:
    """``a @ b`` with both operands cast to ``dtype``, whatever autocast is active.

    Autocast would recast an explicit float32 or bfloat16 product to its own dtype; here it
    is off for the product, so ``dtype`` holds (a half-precision GEMM still accumulates in
    float32). Autograd differentiates the product in ``dtype`` too.
    """
    with torch.autocast(a.device.type, enabled=False):
        return a.to(dtype) @ b.to(dtype)


def _mean_over_duplicates(indexes: Tensor, values: Tensor) -> Tensor:
    """For each row ``i`` of ``values``, the mean of the rows ``j`` with ``indexes[j] ==
    indexes[i]``: ``(E @ values) / E.sum(1)`` with ``E = [indexes_i == indexes_j]``.

    Without duplicates ``E`` is the identity and the result is ``values`` bit for bit. A
    matmul, not ``torch.unique`` (whose output size needs a host sync on a GPU) nor atomic
    ``index_add_`` (whose sums differ between ranks): deterministic, and the ``B x B x D``
    product is small beside the bank's ``B x |C| x D`` ones.
    """
    same = (indexes.view(-1, 1) == indexes.view(1, -1)).float()
    return matmul_as(same, values, torch.float32) / same.sum(dim=1, keepdim=True)


def _finite_flag(*tensors: Tensor) -> Tensor:
    """0-d bool: every entry of ``tensors`` is finite, on the device (no host sync).

    Read from one sum per tensor, not an elementwise ``isfinite`` of each: a NaN or inf entry
    makes the sum NaN or inf, and the bank's inputs (unit-norm features, probabilities,
    targets) are bounded, so their sums cannot overflow. Under ``torch.distributed`` the flag
    is the minimum over ranks, so every replica takes the same decision.
    """
    flag = torch.stack([t.float().sum() for t in tensors]).isfinite().all().float()
    return all_reduce_min_(flag) > 0


def ce_bank_delta(
    z: Tensor, probs: Tensor, targets: Tensor, matmul_dtype: torch.dtype | None = None
) -> Tensor:
    """``Delta = (Y - P)^T Z``: minus ``tau * B`` times the gradient of the batch-mean CE.

    For ``L = mean_i CE(z_i W_C^T / tau, y_i)`` with soft targets ``Y`` and
    ``P = softmax(Z W_C^T / tau)``: ``dL/dW_C = (P - Y)^T Z / (tau * B)``.

    Args:
        z: ``B x D`` features (normalised).
        probs: ``B x |C|`` softmax probabilities ``P``.
        targets: ``B x |C|`` target weights ``Y`` (rows sum to 1).
        matmul_dtype: the dtype of the product (e.g. bfloat16, accumulated in float32 by the
            GEMM), also under autocast (:func:`matmul_as`); ``Y - P`` is formed in float32.
            Default float32.

    Returns:
        ``|C| x D`` tensor in ``matmul_dtype``: adding it to float32 rows promotes it exactly,
        with no separate conversion pass.
    """
    dtype = matmul_dtype or torch.float32
    residual = targets.float() - probs.float()
    return matmul_as(residual.t(), z.detach(), dtype)


def soft_targets(
    pos: Tensor, num_cols: int, pos_b: Tensor | None = None, lam: float = 1.0
) -> Tensor:
    """The CE's target weights ``Y`` (``B x num_cols``, float32): ``lam`` at column
    ``pos[i]`` plus, with CutMix, ``1 - lam`` at the partner's column ``pos_b[i]``."""
    like = {"dtype": torch.float32, "device": pos.device}
    y = torch.zeros(pos.numel(), num_cols, **like).scatter_(1, pos.view(-1, 1), lam)
    if pos_b is not None:
        y.scatter_add_(1, pos_b.view(-1, 1), torch.full((pos.numel(), 1), 1 - lam, **like))
    return y


def negatives_generator(
    seed: int, step: int, device: torch.device | str = "cpu"
) -> torch.Generator:
    """The sampler of training step ``step``'s negatives, a function of ``(seed, step)`` only:
    every rank draws the same columns, and a resumed run draws what an uninterrupted one
    would, with no sampler state to save. The two integers are mixed by SplitMix64's
    finaliser, so neighbouring steps get unrelated seeds."""
    mask = (1 << 64) - 1
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(step)) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return torch.Generator(device=device).manual_seed(x ^ (x >> 31))


def _to_device_async(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device``; a host-to-GPU copy goes through pinned memory, so it is
    queued on the stream without waiting for it."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


class MemoryBank(nn.Module):
    """``N x D`` bank of unit-norm rows, indexed by dataset index.

    Buffers (all persistent, so they travel in checkpoints):
        weight: the rows, in ``dtype``.
        filled: whether the bank has been initialised (calibrated or randomised).
        last_write: for each row, the value of ``num_updates`` right after it was last
            written (``-1`` = never; rows filled before training get 0).
        num_updates: the number of updates applied so far.
    """

    weight: Tensor
    filled: Tensor
    last_write: Tensor
    num_updates: Tensor

    def __init__(self, num_samples: int, dim: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if int(num_samples) <= 0:
            raise ValueError(f"num_samples must be > 0, got {num_samples}")
        if int(dim) <= 0:
            raise ValueError(f"dim must be > 0, got {dim}")
        if dtype not in BANK_DTYPES.values():
            raise ValueError(f"dtype must be one of {list(BANK_DTYPES)}, got {dtype}")
        self.register_buffer("weight", torch.zeros(int(num_samples), int(dim), dtype=dtype))
        self.register_buffer("filled", torch.zeros((), dtype=torch.bool))
        self.register_buffer("last_write", torch.full((int(num_samples),), -1, dtype=torch.long))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @property
    def num_samples(self) -> int:
        return self.weight.shape[0]

    @property
    def dim(self) -> int:
        return self.weight.shape[1]

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, dim={self.dim}, dtype={self.weight.dtype}"

    # ------------------------------------------------------------------ writes
    def _check_indexes(self, indexes: Tensor, device: torch.device | None = None) -> Tensor:
        """``indexes`` as a flat long tensor on ``device`` (default: the bank's), checked to lie
        in ``[0, num_samples)`` without a host sync: ``torch._assert_async`` checks at once on
        the CPU and, on a GPU, fails a later kernel instead of stalling the stream."""
        indexes = indexes.to(device=device or self.weight.device, dtype=torch.long).view(-1)
        if indexes.numel():
            low, high = torch.aminmax(indexes)
            in_range = (low >= 0) & (high < self.num_samples)
            try:
                torch._assert_async(in_range, "bank index out of range")
            except RuntimeError:  # CPU: raised here, so the values can be named
                raise IndexError(
                    f"bank index out of range: got [{int(low)}, {int(high)}], "
                    f"the bank has {self.num_samples} rows"
                ) from None
        return indexes

    @torch.no_grad()
    def _write_(self, rows: Tensor | None, values: Tensor, keep: Tensor | None = None) -> None:
        """``W[rows] <- normalize(values)``; ``rows=None`` means every row in order.

        ``values`` is float32 and is normalised in place. ``keep`` (a 0-d bool on the
        device, decided without a host sync) means the step was not finite: the caller then
        passes the rows' current values, which are written back bit for bit (divided by 1,
        not renormalised), so a non-finite step never reaches the bank and the method stops
        at its next host check.
        """
        values = values.float()
        norm = values.norm(dim=1, keepdim=True).clamp_min_(1e-12)
        if keep is not None:
            norm = torch.where(keep, 1.0, norm)
        values = values.div_(norm).to(self.weight.dtype)
        if rows is None:
            if values.data_ptr() != self.weight.data_ptr():  # else updated in place
                self.weight.copy_(values)
            self.last_write.fill_(self.num_updates)  # a 0-d tensor: no host read
        else:
            self.weight[rows] = values
            self.last_write[rows] = self.num_updates

    @torch.no_grad()
    def fill_(self, indexes: Tensor, z: Tensor, sync: bool = True) -> None:
        """Writes ``W[i] = normalize(mean of z_j with idx_j = i)`` (calibration pass).

        Under ``torch.distributed`` (and ``sync=True``) the rows of all ranks are gathered
        first, so every replica receives every rank's features.
        """
        indexes = self._check_indexes(indexes)
        z = z.detach().float()
        if sync and is_distributed():
            indexes, z = all_gather_cat(indexes), all_gather_cat(z)
        self._write_(indexes, _mean_over_duplicates(indexes, z))

    @torch.no_grad()
    def reset_random_(self, generator: torch.Generator | None = None) -> None:
        """Fills every row with a random unit vector and marks the bank filled.

        Under ``torch.distributed`` rank 0's rows are broadcast so replicas agree.
        """
        device = generator.device if generator is not None else self.weight.device
        rows = torch.randn(self.num_samples, self.dim, generator=generator, device=device)
        self._write_(None, rows.to(self.weight.device))
        if is_distributed():
            torch.distributed.broadcast(self.weight, src=0)
        self.filled.fill_(True)

    def mark_filled_(self) -> None:
        self.filled.fill_(True)

    # ----------------------------------------------------------------- columns
    @torch.no_grad()
    def columns(
        self,
        batch_indexes: Tensor,
        num_negatives: int,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The logit columns for one step.

        Returns ``(cols, pos)``: ``cols`` lists the batch's own rows first (deduplicated,
        ascending), then ``num_negatives`` rows drawn uniformly without replacement from
        the rows not in the batch (ascending); ``num_negatives < 0`` takes every other row.
        ``pos[i]`` is the column of sample ``i``. Deterministic for a given generator.
        Computed on the device of ``batch_indexes``: meant for the host, since
        ``torch.unique`` sizes its output there (on a GPU, a sync); the device path is
        :meth:`columns_static`.

        Raises:
            ValueError: when more negatives are asked for than rows outside the batch.
        """
        indexes = self._check_indexes(batch_indexes, batch_indexes.device)
        uniq, pos = torch.unique(indexes, sorted=True, return_inverse=True)
        num_free = self.num_samples - uniq.numel()
        if num_negatives < 0 or num_negatives == num_free:
            free = torch.ones(self.num_samples, dtype=torch.bool, device=uniq.device)
            free[uniq] = False
            negatives = free.nonzero().view(-1)
        elif num_negatives > num_free:
            raise ValueError(
                f"num_negatives={num_negatives} is more than the {num_free} bank rows outside "
                f"the batch (bank rows: {self.num_samples}, distinct batch rows: {uniq.numel()}); "
                "use a smaller value or -1 for all rows"
            )
        else:
            device = generator.device if generator is not None else uniq.device
            draw = torch.randperm(num_free, generator=generator, device=device)[:num_negatives]
            draw = draw.to(uniq.device).sort().values
            # the r-th free row is r + #{j : uniq[j] - j <= r}
            shift = uniq - torch.arange(uniq.numel(), device=uniq.device)
            negatives = draw + torch.searchsorted(shift, draw, right=True)
        return torch.cat([uniq, negatives]), pos

    @torch.no_grad()
    def columns_static(
        self,
        batch_indexes: Tensor,
        num_negatives: int,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """:meth:`columns` with ``G + num_negatives`` columns whatever the ``G`` batch indexes
        repeat, so that no output size depends on their values: on a GPU nothing waits for
        the device (``torch.unique`` sizes its output on the host).

        ``cols`` lists the batch's distinct rows (ascending), then one more row outside the
        batch for each repeated index, then ``num_negatives`` rows drawn uniformly without
        replacement from the first ``N - G`` rows outside the batch (ascending);
        ``num_negatives < 0`` takes every row (``N`` columns). ``pos[i]`` is sample ``i``'s
        column. For a batch without repeats it equals :meth:`columns` (same generator),
        column for column. The draw runs on ``generator``'s device (the host for a CPU
        generator) and is copied to the batch's device without waiting.

        The dedup is sort-based: with ``s`` the sorted indexes, ``first_j = [s_j != s_{j-1}]``,
        ``pos = cumsum(first) - 1`` (scattered back) and, with ``u`` distinct rows in the
        batch, the ``r``-th row outside it is ``r + #{j < u : uniq_j - j <= r}``; the repeat
        slots take the free rows of rank ``N - G .. N - u - 1``, which no draw reaches.

        Raises:
            ValueError: when more negatives are asked for than ``N - G``.
        """
        indexes = self._check_indexes(batch_indexes, batch_indexes.device)
        device, g, n = indexes.device, indexes.numel(), self.num_samples
        k = n - g if num_negatives < 0 else num_negatives
        if k > n - g:
            raise ValueError(
                f"num_negatives={num_negatives} is more than the {n - g} bank rows outside "
                f"a batch of {g} (bank rows: {n}); use a smaller value or -1 for all rows"
            )
        sorted_idx, order = indexes.sort(stable=True)
        first = torch.ones(g, dtype=torch.bool, device=device)
        first[1:] = sorted_idx[1:] != sorted_idx[:-1]
        group = first.long().cumsum(0) - 1  # the column of each sorted sample
        pos = torch.empty_like(group).scatter_(0, order, group)
        slots = torch.arange(g, device=device)
        # distinct rows first (ascending), then sentinels >= 2N whose shift never counts
        key = torch.where(first, sorted_idx, 2 * n + slots).sort().values
        shift = key - slots
        num_uniq = first.sum()  # 0-d, on the device

        def free_row(free_rank: Tensor) -> Tensor:
            return free_rank + torch.searchsorted(shift, free_rank, right=True)

        batch_cols = torch.where(slots < num_uniq, key, free_row(n - g + slots - num_uniq))
        gen_device = generator.device if generator is not None else device
        draw = torch.randperm(n - g, generator=generator, device=gen_device)[:k].sort().values
        negatives = free_row(_to_device_async(draw, device))
        return torch.cat([batch_cols, negatives]), pos

    @torch.no_grad()
    def batch_columns(
        self,
        indexes: Tensor,
        num_negatives: int,
        generator: torch.Generator | None = None,
        host_indexes: Tensor | None = None,
        equal_sizes: bool = False,
    ) -> tuple[Tensor | None, Tensor, Tensor]:
        """One step's columns for this rank's batch: ``(cols, weight_cols, pos)``.

        ``num_negatives < 0``: every row in index order, ``cols=None``, ``weight_cols`` the
        bank itself (no gather copy) and ``pos`` the indexes themselves. Otherwise:

        * one process with ``host_indexes`` (the same indexes on the host): :meth:`columns`
          drawn there (``generator`` on the CPU) and copied to the bank's device
          asynchronously, so the deduplication and the draw never wait for a GPU;
        * else (DDP, or indexes only on the device, as with DALI): the batch indexes of every
          rank are gathered, so that every rank draws the same :meth:`columns_static` (with
          identically seeded generators), whose sizes depend on no value. With
          ``equal_sizes`` (every rank's batch has the same size, as in training) the gather
          reads nothing on the host either.

        ``pos`` are this rank's samples' columns and ``weight_cols = weight[cols]``.
        """
        if num_negatives < 0:
            return None, self.weight, self._check_indexes(indexes)
        if host_indexes is not None and not is_distributed():
            cols, pos = self.columns(host_indexes, num_negatives, generator)
            device = self.weight.device
            cols, pos = _to_device_async(cols, device), _to_device_async(pos, device)
            return cols, self.weight.index_select(0, cols), pos
        gathered = all_gather_cat(indexes, return_offset=True, equal_sizes=equal_sizes)
        global_indexes, offset = gathered
        cols, global_pos = self.columns_static(global_indexes, num_negatives, generator)
        weight_cols = self.weight.index_select(0, cols)
        return cols, weight_cols, global_pos[offset : offset + indexes.numel()]

    # ----------------------------------------------------------------- updates
    @torch.no_grad()
    def update_ema(
        self, indexes: Tensor, z: Tensor, momentum: float = 0.5, equal_sizes: bool = False
    ) -> None:
        """NPID's rule ``w_i <- normalize(m * w_i + (1 - m) * z_i)`` for the batch rows.

        A row that appears several times moves once, toward the mean of its features.
        Under ``torch.distributed`` indexes and features are gathered from all ranks
        (``equal_sizes``: every rank passes as many rows, and the gather reads nothing on the
        host, see :func:`~effssl_plugin.distributed.all_gather_cat`). A non-finite ``z``
        leaves every row as it was.
        """
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        indexes = self._check_indexes(indexes)
        z = z.detach().float()
        if is_distributed():
            indexes = all_gather_cat(indexes, equal_sizes=equal_sizes)
            z = all_gather_cat(z, equal_sizes=equal_sizes)
        keep = ~_finite_flag(z)
        self.num_updates += 1
        rows = self.weight[indexes].float()
        new = rows.mul(momentum).add_(_mean_over_duplicates(indexes, z), alpha=1.0 - momentum)
        self._write_(indexes, torch.where(keep, rows, new), keep)

    @torch.no_grad()
    def update_grad(
        self,
        cols: Tensor | None,
        z: Tensor,
        probs: Tensor,
        targets: Tensor,
        momentum: float = 0.5,
        weight_cols: Tensor | None = None,
        matmul_dtype: torch.dtype | None = None,
    ) -> None:
        """The corrected rule that follows the CE gradient with respect to the bank.

        ``Delta = (Y - P)^T Z`` (``|C| x D``), then ``w_c <- normalize(w_c + eta * Delta_c)``
        for every column ``c`` with ``eta = (1 - m) / m``. ``Z`` is ``B x D`` normalised
        features, ``P`` the ``B x |C|`` softmax of the CE logits and ``Y`` the ``B x |C|``
        target weights (one-hot, or ``lam`` / ``1 - lam`` with CutMix). ``Delta`` equals
        ``-tau * B * dL/dW_C`` for the batch-mean CE, so negatives move too. With ``P = 0``
        and unique one-hot targets it is exactly :meth:`update_ema`.

        ``cols`` must be the same on every rank (and duplicate-free); ``None`` means all
        rows in index order. ``weight_cols`` may pass ``weight[cols]`` as already gathered
        for this step's logits, to save a second gather; it is updated in place (for a
        float32 bank), so it must not be used afterwards.
        ``matmul_dtype`` (e.g. the autocast dtype of a mixed-precision run) computes the
        ``(Y - P)^T Z`` product in that dtype (:func:`ce_bank_delta`), with float32
        accumulation of the result into the rows. Under ``torch.distributed`` ``Delta`` is
        summed over ranks before any row moves, so replicas stay bit-identical.
        """
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum must be in (0, 1), got {momentum}")
        if cols is not None:
            cols = self._check_indexes(cols)
        if weight_cols is None:
            weight_cols = self.weight if cols is None else self.weight.index_select(0, cols)
        # a non-finite step (on any rank) moves no row: with P = Y and Z = 0, Delta = 0 exactly
        # and every row is written back as it was
        keep = ~_finite_flag(z, probs)
        probs = torch.where(keep, targets.float(), probs.float())
        z = torch.where(keep, 0.0, z.detach().float())
        delta = ce_bank_delta(z, probs, targets, matmul_dtype)
        if is_distributed():  # summed in float32, so replicas agree and nothing is lost
            delta = all_reduce_sum_(delta.float())
        self.num_updates += 1
        # in place: the step's own gathered rows, or the bank itself (all rows), which the
        # backward pass has finished reading; a float32 copy for the other bank dtypes
        rows = weight_cols.float().add_(delta, alpha=(1.0 - momentum) / momentum)
        self._write_(cols, rows, keep)

    # ------------------------------------------------------------------- stats
    @torch.no_grad()
    def staleness(self) -> Tensor:
        """Mean number of updates since each row was last written (float32, 0-d)."""
        return (self.num_updates - self.last_write).float().mean()

    @torch.no_grad()
    def fraction_written_after(self, update: int) -> Tensor:
        """Fraction of rows written by an update numbered above ``update`` (float32, 0-d).

        ``fraction_written_after(n)`` with ``n`` the value of ``num_updates`` at the start
        of an epoch gives the fraction of rows written during that epoch.
        """
        return (self.last_write > update).float().mean()
