"""Shared test set-up: quiet TF, fixed seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


from browser import browser  # noqa: E402, F401  (the headless-Chromium fixture of the page tests)
