"""MemoryBank: columns, update rules, dtypes, against brute force and autograd."""

import pytest
import torch
import torch.nn.functional as F

from effssl_plugin.bank import (
    MemoryBank,
    ce_bank_delta,
    matmul_as,
    negatives_generator,
    soft_targets,
)
from effssl_plugin.losses import instance_ce_loss


def random_bank(n=50, d=8, dtype=torch.float32, seed=0):
    bank = MemoryBank(n, d, dtype=dtype)
    bank.reset_random_(torch.Generator().manual_seed(seed))
    return bank


# ------------------------------------------------------------------ construction
def test_buffers_are_persistent_and_bank_starts_unfilled():
    bank = MemoryBank(10, 4)
    assert set(bank.state_dict()) == {"weight", "filled", "last_write", "num_updates"}
    assert not bool(bank.filled)
    bank.reset_random_()
    assert bool(bank.filled)
    torch.testing.assert_close(bank.weight.norm(dim=1), torch.ones(10))


@pytest.mark.parametrize("args", [(0, 4), (10, 0), (-1, 3)])
def test_invalid_shapes_raise(args):
    with pytest.raises(ValueError):
        MemoryBank(*args)


def test_invalid_dtype_raises():
    with pytest.raises(ValueError, match="dtype"):
        MemoryBank(4, 4, dtype=torch.float64)


def test_fill_writes_normalised_rows_and_means_duplicates():
    bank = MemoryBank(6, 3)
    z = torch.tensor([[3.0, 0, 0], [0, 2.0, 0], [0, 0, 5.0], [0, 4.0, 0]])
    bank.fill_(torch.tensor([0, 2, 5, 0]), z)
    torch.testing.assert_close(bank.weight[0], F.normalize(torch.tensor([1.5, 2.0, 0]), dim=0))
    torch.testing.assert_close(bank.weight[2], torch.tensor([0, 1.0, 0]))
    torch.testing.assert_close(bank.weight[5], torch.tensor([0, 0, 1.0]))
    assert bank.weight[1].abs().sum() == 0  # untouched rows stay untouched
    assert bank.last_write.tolist() == [0, -1, 0, -1, -1, 0]


def test_out_of_range_index_is_a_clear_error():
    bank = MemoryBank(5, 2)
    with pytest.raises(IndexError, match="5 rows"):
        bank.fill_(torch.tensor([5]), torch.ones(1, 2))


# ----------------------------------------------------------------------- columns
def brute_force_check(bank, batch, k, cols, pos):
    n = bank.num_samples
    uniq = sorted(set(batch.tolist()))
    cols_l = cols.tolist()
    assert cols_l[: len(uniq)] == uniq, "batch rows first, deduplicated"
    assert len(set(cols_l)) == len(cols_l), "no duplicate columns"
    negatives = cols_l[len(uniq) :]
    assert not set(negatives) & set(uniq), "no batch row among the negatives"
    assert all(0 <= c < n for c in negatives)
    expected_k = n - len(uniq) if k < 0 else k
    assert len(negatives) == expected_k
    assert [cols_l[p] for p in pos.tolist()] == batch.tolist(), "pos[i] is sample i's column"


