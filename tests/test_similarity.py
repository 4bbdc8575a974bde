"""Linear CKA (unbiased / biased), minibatch CKA and state-dict drift against hand-computed values."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from smartlib.downstream.similarity import MinibatchCKA, hsic, linear_cka, module_prefix, relative_distance
from smartlib.errors import SmartError

# ---------------------------------------------------------------------------------------------------------
# longhand references: plain Python loops, no NumPy linear algebra
# ---------------------------------------------------------------------------------------------------------


def _gram_longhand(x: list[list[float]]) -> list[list[float]]:
    n = len(x)
    return [[sum(x[i][f] * x[j][f] for f in range(len(x[i]))) for j in range(n)] for i in range(n)]


def _hsic1_longhand(k: list[list[float]], l: list[list[float]]) -> float:
    """Song et al. (2012) closed form, written out with explicit sums."""
    n = len(k)
    kt = [[0.0 if i == j else k[i][j] for j in range(n)] for i in range(n)]
    lt = [[0.0 if i == j else l[i][j] for j in range(n)] for i in range(n)]
    tr_kl = 0.0  # tr(K̃ L̃) = Σ_i Σ_j K̃_ij L̃_ji
    for i in range(n):
        for j in range(n):
            tr_kl += kt[i][j] * lt[j][i]
    sum_k = sum(kt[i][j] for i in range(n) for j in range(n))  # 1ᵀK̃1
    sum_l = sum(lt[i][j] for i in range(n) for j in range(n))  # 1ᵀL̃1
    one_kl_one = 0.0  # 1ᵀ K̃ L̃ 1 = Σ_i Σ_j Σ_m K̃_ij L̃_jm
    for i in range(n):
        for j in range(n):
            for m in range(n):
                one_kl_one += kt[i][j] * lt[j][m]
    return (tr_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * one_kl_one) / (n * (n - 3))


def _hsic1_ustatistic(k: list[list[float]], l: list[list[float]]) -> float:
    """HSIC_1 as the U-statistic of Song et al. (2012, Thm. 2): mean over ordered 4-tuples of distinct
    indices of h = (1/4!) Σ_perm [K_tu L_tu + K_tu L_vw − 2 K_tu L_tv] — a different formula from the
    closed form, so agreement checks the closed form itself."""
    n = len(k)
    total, count = 0.0, 0
    for tup in itertools.permutations(range(n), 4):
        h = 0.0
        for t, u, v, w in itertools.permutations(tup):
            h += k[t][u] * l[t][u] + k[t][u] * l[v][w] - 2.0 * k[t][u] * l[t][v]
        total += h / 24.0
        count += 1
    return total / count


def _hsic0_longhand(k: list[list[float]], l: list[list[float]]) -> float:
    """tr(HKH · HLH) / (n−1)² with H = I − 11ᵀ/n, by explicit matrix products."""
    n = len(k)
    h = [[(1.0 if i == j else 0.0) - 1.0 / n for j in range(n)] for i in range(n)]

    def mm(a, b):
        return [[sum(a[i][m] * b[m][j] for m in range(n)) for j in range(n)] for i in range(n)]

    kc, lc = mm(mm(h, k), h), mm(mm(h, l), h)
    return sum(kc[i][j] * lc[j][i] for i in range(n) for j in range(n)) / (n - 1) ** 2


# tiny example: n = 5 samples, p = 3 and q = 2 features, small integers
X5 = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [2.0, 2.0, 0.0], [-1.0, 3.0, 1.0], [0.0, -2.0, 1.0]]
Y5 = [[1.0, 1.0], [2.0, -1.0], [0.0, 3.0], [1.0, 0.0], [-2.0, 1.0]]


def test_unbiased_hsic_matches_longhand_and_u_statistic():
    k, l = _gram_longhand(X5), _gram_longhand(Y5)
    ref = _hsic1_longhand(k, l)
    assert ref == pytest.approx(_hsic1_ustatistic(k, l), rel=1e-12)  # the two textbook forms agree
    assert hsic(X5, Y5) == pytest.approx(ref, rel=1e-12)
    assert hsic(np.array(X5), np.array(X5)) == pytest.approx(_hsic1_longhand(k, k), rel=1e-12)
    # and it is not the biased value (the two estimators differ on this example)
    assert abs(_hsic0_longhand(k, l) - ref) > 1e-3 * abs(ref)


def test_cka_matches_longhand():
    k, l = _gram_longhand(X5), _gram_longhand(Y5)
    ref1 = _hsic1_longhand(k, l) / math.sqrt(_hsic1_longhand(k, k) * _hsic1_longhand(l, l))
    ref0 = _hsic0_longhand(k, l) / math.sqrt(_hsic0_longhand(k, k) * _hsic0_longhand(l, l))
    assert linear_cka(X5, Y5) == pytest.approx(ref1, rel=1e-12)
    assert linear_cka(X5, Y5, unbiased=False) == pytest.approx(ref0, rel=1e-12)
    assert hsic(X5, Y5, unbiased=False) == pytest.approx(_hsic0_longhand(k, l), rel=1e-12)
    assert ref1 != pytest.approx(ref0, rel=1e-3)


def test_cka_of_itself_is_one_and_accepts_torch_and_nd_features():
    x = torch.randn(16, 4, 3, 3, generator=torch.Generator().manual_seed(0))  # (n, C, H, W) flattened
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x, unbiased=False) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x.reshape(16, -1).numpy()) == pytest.approx(1.0, abs=1e-12)


def test_cka_invariant_to_orthogonal_transform_and_isotropic_scaling():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((20, 8))
    y = x[:, :5] @ rng.standard_normal((5, 6)) + 0.5 * rng.standard_normal((20, 6))
    q, _ = np.linalg.qr(rng.standard_normal((8, 8)))
    for unbiased in (True, False):
        base = linear_cka(x, y, unbiased=unbiased)
        assert 0.2 < base < 0.99  # a non-trivial value, so the invariances mean something
        assert linear_cka(x @ q, y, unbiased=unbiased) == pytest.approx(base, rel=1e-10)
        assert linear_cka(7.5 * x, y, unbiased=unbiased) == pytest.approx(base, rel=1e-10)
        assert linear_cka(x, 0.01 * y, unbiased=unbiased) == pytest.approx(base, rel=1e-10)
        # ... but not to an anisotropic scaling (guards against a normalisation that hides everything)
        d = np.diag(np.linspace(0.1, 10.0, 8))
        assert abs(linear_cka(x @ d, y, unbiased=unbiased) - base) > 1e-2


def test_unbiased_near_zero_where_biased_saturates_for_wide_features():
    # independent random features, p = q = 2000 >> n = 64 (flattened 3D features are always like this).
    # Over seeds the unbiased value has sd ~0.02, so |.| < 0.05 is ~2.4 sd; seed 0 is fixed, not tuned.
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 2000)), rng.standard_normal((64, 2000))
    unbiased, biased = linear_cka(x, y), linear_cka(x, y, unbiased=False)
    assert abs(unbiased) < 0.05
    assert biased > 0.5


def test_monai_cka_is_the_biased_one():
    """The module docstring's reason for hand-writing: MONAI's CKA equals our *biased* CKA."""
    ec = pytest.importorskip("monai.metrics.embedding_collapse")
    domain_shift = getattr(ec, "_domain_shift", None)
    if domain_shift is None:
        pytest.skip("MONAI no longer has embedding_collapse._domain_shift")
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 2000)), rng.standard_normal((64, 2000))
    monai_value = float(domain_shift(torch.from_numpy(x), torch.from_numpy(y)))
    assert monai_value == pytest.approx(linear_cka(x, y, unbiased=False), rel=1e-9)
    assert monai_value > 0.5


# ---------------------------------------------------------------------------------------------------------
# minibatch CKA
# ---------------------------------------------------------------------------------------------------------


def test_minibatch_identical_features_give_one_and_independent_near_zero():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((64, 64)))
    m = MinibatchCKA()
    for _ in range(4):  # 4 batches of 32
        a = rng.standard_normal((32, 64))
        indep = rng.standard_normal((32, 2000))
        m.update([a, torch.from_numpy(a)], [a, 3.0 * a @ q, indep])
    mat = m.compute()
    assert mat.shape == (2, 3) and m.n_batches == 4
    np.testing.assert_allclose(mat[:, :2], 1.0, atol=1e-10)
    assert np.all(np.abs(mat[:, 2]) < 0.05)


def test_minibatch_is_mean_of_per_batch_hsic_then_normalised():
    rng = np.random.default_rng(3)
    batches = []
    for _ in range(3):
        a = rng.standard_normal((6, 4))
        b = a[:, :2] @ rng.standard_normal((2, 5)) + rng.standard_normal((6, 5))
        batches.append((a, b))
    m = MinibatchCKA()
    for a, b in batches:
        m.update([a], [b])
    # reference from the longhand HSIC, averaged by hand
    hxy = sum(_hsic1_longhand(_gram_longhand(a.tolist()), _gram_longhand(b.tolist())) for a, b in batches) / 3
    hxx = sum(_hsic1_longhand(_gram_longhand(a.tolist()), _gram_longhand(a.tolist())) for a, _ in batches) / 3
    hyy = sum(_hsic1_longhand(_gram_longhand(b.tolist()), _gram_longhand(b.tolist())) for _, b in batches) / 3
    assert m.compute()[0, 0] == pytest.approx(hxy / math.sqrt(hxx * hyy), rel=1e-10)
    # one batch: exactly linear_cka
    one = MinibatchCKA()
    one.update([batches[0][0]], [batches[0][1]])
    assert one.compute()[0, 0] == pytest.approx(linear_cka(*batches[0]), rel=1e-12)
    one.reset()
    with pytest.raises(SmartError, match="no batches"):
        one.compute()


# ---------------------------------------------------------------------------------------------------------
# relative distance of state dicts
# ---------------------------------------------------------------------------------------------------------


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "encoder.layers1.0.weight": torch.randn(4, 3, generator=g),
        "encoder.layers1.0.bias": torch.randn(4, generator=g),
        "encoder.layers2.weight": torch.randn(2, 2, generator=g),
        "head.weight": torch.randn(3, generator=g),
        "encoder.norm.num_batches_tracked": torch.tensor(7),  # integer buffer: not counted
    }


def test_relative_distance_zero_for_identical():
    a = _state()
    b = {k: v.clone() for k, v in a.items()}
    r = relative_distance(a, b)
    assert r["relative_distance"] == 0.0
    assert r["identical_share"] == 1.0 and r["n_tensors"] == 4 and r["n_identical"] == 4
    assert set(r["per_module"]) == {"encoder.layers1", "encoder.layers2", "head"}
    assert all(v["relative_distance"] == 0.0 for v in r["per_module"].values())


def test_relative_distance_planted_perturbation():
    b = _state()
    a = {k: v.clone() for k, v in b.items()}
    a["encoder.layers1.0.weight"][1, 2] += 0.3
    a["head.weight"] -= 0.1  # every one of its 3 entries
    a["encoder.norm.num_batches_tracked"] = torch.tensor(99)  # ignored
    # hand-computed: ‖θ_a − θ_b‖² = 0.3² + 3·0.1², ‖θ_b‖² = Σ of squares of every float entry of b
    sq = {k: sum(float(t) ** 2 for t in v.flatten()) for k, v in b.items() if v.is_floating_point()}
    d_a, d_b = b["encoder.layers1.0.weight"][1, 2], b["head.weight"]
    diff1 = (float(d_a + 0.3) - float(d_a)) ** 2  # float32 rounding of the planted step, done as in float32
    diff_head = sum((float(t - 0.1) - float(t)) ** 2 for t in d_b)
    r = relative_distance(a, b)
    assert r["relative_distance"] == pytest.approx(math.sqrt((diff1 + diff_head) / sum(sq.values())), rel=1e-9)
    assert r["relative_distance"] == pytest.approx(math.sqrt((0.09 + 0.03) / sum(sq.values())), rel=1e-5)
    layers1 = sq["encoder.layers1.0.weight"] + sq["encoder.layers1.0.bias"]
    pm = r["per_module"]
    assert pm["encoder.layers1"]["relative_distance"] == pytest.approx(math.sqrt(diff1 / layers1), rel=1e-9)
    assert pm["head"]["relative_distance"] == pytest.approx(math.sqrt(diff_head / sq["head.weight"]), rel=1e-9)
    assert pm["encoder.layers2"]["relative_distance"] == 0.0
    # identical share: bias and layers2 untouched -> 2 of 4 float tensors
    assert (r["n_identical"], r["n_tensors"], r["identical_share"]) == (2, 4, 0.5)
    assert (pm["encoder.layers1"]["n_identical"], pm["encoder.layers1"]["n_tensors"]) == (1, 2)
    # restricting keys
    only = relative_distance(a, b, keys=["encoder.layers2.weight", "encoder.layers1.0.bias"])
    assert only["relative_distance"] == 0.0 and only["identical_share"] == 1.0 and only["n_tensors"] == 2


def test_identical_share_is_bitwise():
    b = {"m.x.w": torch.zeros(3), "m.y.w": torch.ones(2)}
    a = {"m.x.w": torch.tensor([0.0, -0.0, 0.0]), "m.y.w": torch.ones(2, dtype=torch.float64)}
    r = relative_distance(a, b)
    assert r["relative_distance"] == 0.0  # equal values ...
    assert r["n_identical"] == 0  # ... but -0.0 has another bit pattern, and float64 is another dtype
    assert r["per_module"]["m.x"]["relative_distance"] == 0.0  # 0/0 -> 0
    a["m.x.w"] = torch.tensor([0.0, 1.0, 0.0])
    assert relative_distance(a, b)["per_module"]["m.x"]["relative_distance"] == math.inf


def test_module_prefix():
    assert module_prefix("encoder.layers1.0.blocks.1.attn.qkv.weight") == "encoder.layers1"
    assert module_prefix("encoder.layers2.weight") == "encoder.layers2"
    assert module_prefix("head.weight") == "head"
    assert module_prefix("cls_token") == "cls_token"


# ---------------------------------------------------------------------------------------------------------
# bad inputs
# ---------------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_smart_error():
    rng = np.random.default_rng(0)
    with pytest.raises(SmartError, match=r"n = 3 samples, need n >= 4"):
        linear_cka(rng.standard_normal((3, 5)), rng.standard_normal((3, 5)))
    with pytest.raises(SmartError, match=r"n = 1 samples, need n >= 2"):
        linear_cka(rng.standard_normal((1, 5)), rng.standard_normal((1, 5)), unbiased=False)
    with pytest.raises(SmartError, match=r"mismatched n"):
        linear_cka(rng.standard_normal((8, 5)), rng.standard_normal((9, 5)))
    with pytest.raises(SmartError, match=r"x: contains NaN"):
        linear_cka(np.full((6, 2), np.nan), rng.standard_normal((6, 2)))
    with pytest.raises(SmartError, match=r"y: HSIC\(y, y\).*not positive"):
        linear_cka(rng.standard_normal((6, 2)), np.ones((6, 3)))
    with pytest.raises(SmartError, match=r"scalar"):
        linear_cka(np.float64(1.0), rng.standard_normal((6, 2)))

    m = MinibatchCKA()
    with pytest.raises(SmartError, match=r"n = 3 samples"):
        m.update([rng.standard_normal((3, 4))], [rng.standard_normal((3, 4))])
    with pytest.raises(SmartError, match=r"mismatched n.*ys\[1\]"):
        m.update([rng.standard_normal((8, 4))], [rng.standard_normal((8, 4)), rng.standard_normal((7, 4))])
    with pytest.raises(SmartError, match=r"non-empty list"):
        m.update(rng.standard_normal((8, 4)), [rng.standard_normal((8, 4))])
    m.update([rng.standard_normal((8, 4))], [rng.standard_normal((8, 4))])
    with pytest.raises(SmartError, match=r"xs: layers / feature sizes \[5\] differ.*\[4\]"):
        m.update([rng.standard_normal((8, 5))], [rng.standard_normal((8, 4))])
    assert m.n_batches == 1  # the rejected batches left no trace

    a = _state()
    b = {k: v.clone() for k, v in a.items()}
    del b["head.weight"]
    with pytest.raises(SmartError, match=r"mismatched keys.*only in state_a \['head.weight'\]"):
        relative_distance(a, b)
    with pytest.raises(SmartError, match=r"mismatched keys.*nope"):
        relative_distance(a, a, keys=["nope"])
    b = {k: v.clone() for k, v in a.items()}
    b["encoder.layers2.weight"] = torch.zeros(2, 3)
    with pytest.raises(SmartError, match=r"encoder.layers2.weight: shape \(2, 2\) in state_a but \(2, 3\)"):
        relative_distance(a, b)
    b = {k: v.clone() for k, v in a.items()}
    b["head.weight"] = torch.tensor([1, 2, 3])
    with pytest.raises(SmartError, match=r"head.weight: floating point in state_a only"):
        relative_distance(a, b)
    with pytest.raises(SmartError, match=r"no floating-point tensors"):
        relative_distance({"n": torch.tensor(1)}, {"n": torch.tensor(1)})
