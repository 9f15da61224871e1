"""What the live toolbox (``zf toolbox``) computes for one frame: the class probabilities, every map
of one layer, and one unit's strongest activation projected back to pixels (paper Sec. 2.1).

A frame costs one forward pass and, when a unit is chosen, one windowed deconvnet pass: for a Keras
model the layer's maps and the probabilities come from a single pass through the model; the unit's
strongest position is read from those maps and handed to ``probe.project`` as ``(y, x)``, so the
way up and down runs on the unit's receptive-field windows only (:class:`zfkeras.nn.deconv.Deconvnet`)
instead of a second whole-image pass to find the maximum. The projection equals
``probe.project(image, layer, unit, "max")`` (tested); only when two positions of the map tie to
the last bit could the two pick different ones (both take the first in row-major order).
"""

import dataclasses

import numpy as np

from zfkeras.nn.probe import KerasProbe


@dataclasses.dataclass
class Look:
    """One frame seen by the model.

    Attributes:
        probabilities: float32 ``[classes]``.
        layer: the layer whose maps are given.
        maps: float32 ``[h, w, K]``: that layer's rectified maps.
        unit: the chosen map (None: none chosen; then the next three are None too).
        position: ``(y, x)`` of the unit's strongest activation in its map.
        activation: its value.
        projection: float32 ``[H, W, C]``: its projection (deconvnet, or the LiveProbe's backward
            rule), in the model's mean-subtracted input space.
    """

    probabilities: np.ndarray
    layer: str
    maps: np.ndarray
    unit: int | None = None
    position: tuple | None = None
    activation: float | None = None
    projection: np.ndarray | None = None

    def top(self, k=5):
        """``[(class index, probability)]`` of the ``k`` most probable classes, most probable
        first (ties: lower index first, as :func:`zfkeras.analysis.evaluate.top_k_correct`)."""
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return [(int(c), float(self.probabilities[c])) for c in order]


class LiveProbe:
    """Frames through a :class:`~zfkeras.nn.probe.Probe`, one :class:`Look` each (:meth:`look`).

    Args:
        probe: any Probe (a :class:`KerasProbe` gets the single fused pass; others answer with
            ``features`` then ``predict``).
        rule: the backward rule of the projections, "deconvnet" (the paper's), "guided" or
            "gradient" (:meth:`~zfkeras.nn.probe.Probe.project`).
    """

    def __init__(self, probe, rule="deconvnet"):
        from zfkeras.nn.adjoint import check_rule

        self.probe, self.rule = probe, check_rule(rule)
        self._passes = {}  # layer -> tf.function(images) -> (maps, probabilities), Keras models only

    def check(self, layer, unit=None, maps=None):
        """``layer`` if it is one of ``probe.layer_names`` and ``unit`` (if given) a map index below
        ``maps``; else a ValueError naming the bad one and what is accepted."""
        layer = self.probe.check_layers(layer, self.probe.layer_names)[0]
        if unit is not None:
            if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)):
                raise ValueError(f"unit must be a map index (an integer), got {unit!r}")
            if maps is not None and not 0 <= unit < maps:
                raise ValueError(f"unit {unit}: {layer} has maps 0-{maps - 1}")
        return layer

    def forward(self, images, layer):
        """``(maps of layer [N, h, w, K], probabilities [N, classes])`` of raw pixels ``images``."""
        images = self.probe.check_images(images)
        if not isinstance(self.probe, KerasProbe):
            maps = self.probe.features(images, [layer], batch_size=len(images))[layer]
            return maps, self.probe.predict(images, batch_size=len(images))
        if layer not in self._passes:
            import keras
            import tensorflow as tf

            model = self.probe.model
            fused = keras.Model(model.inputs, [self.probe.deconvnet.selection_layer(layer).output, model.outputs[0]])
            spec = tf.TensorSpec((None, *self.probe.input_shape), tf.float32)
            self._passes[layer] = tf.function(lambda x: fused(x, training=False), input_signature=[spec])
        maps, probabilities = self._passes[layer](images)
        return maps.numpy(), probabilities.numpy()

    def see(self, image, layer):
        """The :class:`Look` of one frame ``image`` ``[H, W, C]`` (raw pixels at ``probe.input_shape``)
        at ``layer``: probabilities and maps, no unit."""
        layer = self.check(layer)
        maps, probabilities = self.forward(self.probe.check_images(np.asarray(image)[None]), layer)
        return Look(probabilities=probabilities[0], layer=layer, maps=maps[0])

    def project(self, image, look, unit):
        """``look`` (:meth:`see` of the same ``image``) with map ``unit``'s strongest activation,
        its position and its projection under :attr:`rule` (windowed, at the position read from ``look.maps``)."""
        self.check(look.layer, unit, look.maps.shape[-1])
        unit = int(unit)
        chosen = look.maps[..., unit]
        y, x = (int(v) for v in np.unravel_index(int(np.argmax(chosen)), chosen.shape))
        image = self.probe.check_images(np.asarray(image)[None])
        projection = self.probe.project(image, look.layer, unit, np.array([[y, x]], "int32"), rule=self.rule)[0]
        return dataclasses.replace(look, unit=unit, position=(y, x), activation=float(chosen[y, x]), projection=projection)

    def look(self, image, layer, unit=None):
        """:meth:`see`, then :meth:`project` when ``unit`` is given."""
        look = self.see(image, layer)
        return look if unit is None else self.project(image, look, unit)