@pytest.mark.parametrize("seed", range(20))
def test_columns_random_cases_match_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 60, (1,), generator=g))
    bank = MemoryBank(n, 4)
    batch = torch.randint(0, n, (int(torch.randint(1, n + 1, (1,), generator=g)),), generator=g)
    free = n - batch.unique().numel()
    for k in {0, free // 2, free, -1}:
        cols, pos = bank.columns(batch, k, torch.Generator().manual_seed(seed))
        brute_force_check(bank, batch, k, cols, pos)


def test_columns_negatives_are_uniform_over_free_rows():
    bank = MemoryBank(12, 2)
    batch = torch.tensor([0, 5, 11, 5])
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(12)
    trials = 6000
    for _ in range(trials):
        cols, _ = bank.columns(batch, 3, g)
        counts[cols[3:]] += 1
    assert counts[[0, 5, 11]].sum() == 0
    freq = counts[[i for i in range(12) if i not in (0, 5, 11)]] / trials
    # each of the 9 free rows is drawn with probability 3/9
    torch.testing.assert_close(freq, torch.full_like(freq, 1 / 3), atol=0.03, rtol=0)


def test_columns_deterministic_for_a_generator():
    bank = MemoryBank(1000, 2)
    batch = torch.randperm(1000)[:64]
    a = bank.columns(batch, 100, torch.Generator().manual_seed(7))
    b = bank.columns(batch, 100, torch.Generator().manual_seed(7))
    c = bank.columns(batch, 100, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def static_check(bank, batch, k, cols, pos):
    """:meth:`MemoryBank.columns_static`: G + k columns (N for k = -1), the distinct batch rows
    first and ascending, one row outside the batch per repeat, then k negatives."""
    n, g = bank.num_samples, batch.numel()
    uniq = sorted(set(batch.tolist()))
    cols_l = cols.tolist()
    assert len(cols_l) == (n if k < 0 else g + k)
    assert cols_l[: len(uniq)] == uniq, "batch rows first, deduplicated"
    assert len(set(cols_l)) == len(cols_l), "no duplicate columns"
    assert not set(cols_l[len(uniq) :]) & set(uniq), "no batch row among the others"
    assert all(0 <= c < n for c in cols_l)
    assert [cols_l[p] for p in pos.tolist()] == batch.tolist(), "pos[i] is sample i's column"


@pytest.mark.parametrize("seed", range(20))
def test_static_columns_random_cases(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(2, 60, (1,), generator=g))
    bank = MemoryBank(n, 4)
    size = int(torch.randint(1, n + 1, (1,), generator=g))
    repeats = torch.randint(0, n, (size,), generator=g)
    distinct = torch.randperm(n, generator=g)[:size]
    for batch in (repeats, distinct):
        for k in {0, (n - size) // 2, n - size, -1}:
            cols, pos = bank.columns_static(batch, k, torch.Generator().manual_seed(seed))
            static_check(bank, batch, k, cols, pos)
            if 0 <= k < n - size and batch is distinct:  # no repeats: columns() exactly
                ref = bank.columns(batch, k, torch.Generator().manual_seed(seed))
                assert torch.equal(cols, ref[0]) and torch.equal(pos, ref[1])


def test_static_columns_too_many_negatives_is_a_value_error():
    with pytest.raises(ValueError, match="num_negatives=7 is more than the 6"):
        MemoryBank(10, 2).columns_static(torch.tensor([1, 2, 3, 3]), 7)


def test_batch_columns_on_one_process_are_static_columns_and_their_rows():
    bank = random_bank()
    batch = torch.tensor([4, 9, 4, 31])
    cols, weight_cols, pos = bank.batch_columns(batch, 10, torch.Generator().manual_seed(3))
    ref_cols, ref_pos = bank.columns_static(batch, 10, torch.Generator().manual_seed(3))
    assert torch.equal(cols, ref_cols) and torch.equal(pos, ref_pos)
    static_check(bank, batch, 10, cols, pos)
    assert torch.equal(weight_cols, bank.weight[cols])
    cols, weight_cols, pos = bank.batch_columns(batch, -1)  # every row, in index order
    assert cols is None and weight_cols is bank.weight and torch.equal(pos, batch)


def test_negatives_generator_depends_on_seed_and_step_only():
    def draw(seed, step):
        return torch.randperm(1000, generator=negatives_generator(seed, step))

    assert torch.equal(draw(5, 3), draw(5, 3))  # every rank, and a resumed run, alike
    assert not torch.equal(draw(5, 3), draw(5, 4))
    assert not torch.equal(draw(5, 3), draw(6, 3))
    assert not torch.equal(draw(0, 1), draw(1, 0))


def test_columns_too_many_negatives_is_a_value_error():
    bank = MemoryBank(10, 2)
    with pytest.raises(ValueError, match="num_negatives=8 is more than the 7"):
        bank.columns(torch.tensor([1, 2, 3, 3]), 8)


# ----------------------------------------------------------------------- updates
def test_update_ema_matches_formula_and_moves_duplicates_once_toward_mean():
    bank = random_bank()
    before = bank.weight.clone()
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(4, 8, generator=g), dim=1)
    idx = torch.tensor([3, 7, 3, 9])
    bank.update_ema(idx, z, momentum=0.5)
    expected3 = F.normalize(0.5 * before[3] + 0.5 * (z[0] + z[2]) / 2, dim=0)
    expected7 = F.normalize(0.5 * before[7] + 0.5 * z[1], dim=0)
    torch.testing.assert_close(bank.weight[3], expected3)
    torch.testing.assert_close(bank.weight[7], expected7)
    untouched = [i for i in range(50) if i not in (3, 7, 9)]
    assert torch.equal(bank.weight[untouched], before[untouched])
    assert int(bank.num_updates) == 1 and bank.last_write[3] == 1 and bank.last_write[0] == 0


def test_update_ema_duplicates_are_not_last_write_wins():
    bank = random_bank()
    z = F.normalize(torch.randn(2, 8), dim=1)
    bank2 = random_bank()
    bank.update_ema(torch.tensor([4, 4]), z)
    bank2.update_ema(torch.tensor([4]), z[1:])  # what last-write-wins would give
    assert not torch.allclose(bank.weight[4], bank2.weight[4])


def dense_targets(pos, pos_b, lam, num_cols):
    y = lam * F.one_hot(pos, num_cols).double()
    if pos_b is not None:
        y = y + (1 - lam) * F.one_hot(pos_b, num_cols).double()
    return y


@pytest.mark.parametrize("lam", [1.0, 0.7])
def test_soft_targets_are_lam_at_own_column_plus_rest_at_partner(lam):
    pos, pos_b = torch.tensor([0, 3, 3, 5]), torch.tensor([3, 0, 3, 0])
    y = soft_targets(pos, 7, pos_b if lam < 1 else None, lam)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), dense_targets(pos, pos_b if lam < 1 else None, lam, 7))
    torch.testing.assert_close(y.sum(1), torch.ones(4))


