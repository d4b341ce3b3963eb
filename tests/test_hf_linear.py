"""transformers' AutoBitLinear product in MKL's order (float_ternary.mkl_linear, the hf
profile on "autobitlinear" weights): hand-worked blocks, the twin's bits, torch's F.linear
to the bit where torch is installed, and the loader's choice of form."""

import os

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minibit
from minibit.formats import hf_packed
from minibit.io.synthetic import write_checkpoint
from minibit.kernels import float_ternary
from minibit.kernels.dense import mkl_k_blocks
from conftest import twin_pair

F32 = np.float32


def test_mkl_blocks_worked_examples():
    """One block up to 192, two halves up to 384 (an odd K's last term alone), then 192s."""
    assert mkl_k_blocks(0) == []
    assert mkl_k_blocks(192) == [(0, 192)]
    assert mkl_k_blocks(193) == [(0, 96), (96, 192), (192, 193)]
    assert mkl_k_blocks(384) == [(0, 192), (192, 384)]
    assert mkl_k_blocks(400) == [(0, 192), (192, 384), (384, 400)]


def test_block_order_is_visible_in_the_bits():
    """Worked by hand, K = 193 (blocks [0, 96), [96, 192), [192, 193)), all codes 1,
    x = 2^24 at k = 0, -2^24 at k = 191, 1 elsewhere:
      block 0: 2^24 + 1 ties back to 2^24 (spacing 2), 95 times -> 2^24
      block 1: 95 ones from 0 = 95; 95 - 2^24 = -16777121, exact (spacing 1 below 2^24)
      block 2: 1
      y = (2^24 - 16777121) + 1 = 96      (one chain over all 193 terms: 0 + 1 = 1;
                                           the exact sum: 191)"""
    K = 193
    x = np.ones((1, K), F32)
    x[0, 0], x[0, 191] = 2.0 ** 24, -(2.0 ** 24)
    codes = np.ones((1, K), np.int8)
    assert F32(F32(95) + F32(-(2.0 ** 24))) == F32(-16777121.0)
    y = float_ternary.mkl_linear(x, hf_packed.pack(codes), 1, K)
    assert y[0, 0] == F32(96.0)
    _, fast = twin_pair("float_ternary")
    assert fast.mkl_linear(x, hf_packed.pack(codes), 1, K)[0, 0] == F32(96.0)


@given(st.integers(1, 6), st.integers(1, 150),
       st.sampled_from([1, 7, 64, 191, 192, 193, 256, 385, 400]),
       st.booleans(), st.integers(0, 2**31 - 1))
def test_twin_mkl_linear(T, rows, cols, online, seed):
    ref, fast = twin_pair("float_ternary")
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((T, cols)) * rng.uniform(0.01, 100)).astype(F32)
    codes = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    data = hf_packed.pack(codes)
    wmul = F32(rng.uniform(0.01, 3)) if online else None
    a = ref.mkl_linear(x, data, rows, cols, wmul)
    b = fast.mkl_linear(x, data, rows, cols, wmul)
    assert a.tobytes() == b.tobytes()
    c = fast.mkl_linear(x, data, rows, cols, wmul, ref.transpose_codes(data))
    assert a.tobytes() == c.tobytes()
    exact = x.astype(np.float64) @ (codes * (1.0 if wmul is None else float(wmul))).T
    assert np.allclose(a, exact, rtol=1e-5, atol=1e-4 * max(1.0, float(np.abs(x).max())) * np.sqrt(cols))


def test_mkl_linear_checks_its_arguments():
    data = hf_packed.pack(np.zeros((4, 8), np.int8))
    with pytest.raises(minibit.FormatError, match="do not fit"):
        float_ternary.mkl_linear(np.zeros((1, 9), F32), data, 4, 8)
    with pytest.raises(minibit.FormatError, match="packed codes"):
        float_ternary.mkl_linear(np.zeros((1, 8), F32), data[:, :4], 4, 8)
    with pytest.raises(minibit.FormatError, match="multiplier"):
        float_ternary.mkl_linear(np.zeros((1, 8), F32), data, 4, 8, np.float32(np.inf))
    _, fast = twin_pair("float_ternary")
    with pytest.raises(minibit.FormatError, match="data_t"):
        fast.mkl_linear(np.zeros((1, 8), F32), data, 4, 8, None, np.zeros((8, 1), np.uint8))


