"""Samplers: the properties each filter promises, and the twin choosing the same tokens."""

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import minibit
from minibit import sampling
from minibit.sampling import SamplingParams
from conftest import twin_pair

logit_arrays = st.integers(2, 60).flatmap(lambda v: hnp.arrays(
    np.float32, v, elements=st.one_of(st.sampled_from([0.0, 1.0, -1.0, 2.5, 2.5]),
                                      st.floats(-20, 20, width=32))))
params = st.builds(
    SamplingParams,
    temperature=st.sampled_from([0.0, 0.3, 0.8, 1.0, 1.7]),
    top_k=st.sampled_from([0, 1, 3, 10, 100]),
    top_p=st.sampled_from([1.0, 0.95, 0.5, 0.1]),
    min_p=st.sampled_from([0.0, 0.05, 0.5]),
    repeat_penalty=st.sampled_from([1.0, 1.1, 1.5]),
    frequency_penalty=st.sampled_from([0.0, 0.2]),
    presence_penalty=st.sampled_from([0.0, 0.5]),
)


def test_greedy_takes_lowest_id_among_ties():
    x = np.array([1.0, 3.0, 3.0, 2.0], np.float32)
    assert sampling.sample(x, [], SamplingParams(temperature=0), np.random.default_rng(0)) == 1


def test_top_k_keeps_k():
    x = np.arange(10, dtype=np.float32)
    ids, _ = sampling.candidates(x, [], SamplingParams(temperature=1.0, top_k=3))
    assert ids.tolist() == [9, 8, 7]


def test_top_p_keeps_smallest_set_reaching_p():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    x = np.log(p).astype(np.float32)
    ids, _ = sampling.candidates(x, [], SamplingParams(temperature=1.0, top_p=0.8))
    assert ids.tolist() == [0, 1]                       # 0.5 < 0.8 <= 0.5 + 0.3
    ids, _ = sampling.candidates(x, [], SamplingParams(temperature=1.0, top_p=0.81))
    assert ids.tolist() == [0, 1, 2]


def test_min_p_keeps_tokens_above_fraction_of_best():
    p = np.array([0.5, 0.3, 0.15, 0.05])
    x = np.log(p).astype(np.float32)
    ids, _ = sampling.candidates(x, [], SamplingParams(temperature=1.0, min_p=0.25))
    assert ids.tolist() == [0, 1, 2]                    # 0.15 >= 0.25 * 0.5, 0.05 is not


def test_penalties_follow_llama_cpp_rules():
    x = np.array([2.0, -2.0, 1.0, 0.5], np.float32)
    y = sampling.apply_penalties(x, [0, 1, 1, 3], repeat_penalty=2.0, frequency_penalty=0.1,
                                 presence_penalty=0.25, last_n=64)
    assert y.tolist() == [2.0 / 2 - 0.1 - 0.25, -2.0 * 2 - 0.2 - 0.25, 1.0, 0.5 / 2 - 0.1 - 0.25]
    y = sampling.apply_penalties(x, [0, 1, 1, 3], 2.0, 0.0, 0.0, last_n=1)   # only token 3
    assert y.tolist() == [2.0, -2.0, 1.0, 0.25]


def test_distribution_matches_softmax():
    x = np.log(np.array([0.6, 0.3, 0.1])).astype(np.float32)
    rng = np.random.default_rng(1)
    draws = [sampling.sample(x, [], SamplingParams(temperature=1.0), rng) for _ in range(6000)]
    freq = np.bincount(draws, minlength=3) / 6000
    assert np.abs(freq - [0.6, 0.3, 0.1]).max() < 0.03   # ~5 standard errors


def test_bad_params():
    with pytest.raises(minibit.FormatError, match="top_p"):
        SamplingParams(top_p=0)


@given(x=logit_arrays, prm=params, seed=st.integers(0, 2**32 - 1),
       hist=st.lists(st.integers(0, 59), max_size=20))
def test_twin_same_candidates_and_token(x, prm, seed, hist):
    ref, fast = twin_pair("sampling")
    a_ids, a_p = ref.candidates(x, hist, prm)
    b_ids, b_p = fast.candidates(x, hist, prm)
    assert a_ids.tolist() == b_ids.tolist()
    assert np.array_equal(a_p.view(np.uint64), b_p.view(np.uint64))
    r1, r2 = np.random.default_rng(seed), np.random.default_rng(seed)
    assert [ref.sample(x, hist, prm, r1) for _ in range(3)] == [fast.sample(x, hist, prm, r2) for _ in range(3)]
