"""The README's Python API section runs as printed and does what its comments say."""

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_api_block():
    text = README.read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_python_api_section_runs_and_its_comments_hold():
    namespace = {}
    exec(compile(python_api_block(), "README.md (Python API)", "exec"), namespace)
    images, pixels = namespace["images"], namespace["pixels"]
    assert pixels.shape == images.shape and np.abs(pixels).max() > 0
    assert namespace["acts"]["conv5"].shape == (2, 13, 13, 256)
    assert namespace["field"].size == (139, 139)
    model, variant = namespace["model"], namespace["variant"]
    names = {layer.name for layer in variant.layers}
    assert "conv3" not in names and "conv4" not in names and {"conv3", "conv4"} <= {layer.name for layer in model.layers}
