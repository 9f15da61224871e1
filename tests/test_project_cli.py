"""`zf project` / `zf demo`: PNG + arrays from a real photo, equal to the deconvnet's own output."""

import os

import numpy as np
from click.testing import CliRunner

from pipelines.cli import main
from zfkeras import Deconvnet
from zfkeras.nn.models import zfnet


def test_projects_a_real_photo_on_zfnet(tmp_path):
    # chelsea: scikit-image's cat photo (300x451 RGB), shipped inside the scikit-image wheel; the
    # last step of `zf demo` runs exactly this command.
    result = CliRunner().invoke(main, ["project", "random:zfnet", "chelsea", "--seed", "3", "--out", str(tmp_path / "photo")])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / "photo")) == ["projection.npz", "projection.png"]
    png = (tmp_path / "photo" / "projection.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    arrays = np.load(tmp_path / "photo" / "projection.npz")
    image = arrays["images"][:1]
    assert image.shape == (1, 224, 224, 3) and image.std() > 10  # a real photo, not a blank
    deconv = Deconvnet(zfnet(seed=3))  # same seed, same weights
    for layer in ("conv1", "conv5"):
        maps = arrays[f"{layer}_maps"][0]
        acts = deconv.activations(image, [layer])[layer][0]
        assert acts[..., maps[0]].max() == acts.max()  # the first map shown is the strongest one
        expected = deconv.project(np.repeat(image, len(maps), 0), layer, maps)
        got = arrays[f"{layer}_projections"][0]
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_project_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    result = CliRunner().invoke(main, ["project", "random:zfnet", str(bad), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and f"{bad}: not a readable image" in result.output
    result = CliRunner().invoke(main, ["project", "random:zfnet_small", "chelsea", "--layers", "conv9", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "--layers: unknown layer 'conv9'; valid layers: conv1, conv2, conv3, conv4, conv5" in result.output
    assert not (tmp_path / "x").exists()
