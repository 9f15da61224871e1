"""What determines a training run: :class:`TrainConfig` (saved as the run's ``config.json``)."""

import dataclasses
from typing import Optional

from zfkeras.data import DEFAULT_SOURCE
from zfkeras.nn.models import ARCHITECTURES, KERNEL_INITS
from zfkeras.nn.precision import check_precision, default_precision
from zfkeras.training.rundir import RunDir

PAPER_CHECKPOINT_EPOCHS = (1, 2, 5, 10, 20, 30, 40, 64)


@dataclasses.dataclass
class TrainConfig:
    """Everything that determines a training run (saved as ``config.json``).

    Attributes:
        arch: a name in ``zfkeras.nn.models.ARCHITECTURES``. ``units``: optional layer widths,
            e.g. ``{"conv3": 512, "fc6": 2048}`` (``ModelSpec.with_units``). ``without``: layer
            numbers removed (``ModelSpec.without``, e.g. ``(3, 4)``). ``convs``: conv-layer fields
            changed, e.g. ``{"conv1": {"kernel": 7, "stride": 2}}`` (``ModelSpec.with_conv``).
            Together they rebuild any Table 3 variant from the run's ``config.json``.
        frozen: names of layers whose weights training leaves untouched (transfer learning).
        input_shape: model input ``(S, S, C)``; images are resized/cropped to it.
        num_classes: outputs; must match the training source's class names.
        epochs: epochs to train. batch_size: global batch (split across replicas).
        lr, momentum: SGD. patience: epochs without a validation-loss improvement larger than
            ``min_delta`` before the learning rate is multiplied by ``anneal_factor`` (not below
            ``min_lr``). With no validation data the training loss is watched instead.
        dropout, kernel_init, init_std, filter_radius: see ``zfkeras.nn.models.ModelSpec``.
        checkpoint_epochs: 1-based epochs whose model is kept (clipped to ``epochs``).
        seed: initialization, validation split, shuffling, crops and dropout.
        strategy: ``make_strategy`` name. precision: what the training step computes in, one of
            ``zfkeras.nn.precision.PRECISIONS`` (variables, checkpoints and exports stay float32),
            or ``"auto"``, which :meth:`resolved` turns into one. data, val_data: source specs, recorded for the record
            (the caller opens them). val_split: fraction of the training source held out for
            validation when no validation source is given (0 = none).
        flip: random horizontal flips of the training crops (off for data a mirror changes).
    """

    arch: str = "zfnet_small"
    input_shape: tuple = (28, 28, 1)
    num_classes: int = 10
    units: dict = dataclasses.field(default_factory=dict)
    without: tuple = ()
    convs: dict = dataclasses.field(default_factory=dict)
    frozen: tuple = ()
    epochs: int = 70
    batch_size: int = 128
    lr: float = 1e-2
    momentum: float = 0.9
    patience: int = 3
    anneal_factor: float = 0.1
    min_delta: float = 1e-4
    min_lr: float = 1e-6
    dropout: float = 0.5
    kernel_init: str = "normal"
    init_std: float = 1e-2
    filter_radius: Optional[float] = 0.1
    checkpoint_epochs: tuple = PAPER_CHECKPOINT_EPOCHS
    seed: int = 0
    strategy: str = "auto"
    precision: str = "float32"
    data: str = DEFAULT_SOURCE
    val_data: Optional[str] = None
    val_split: float = 0.1
    flip: bool = True

    def __post_init__(self):
        self.input_shape = tuple(int(v) for v in self.input_shape)
        self.checkpoint_epochs = tuple(sorted({int(e) for e in self.checkpoint_epochs}))
        self.units = dict(self.units or {})
        self.without = tuple(sorted({int(v) for v in self.without}))
        self.convs = {str(k): dict(v) for k, v in (self.convs or {}).items()}
        self.frozen = tuple(str(v) for v in self.frozen)
        self.validate()

    def validate(self):
        """Raise ValueError naming the first bad field."""
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if len(self.input_shape) != 3 or self.input_shape[0] != self.input_shape[1] or self.input_shape[2] not in (1, 3):
            raise ValueError(f"input_shape must be (S, S, 1) or (S, S, 3), got {self.input_shape}")
        for name in ("num_classes", "epochs", "batch_size", "patience"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("lr", "min_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not 0 < self.anneal_factor < 1:
            raise ValueError(f"anneal_factor must be in (0, 1), got {self.anneal_factor!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")
        if not 0 <= self.val_split < 1:
            raise ValueError(f"val_split must be in [0, 1), got {self.val_split!r}")
        if self.precision != "auto":
            check_precision(self.precision)
        if any(e < 1 for e in self.checkpoint_epochs):
            raise ValueError(f"checkpoint_epochs must be epoch numbers >= 1, got {self.checkpoint_epochs}")
        self.model_spec()  # validates units, dropout, kernel_init, init_std, filter_radius

    def model_spec(self):
        """The ``zfkeras.nn.models.ModelSpec`` this config trains."""
        if self.kernel_init not in KERNEL_INITS:
            raise ValueError(f"kernel_init must be one of {KERNEL_INITS}, got {self.kernel_init!r}")
        spec = ARCHITECTURES[self.arch](num_classes=self.num_classes, input_shape=self.input_shape)
        if self.without:
            spec = spec.without(*self.without)
        for layer, fields in self.convs.items():
            spec = spec.with_conv(layer, **fields)
        if self.units:
            spec = spec.with_units(**self.units)
        return spec.replace(dropout=self.dropout, kernel_init=self.kernel_init, init_std=self.init_std, filter_radius=self.filter_radius)

    @property
    def kept_epochs(self):
        """``checkpoint_epochs`` clipped to the run."""
        return tuple(e for e in self.checkpoint_epochs if e <= self.epochs)

    def to_dict(self):
        tuples = ("input_shape", "checkpoint_epochs", "without", "frozen")
        return {**dataclasses.asdict(self), **{name: list(getattr(self, name)) for name in tuples}}

    @classmethod
    def from_dict(cls, values):
        """A config from :meth:`to_dict` output (unknown keys are an error)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field {unknown[0]!r}; fields: {', '.join(sorted(known))}")
        return cls(**values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def resolved(self, run_dir=None):
        """This config with ``precision="auto"`` made concrete: the precision an unfinished run in
        ``run_dir`` was started with (float32 for runs from before precisions were recorded), so it
        resumes as it began; otherwise this machine's :func:`~zfkeras.nn.precision.default_precision`."""
        if self.precision != "auto":
            return self
        recorded = RunDir(run_dir).unfinished_config() if run_dir is not None else None
        precision = recorded.get("precision", "float32") if recorded is not None else default_precision()
        return self.replace(precision=precision)