@pytest.mark.parametrize("cutmix", [False, True])
def test_delta_equals_minus_tau_b_times_autograd_gradient(cutmix):
    g = torch.Generator().manual_seed(5)
    bsz, ncols, dim, tau, lam = 6, 15, 8, 0.2, 0.7
    w_c = F.normalize(torch.randn(ncols, dim, generator=g, dtype=torch.float64), dim=1)
    w_c.requires_grad_()
    z = F.normalize(torch.randn(bsz, dim, generator=g, dtype=torch.float64), dim=1)
    pos = torch.randperm(ncols, generator=g)[:bsz]
    pos_b = pos[torch.randperm(bsz, generator=g)] if cutmix else None
    logits = z @ w_c.t()
    loss = instance_ce_loss(logits, pos, tau, target_b=pos_b, lam=lam if cutmix else 1.0)
    (grad,) = torch.autograd.grad(loss, w_c)
    probs = F.softmax(logits.detach() / tau, dim=1)
    y = dense_targets(pos, pos_b, lam if cutmix else 1.0, ncols)
    delta = ce_bank_delta(z.float(), probs.float(), y.float())
    torch.testing.assert_close(delta.double(), -tau * bsz * grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cutmix", [False, True])
def test_update_grad_follows_the_autograd_gradient(cutmix):
    """``w_c <- normalize(w_c - eta * tau * B * dL/dW_C)`` for every column, eta = (1 - m) / m."""
    bank = random_bank(n=30, d=8)
    before = bank.weight.clone()
    g = torch.Generator().manual_seed(7)
    tau, lam, m, bsz = 0.2, 0.7 if cutmix else 1.0, 0.6, 4
    cols, pos = bank.columns(torch.tensor([2, 5, 11, 17]), 12, g)
    pos_b = pos.roll(1) if cutmix else None
    z = F.normalize(torch.randn(bsz, 8, generator=g), dim=1)
    w_c = before[cols].clone().requires_grad_()
    logits = z @ w_c.t()
    (grad,) = torch.autograd.grad(instance_ce_loss(logits, pos, tau, pos_b, lam), w_c)
    probs = F.softmax(logits.detach() / tau, dim=1)
    bank.update_grad(cols, z, probs, soft_targets(pos, cols.numel(), pos_b, lam), m)
    expected = F.normalize(before[cols] - (1 - m) / m * tau * bsz * grad, dim=1)
    torch.testing.assert_close(bank.weight[cols], expected, rtol=1e-5, atol=1e-5)


def test_update_grad_applies_normalised_step_to_every_column():
    bank = random_bank(n=30, d=6)
    before = bank.weight.clone()
    g = torch.Generator().manual_seed(2)
    cols, pos = bank.columns(torch.tensor([1, 4, 9]), 10, g)
    z = F.normalize(torch.randn(3, 6, generator=g), dim=1)
    probs = F.softmax(z @ before[cols].t() / 0.2, dim=1)
    y = F.one_hot(pos, cols.numel()).float()
    bank.update_grad(cols, z, probs, y, momentum=0.5)
    expected = F.normalize(before[cols] + 1.0 * (y - probs).t() @ z, dim=1)
    torch.testing.assert_close(bank.weight[cols], expected)
    others = [i for i in range(30) if i not in cols.tolist()]
    assert torch.equal(bank.weight[others], before[others])
    # negatives moved too
    assert not torch.allclose(bank.weight[cols[3:]], before[cols[3:]])


@pytest.mark.parametrize("momentum", [0.3, 0.5, 0.9])
def test_update_grad_with_zero_probs_reproduces_ema(momentum):
    bank_a, bank_b = random_bank(seed=3), random_bank(seed=3)
    g = torch.Generator().manual_seed(4)
    idx = torch.randperm(50, generator=g)[:10]
    z = F.normalize(torch.randn(10, 8, generator=g), dim=1)
    cols, pos = bank_a.columns(idx, 5, g)
    bank_a.update_grad(
        cols, z, torch.zeros(10, cols.numel()), F.one_hot(pos, cols.numel()), momentum
    )
    bank_b.update_ema(idx, z, momentum)
    torch.testing.assert_close(bank_a.weight, bank_b.weight, atol=1e-6, rtol=0)


def test_update_grad_all_rows_path_matches_explicit_columns():
    bank_a, bank_b = random_bank(seed=6), random_bank(seed=6)
    g = torch.Generator().manual_seed(1)
    idx = torch.tensor([2, 8, 30])
    z = F.normalize(torch.randn(3, 8, generator=g), dim=1)
    probs = F.softmax(z @ bank_a.weight.t() / 0.2, dim=1)  # columns in index order
    y = F.one_hot(idx, 50).float()
    bank_a.update_grad(None, z, probs, y)
    cols, pos = bank_b.columns(idx, -1)
    bank_b.update_grad(cols, z, probs[:, cols], y[:, cols])
    torch.testing.assert_close(bank_a.weight, bank_b.weight)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_banks_keep_rows_unit_norm(dtype):
    bank = random_bank(n=200, d=64, dtype=dtype)
    g = torch.Generator().manual_seed(0)
    for step in range(30):
        idx = torch.randint(0, 200, (16,), generator=g)
        z = F.normalize(torch.randn(16, 64, generator=g), dim=1)
        if step % 2:
            bank.update_ema(idx, z, 0.5)
        else:
            cols, pos = bank.columns(idx, 20, g)
            probs = F.softmax(z @ bank.weight[cols].float().t() / 0.2, 1)
            bank.update_grad(cols, z, probs, F.one_hot(pos, cols.numel()), 0.5)
    assert bank.weight.dtype == dtype
    norms = bank.weight.float().norm(dim=1)
    assert (norms - 1).abs().max() < 1e-2


def test_staleness_and_fraction_written():
    bank = random_bank(n=10, d=2)
    assert bank.staleness().item() == 0.0
    bank.update_ema(torch.tensor([0, 1]), torch.ones(2, 2))
    bank.update_ema(torch.tensor([0]), torch.ones(1, 2))
    # row 0 written at update 2, row 1 at 1, the 8 others at 0 (filled)
    assert bank.staleness().item() == pytest.approx((0 + 1 + 8 * 2) / 10)
    assert bank.fraction_written_after(0).item() == pytest.approx(0.2)
    assert bank.fraction_written_after(1).item() == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_ema_momentum_range(bad):
    with pytest.raises(ValueError, match="momentum"):
        random_bank().update_ema(torch.tensor([0]), torch.ones(1, 8), bad)


@pytest.mark.parametrize("bad", [0.0, 1.0])
def test_grad_momentum_range(bad):
    with pytest.raises(ValueError, match="momentum"):
        random_bank().update_grad(
            torch.tensor([0]), torch.ones(1, 8), torch.zeros(1, 1), torch.ones(1, 1), bad
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_update_grad_low_precision_matmul_is_close_to_float32(dtype):
    bank_a, bank_b = random_bank(n=400, d=64, seed=9), random_bank(n=400, d=64, seed=9)
    g = torch.Generator().manual_seed(3)
    idx = torch.randperm(400, generator=g)[:32]
    cols, pos = bank_a.columns(idx, 100, g)
    z = F.normalize(torch.randn(32, 64, generator=g), dim=1)
    probs = F.softmax(z @ bank_a.weight[cols].t() / 0.2, dim=1)
    y = F.one_hot(pos, cols.numel()).float()
    bank_a.update_grad(cols, z, probs, y, 0.5)
    bank_b.update_grad(cols, z, probs, y, 0.5, matmul_dtype=dtype)
    assert bank_b.weight.dtype == torch.float32
    torch.testing.assert_close(bank_b.weight, bank_a.weight, atol=2e-2, rtol=0)
    assert not torch.equal(bank_b.weight, bank_a.weight)  # really computed in low precision


def test_the_step_path_never_calls_torch_unique(monkeypatch):
    """``torch.unique`` sizes its output on the host (a sync on a GPU): the EMA update and
    the columns drawn on the device must not use it, duplicates included."""
    bank = random_bank(n=40, d=8, seed=2)
    idx = torch.tensor([3, 7, 3, 11])
    z = F.normalize(torch.randn(4, 8), dim=1)
    expected = random_bank(n=40, d=8, seed=2)
    expected.update_ema(idx, z, 0.5)

    def no_unique(*args, **kwargs):
        raise AssertionError("torch.unique called")

    monkeypatch.setattr(torch, "unique", no_unique)
    cols, weight_cols, pos = bank.batch_columns(idx, 5, negatives_generator(0, 1))
    static_check(bank, idx, 5, cols, pos)  # the device path (DDP, DALI)
    cols, weight_cols, pos = bank.batch_columns(idx, -1)
    assert cols is None and torch.equal(pos, idx)
    bank.update_ema(idx, z, 0.5)
    assert torch.equal(bank.weight, expected.weight)
    probs = F.softmax(z @ weight_cols.t() / 0.2, dim=1)
    bank.update_grad(None, z, probs, F.one_hot(idx, 40).float(), 0.5)


def test_batch_columns_from_host_indexes_match_the_device_path():
    """One process, k >= 0: the columns drawn from the host copy of the indexes are the ones
    the device path draws with the same generator when no index repeats (a repeat there
    takes one more row outside the batch)."""
    bank = random_bank(n=60, d=8, seed=4)
    idx = torch.tensor([5, 17, 3, 42, 8])
    cols, w_cols, pos = bank.batch_columns(idx, 20, negatives_generator(0, 3))
    h_cols, h_w_cols, h_pos = bank.batch_columns(
        idx, 20, negatives_generator(0, 3), host_indexes=idx.clone()
    )
    assert torch.equal(h_cols, cols) and torch.equal(h_pos, pos) and torch.equal(h_w_cols, w_cols)
    idx = torch.tensor([5, 17, 5, 42, 8])
    cols, w_cols, pos = bank.batch_columns(idx, 20, negatives_generator(0, 3))
    h_cols, h_w_cols, h_pos = bank.batch_columns(
        idx, 20, negatives_generator(0, 3), host_indexes=idx.clone()
    )
    assert h_cols.numel() == 24 and cols.numel() == 25
    assert torch.equal(h_cols[:4], cols[:4]) and torch.equal(h_pos, pos)
    # k = -1 takes every row: the host copy is not needed
    all_cols, all_w, all_pos = bank.batch_columns(idx, -1, host_indexes=idx)
    assert all_cols is None and all_w is bank.weight and torch.equal(all_pos, idx)


def test_host_drawn_columns_land_on_the_banks_device():
    """The host path copies both the columns and the positions to the bank's device (here
    the meta device stands in for a GPU: no data, but devices and shapes are checked)."""
    from effssl_plugin.bank import negatives_generator

    bank = MemoryBank(60, 8).to("meta")
    idx = torch.tensor([5, 17, 5, 42, 8])
    cols, w_cols, pos = bank.batch_columns(
        idx.to("meta"), 20, negatives_generator(0, 3), host_indexes=idx
    )
    assert cols.device.type == pos.device.type == w_cols.device.type == "meta"
    assert cols.shape == (24,) and pos.shape == (5,) and w_cols.shape == (24, 8)


# ------------------------------------------------------------- host syncs, autocast
def simulate_two_ranks(monkeypatch) -> None:
    """``torch.distributed`` as two ranks that hold the same tensors (no process group)."""
    import torch.distributed as dist

    def all_gather(parts, tensor, *args, **kwargs):
        for part in parts:
            part.copy_(tensor)

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *args, **kwargs: 2)
    monkeypatch.setattr(dist, "get_rank", lambda *args, **kwargs: 0)
    monkeypatch.setattr(dist, "all_gather", all_gather)
    monkeypatch.setattr(dist, "all_reduce", lambda *args, **kwargs: None)


class NoHostRead:
    """While active, the Tensor methods that read a value on the host raise."""

    NAMES = ("item", "__bool__", "__int__", "__float__", "tolist")

    def __enter__(self) -> None:
        self.saved = {name: getattr(torch.Tensor, name) for name in self.NAMES}

        def forbidden(name):
            def call(self, *args, **kwargs):
                raise AssertionError(f"Tensor.{name} called in the step path")

            return call

        for name in self.NAMES:
            setattr(torch.Tensor, name, forbidden(name))

    def __exit__(self, *exc) -> None:
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, method)


