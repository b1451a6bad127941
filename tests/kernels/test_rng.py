"""The counter-based generator: Triton == reference bit for bit, keyed only by (seed, global index)."""

from __future__ import annotations

import pytest
import torch

from lure_fast.kernels import counter_uniform, counter_uniform_reference, uniform_, uniform_reference_, use_triton
from lure_fast.kernels.reference import MASK32, counter_hash_reference, fmix32, seed_keys

INDICES = [0, 1, 2, 1000003, 2**32 + 1, 2**40 + 7]
# Pinned outputs: changing the generator changes every reset value, so it must be deliberate.
KNOWN = {
    0: [516394440, 1089736495, 450789120, 1083100934, 3782645688, 549066963],
    1234: [1870605517, 657950045, 1530278147, 3793464988, 1284610564, 1561575510],
    2**40 + 5: [3232969480, 1159891729, 663594929, 1875943540, 2401809299, 410450215],
}


def _scalar_hash(index: int, seed: int) -> int:
    # The definition in plain Python integers, independent of the tensor code.
    k0, k1 = seed_keys(seed)
    h = fmix32((index & MASK32) ^ k0)
    return fmix32(h ^ k1 ^ (((index >> 32) * 0x9E3779B9) & MASK32))


@pytest.mark.parametrize("seed", sorted(KNOWN))
def test_known_answers(seed):
    index = torch.tensor(INDICES, dtype=torch.int64)
    assert counter_hash_reference(index, seed).tolist() == KNOWN[seed]
    assert [_scalar_hash(i, seed) for i in INDICES] == KNOWN[seed]


@pytest.mark.parametrize("n", [1, 7, 4097, 100_003])
@pytest.mark.parametrize("offset", [0, 13, 2**32 - 5])  # the last one crosses into the high index word
def test_triton_matches_reference(device, assert_bitwise_equal, n, offset):
    got = counter_uniform(n, seed=7, offset=offset, device=device)
    assert use_triton(got)
    assert_bitwise_equal(got.cpu(), counter_uniform_reference(n, 7, offset))


def test_keyed_by_global_index_only(device, assert_bitwise_equal):
    # Any split of the index range into launches gives the same numbers.
    whole = counter_uniform(10_000, seed=3, device=device)
    pieces = [counter_uniform(b - a, seed=3, offset=a, device=device) for a, b in [(0, 1), (1, 4097), (4097, 10_000)]]
    assert_bitwise_equal(torch.cat(pieces), whole)


def test_range_and_spread(device):
    u = counter_uniform(200_000, seed=11, device=device).cpu()
    assert u.dtype == torch.float32
    assert 0.0 <= u.min().item() and u.max().item() < 1.0
    assert abs(u.mean().item() - 0.5) < 0.005
    counts = torch.histc(u, bins=16, min=0.0, max=1.0)
    assert (counts - 12_500).abs().max().item() < 600  # ~5 sigma of a binomial(200000, 1/16)
    # Values are multiples of 2**-24.
    assert torch.equal(u * 2**24, (u * 2**24).floor())


def test_seeds_differ(device):
    a = counter_uniform(50_000, seed=0, device=device)
    b = counter_uniform(50_000, seed=1, device=device)
    assert (a == b).float().mean().item() < 1e-3
    assert torch.equal(a, counter_uniform(50_000, seed=0, device=device))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_uniform_fill_in_place(device, assert_bitwise_equal, dtype):
    x = torch.empty(37, 55, dtype=dtype, device=device).t()  # non-contiguous: row-major order of the view
    ptr = x.data_ptr()
    assert uniform_(x, seed=5, offset=9) is x
    assert x.data_ptr() == ptr
    expected = uniform_reference_(torch.empty(55, 37, dtype=dtype), 5, 9)
    assert_bitwise_equal(x.cpu(), expected)


def test_reference_path_without_interpreter(monkeypatch, assert_bitwise_equal):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    got = counter_uniform(1000, seed=2, offset=4)
    assert not use_triton(got)
    assert_bitwise_equal(got, counter_uniform_reference(1000, 2, 4))


def test_rejects_negative_arguments():
    with pytest.raises(ValueError):
        counter_uniform(-1, 0)
    with pytest.raises(ValueError):
        counter_uniform(3, 0, offset=-2)
