"""CLV models: the published CDNOW fits, estimator conventions, predictions, clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from plait.analytics.clv import BetaGeoModel, GammaGammaModel, ParetoNBDModel, holdout_report
from plait.errors import ModelError
from tests.conftest import package_file


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return pd.read_csv(package_file("lifetimes", "datasets/cdnow_customers_summary.csv"))


def test_bgnbd_reproduces_the_published_cdnow_fit(cdnow):
    m = BetaGeoModel().fit(cdnow)
    got = [m.params_[k] for k in ("r", "alpha", "a", "b")]
    assert got == pytest.approx([0.243, 4.414, 0.793, 2.426], abs=1e-3)
    assert m.log_likelihood_ == pytest.approx(-9582.4, abs=0.05)
    assert m.n_customers_ == 2357 and m.converged_


def test_pareto_nbd_reproduces_the_published_cdnow_fit(cdnow):
    m = ParetoNBDModel().fit(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    got = [m.params_[k] for k in ("r", "alpha", "s", "beta")]
    assert got == pytest.approx([0.553, 10.578, 0.606, 11.669], abs=2e-3)
    assert m.log_likelihood_ == pytest.approx(-9595.0, abs=0.05)


def test_gamma_gamma_reproduces_the_published_cdnow_fit():
    df = pd.read_csv(package_file("lifetimes", "datasets/cdnow_customers_summary_with_transactions.csv"))
    m = GammaGammaModel().fit(df["x"], df["zbar"])     # customers without repeat purchases are left out
    assert [m.params_[k] for k in ("p", "q", "v")] == pytest.approx([6.25, 3.74, 15.44], abs=0.01)
    assert m.n_customers_ == int((df["x"] > 0).sum()) == 946
    spend = m.expected_spend(df["x"], df["zbar"])
    # Shrinkage: a customer's expected spend lies between their own mean and the population mean.
    pop = m.params_["p"] * m.params_["v"] / (m.params_["q"] - 1)
    rep = (df["x"] > 0).to_numpy()
    lo = np.minimum(df["zbar"].to_numpy(), pop)[rep]
    hi = np.maximum(df["zbar"].to_numpy(), pop)[rep]
    assert np.all((spend[rep] >= lo - 1e-9) & (spend[rep] <= hi + 1e-9))


def test_predictions_behave(cdnow):
    bg = BetaGeoModel().fit(cdnow)
    pn = ParetoNBDModel().fit(cdnow)
    x, tx, T = cdnow["frequency"], cdnow["recency"], cdnow["T"]
    for m in (bg, pn):
        pa = m.p_alive(x, tx, T)
        assert np.all((pa > 0) & (pa <= 1))
        # Same frequency, a more recent last purchase: more likely alive, more purchases expected.
        assert m.p_alive([5], [35.0], [38.0])[0] > m.p_alive([5], [5.0], [38.0])[0]
        assert m.predict(10, [5], [35.0], [38.0])[0] > m.predict(10, [5], [5.0], [38.0])[0]
        # Predictions grow with the horizon, and the population mean matches the unconditional curve at T=0.
        p = m.predict(np.array([10.0]), [0], [0.0], [0.0])[0]
        assert p == pytest.approx(float(m.expected_purchases(10.0)), rel=1e-6)
        assert m.predict(52, x, tx, T).sum() > m.predict(26, x, tx, T).sum()
    # Published check (lifetimes docs): BG/NBD, customer with x=2, t_x=30.43, T=38.86 — 1.226 purchases in 39 weeks.
    assert bg.predict(39, [2], [30.43], [38.86])[0] == pytest.approx(1.226, abs=2e-3)


def test_lifetime_value_and_holdout_report(cdnow):
    bg = BetaGeoModel().fit(cdnow)
    df = pd.read_csv(package_file("lifetimes", "datasets/cdnow_customers_summary_with_transactions.csv"))
    gg = GammaGammaModel().fit(df["x"], df["zbar"])
    clv = gg.lifetime_value(bg, df["x"], df["t_x"], df["T"], df["zbar"], periods=12, period_length=30 / 7)
    assert clv.shape == (len(df),) and np.all(clv >= 0)
    undiscounted = gg.lifetime_value(bg, df["x"], df["t_x"], df["T"], df["zbar"], periods=12, period_length=30 / 7,
                                     discount_rate=0.0)
    assert np.all(undiscounted >= clv) and undiscounted.sum() > clv.sum()
    # Buyers who bought often and recently are worth more than one-off buyers.
    assert clv[(df["x"] >= 5).to_numpy()].mean() > 5 * clv[(df["x"] == 0).to_numpy()].mean()
    rep = holdout_report(bg, cdnow, np.zeros(len(cdnow)), 39)
    assert rep["customers"] == 2357 and rep["by_frequency"][0]["frequency"] == "0"
    assert rep["predicted_total"] > 0 and rep["actual_total"] == 0


def test_bad_input_names_the_customer():
    with pytest.raises(ModelError, match="position 1 .* 0 ≤ recency ≤ T"):
        BetaGeoModel().fit([1, 2], [1.0, 9.0], [5.0, 4.0])
    with pytest.raises(ModelError, match="no repeat purchase but recency"):
        ParetoNBDModel().fit([0], [3.0], [5.0])
    with pytest.raises(ModelError, match="not fitted"):
        BetaGeoModel().p_alive([1], [1], [2])
    with pytest.raises(ModelError, match="needs columns"):
        BetaGeoModel().fit(pd.DataFrame({"a": [1]}))
    with pytest.raises(ModelError, match="positive"):
        GammaGammaModel().fit([1, 2], [0.0, 3.0])


def test_recovers_simulated_parameters():
    rng = np.random.default_rng(5)
    n = 60_000
    T = rng.integers(30, 366, n).astype(float)
    lam, mu = rng.gamma(0.5, 1 / 20, n), rng.gamma(0.6, 1 / 100, n)
    obs = np.minimum(rng.exponential(1 / mu), T)
    x = rng.poisson(lam * obs).astype(float)
    tx = np.where(x > 0, rng.beta(np.maximum(x, 1), 1) * obs, 0.0)
    m = ParetoNBDModel().fit(x, tx, T)
    assert m.params_["r"] == pytest.approx(0.5, rel=0.1) and m.params_["alpha"] == pytest.approx(20, rel=0.15)
    assert m.params_["s"] == pytest.approx(0.6, rel=0.25)
