"""zfkeras.first_layer: the Sec. 4.1 aggregation of dead filters and aliasing (what ``zf filters``
and ``zf ablate`` report), on a report filled in by hand.

The per-filter and per-map numbers are given; the expected fractions, means and lists below are
worked out by hand. ``tests/test_filters.py`` checks the scan that fills a report in on a model.
"""

import json

import numpy as np

from zfkeras.analysis.first_layer import FirstLayerReport


def hand_report(silent):
    bands = np.array([[0.5, 0.3, 0.2], [np.nan, np.nan, np.nan], [0.1, 0.1, 0.8], [0.3, 0.5, 0.2]])  # filter 1 is all zero
    return FirstLayerReport(
        first="conv1",
        second="conv2",
        kernel=np.zeros((7, 5, 3, 4), "float32"),
        stride=2,
        images=12,
        mean_activation=np.array([4.0, 0.0, 0.01, 6.0]),
        dead=np.array([False, True, True, False]),
        threshold=0.01,
        band_shares=bands,
        maps=[3, 8, 9],
        aliasing=np.array([0.2, 0.9, 0.4]),
        silent=np.asarray(silent),
        crops=np.zeros((3, 1, 1, 3)),
    )


def test_dead_and_aliasing_aggregates_by_hand():
    report = hand_report([False, True, False])  # map 8 never fired: its 0.9 is not counted
    assert report.dead_fraction == 0.5
    assert abs(report.aliasing_share - 0.3) < 1e-12  # (0.2 + 0.4) / 2
    layout = json.loads(json.dumps(report.to_dict()))  # JSON-able as written
    first, second = layout["first_layer"], layout["second_layer"]
    assert layout["images"] == 12
    assert first["kernel"] == [7, 5] and first["filters"] == 4 and first["stride"] == 2
    assert first["dead_filters"] == [1, 2] and first["dead_fraction"] == 0.5 and first["dead_threshold"] == 0.01
    assert first["mean_activation_median"] == 2.005  # median of 0, 0.01, 4, 6
    # the mean over the three filters with a spectrum (the zero filter has none)
    assert first["band_shares"] == {"low": 0.3, "mid": 0.3, "high": 0.4}
    assert second["maps"] == [3, 8, 9] and second["nyquist_cycles_per_pixel"] == 0.25
    assert abs(second["aliasing_share"] - 0.3) < 1e-12
    assert second["aliasing_per_map"] == {"3": 0.2, "8": None, "9": 0.4}
    assert second["silent_maps"] == [8]


def test_aliasing_share_is_none_when_no_map_fired():
    report = hand_report([True, True, True])
    assert report.aliasing_share is None and report.to_dict()["second_layer"]["silent_maps"] == [3, 8, 9]
    assert hand_report([False, False, False]).aliasing_share == (0.2 + 0.9 + 0.4) / 3