@pytest.mark.parametrize("T,rows,cols", [(4, 16, 64), (80, 64, 400), (20, 100, 1000),
                                         (7, 2560, 2560), (12, 96, 193)])
def test_mkl_linear_is_torch_f_linear_to_the_bit(T, rows, cols):
    """The order measured on torch 2.13 (MKL's sgemm, one thread): the same bits as
    F.linear for products of at least 4 rows and 16 columns, both forms."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    F = torch.nn.functional
    rng = np.random.default_rng(T * rows + cols)
    codes = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
    x = rng.standard_normal((T, cols)).astype(F32)
    for wmul in (None, F32(0.37)):
        W = codes.astype(F32) * (F32(1) if wmul is None else wmul)
        want = F.linear(torch.from_numpy(x), torch.from_numpy(W)).numpy()
        got = float_ternary.mkl_linear(x, hf_packed.pack(codes), rows, cols, wmul)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("arch,packed,form", [("bitnet-b1.58", True, "offline"),
                                              ("bitnet-b1.58", False, "online"),
                                              ("bitnet", False, "online"),
                                              ("llama", True, None)])
def test_loader_marks_the_transformers_form(tmp_path, arch, packed, form):
    """2B-4T packed -> "offline", float masters -> "online" (ternarized with torch's mean),
    Falcon3's "bitlinear" -> the integer product (None); the hf profile then takes the float
    product, every other profile the integer one."""
    src = write_checkpoint(str(tmp_path / "ck"), arch=arch, packed=packed, seed=3)
    m = minibit.load(src, profile="hf")
    lin = m.transformer.layers[0].q
    assert lin.packed.hf_linear == form
    x = np.random.default_rng(0).standard_normal((5, lin.shape[1])).astype(F32)
    y = lin(x)
    if form is None:
        return
    q, s = minibit.quant.quantize_act_hf(x)
    xq = q.astype(F32) / s[:, None]
    scale = F32(lin.packed.scale[0])
    ref = float_ternary.mkl_linear(xq, lin.packed.data, *lin.shape,
                                   scale if form == "online" else None)
    if form == "offline":
        ref = ref * scale
    assert y.tobytes() == ref.tobytes()
    # the integer product differs from it only by float rounding
    R = q.astype(np.int64) @ hf_packed.unpack_codes(lin.packed)[0].astype(np.int64).T
    assert np.allclose(y, R.astype(F32) / s[:, None] * scale, rtol=1e-5, atol=1e-6)


def test_online_weights_use_torchs_mean():
    """torch's |W|.mean() (its cascade sum in float32) for the online scale, to the bit."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from minibit.model.layers import torch_absmean
    rng = np.random.default_rng(0)
    for shape in [(1, 3), (2, 5), (44, 44), (96, 160), (300, 4097), (1536, 1536)]:
        for _ in range(3):
            w = (rng.standard_normal(shape) * rng.uniform(0.01, 2)).astype(F32)
            want = torch.from_numpy(w).abs().mean().clamp_(min=1e-5).item()
            assert torch_absmean(w) == F32(want), shape
    assert torch_absmean(np.zeros((3, 3), F32)) == F32(1e-5)


def test_backends_agree_on_autobitlinear(tmp_path):
    from conftest import assert_model_backends_agree
    src = write_checkpoint(str(tmp_path / "ck"), arch="bitnet-b1.58", packed=True, seed=5,
                           hidden=64, intermediate=200)
    m = minibit.load(src, profile="hf")
    assert_model_backends_agree(m, [256, 72, 101, 108, 108, 111, 32, 119], "float_ternary")


if __name__ == "__main__":          # pragma: no cover
    os.sys.exit(pytest.main([__file__, "-q"]))
