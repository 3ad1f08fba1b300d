"""The one paired test every report uses (recsys.eval.paired): its relative gain and how reports print it."""

import numpy as np
import pytest

from recsys.eval.paired import gain_text, paired_test


def test_relative_gain_is_the_mean_delta_over_the_inputs_mean():
    r = paired_test(np.array([0.5, 0.25, 0.0, 1.0]), np.array([0.25, 0.25, 0.25, 0.5]))
    assert r["delta"] == pytest.approx(0.125) and r["rel_gain"] == pytest.approx(0.125 / 0.3125)
    assert (r["users_better"], r["users_worse"], r["n_users"]) == (2, 1, 4)
    assert gain_text(r["rel_gain"]) == "+40.0%" and gain_text(-0.0084) == "-0.8%"


def test_an_input_that_scores_zero_has_no_relative_gain():
    """A smoke run's untrained input scores 0 for every user: the gain is n/a, not delta / 1e-12."""
    r = paired_test(np.r_[np.ones(3), np.zeros(7)], np.zeros(10))
    assert r["rel_gain"] is None and r["delta"] == pytest.approx(0.3)
    assert gain_text(r["rel_gain"]) == "n/a (input 0)"


def test_misaligned_users_are_an_error():
    with pytest.raises(ValueError, match="align per user"):
        paired_test(np.ones(3), np.ones(4))