@pytest.mark.filterwarnings("ignore:Accessing the data pointer of FakeTensor")
def test_the_ddp_step_path_reads_nothing_on_the_host(monkeypatch):
    """Under DDP (two ranks simulated) a training step's bank calls read no value on the host
    (``.item()``, ``bool(tensor)``, ``tolist``...: patched to raise) and run under
    FakeTensorMode, which raises on any op whose output size depends on values
    (``torch.unique``, ``nonzero``, boolean masks): on a GPU each of those stalls the
    stream. The gathered batch repeats every index (both ranks hold the same one), as the
    distributed sampler's padding can."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    simulate_two_ranks(monkeypatch)
    mode = FakeTensorMode()
    bank = MemoryBank(60, 8)
    for name, buffer in list(bank.named_buffers()):
        setattr(bank, name, mode.from_tensor(buffer))
    idx = mode.from_tensor(torch.tensor([5, 17, 3, 42, 8]))
    z = mode.from_tensor(F.normalize(torch.randn(5, 8), dim=1))
    with mode, NoHostRead():
        for k in (20, -1):
            cols, weight_cols, pos = bank.batch_columns(
                idx, k, negatives_generator(0, 1), equal_sizes=True
            )
            assert weight_cols.shape == ((30, 8) if k >= 0 else (60, 8))
            probs = F.softmax(z @ weight_cols.t() / 0.2, dim=1)
            y = soft_targets(pos, weight_cols.shape[0])
            bank.update_grad(cols, z, probs, y, 0.5, weight_cols, torch.bfloat16)
        bank.update_ema(idx, z, 0.5, equal_sizes=True)


def test_the_size_exchange_still_works_for_unequal_sizes(monkeypatch):
    """Without ``equal_sizes`` (the calibration pass) ranks may hold different numbers of
    rows: the sizes are exchanged and the result trimmed."""
    from effssl_plugin.distributed import all_gather_cat

    simulate_two_ranks(monkeypatch)
    x = torch.arange(6).view(3, 2)
    out, offset = all_gather_cat(x, return_offset=True)
    assert torch.equal(out, torch.cat([x, x])) and offset == 0
    out, offset = all_gather_cat(x, return_offset=True, equal_sizes=True)
    assert torch.equal(out, torch.cat([x, x])) and offset == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bank_products_keep_their_dtype_under_autocast(dtype):
    """``bank_matmul`` must hold inside Lightning's autocast, which recasts an explicit
    float32 product to bfloat16: the logits product (:func:`matmul_as`) and the update's
    ``(Y - P)^T Z`` and mean over duplicates."""
    g = torch.Generator().manual_seed(0)
    z, w = F.normalize(torch.randn(6, 8, generator=g), dim=1), random_bank(20, 8).weight
    probs, y = F.softmax(z @ w.t(), dim=1), F.one_hot(torch.arange(6), 20).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = matmul_as(z, w.t(), dtype)
        delta = ce_bank_delta(z, probs, y, dtype)
        recast = z @ w.t()
    assert recast.dtype == torch.bfloat16  # what autocast makes of a plain product
    assert logits.dtype == delta.dtype == dtype
    if dtype == torch.float32:
        assert torch.equal(logits, z @ w.t())
        assert torch.equal(delta, ce_bank_delta(z, probs, y))
    else:
        assert not torch.equal(logits.float(), z @ w.t())  # really computed in bfloat16
    bank, reference = random_bank(20, 8), random_bank(20, 8)
    idx = torch.tensor([1, 4, 1, 7, 9, 4])
    reference.update_ema(idx, z, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bank.update_ema(idx, z, 0.5)
    assert torch.equal(bank.weight, reference.weight)  # duplicates averaged in float32
