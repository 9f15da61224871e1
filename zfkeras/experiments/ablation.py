"""Architecture ablation (paper Table 3) and the first-layer comparison of Sec. 4.1 / Fig. 6.

Every :class:`Variant` of one base :class:`~zfkeras.training.TrainConfig` is trained by
:func:`zfkeras.training.train` on the same data, seed and budget, then reported as in Table 3: train
top-1 error (the final model on its training images, centre crop), validation top-1 and top-5
error, test top-1 error, and the number of trainable parameters. The base and every variant that
changes conv1 also get the first-layer diagnostics of :mod:`zfkeras.analysis.first_layer` (dead filters,
aliasing), so a large-stride "AlexNet-like" first layer can be compared with the base one.

A variant is written as a short text (:func:`parse_variant`, :data:`VARIANT_SYNTAX`)::

    without=3,4                      conv3 and conv4 removed ("without=conv3,conv4" too)
    units=conv3=192,conv4=192        wider conv3/conv4
    conv1=kernel:7,stride:2          a 7x7 stride-2 first layer
    name=thin fc;units=fc6=64,fc7=64 clauses joined by ';', with a label for the table
"""

import dataclasses
import os
import re

import numpy as np

from zfkeras.analysis.evaluate import evaluate
from zfkeras.analysis.first_layer import first_layer_report
from zfkeras.data import ImageBatches, eval_dataset
from zfkeras.io.validation import parse_pairs
from zfkeras.nn.probe import KerasProbe
from zfkeras.training import RunDir, TrainConfig, split_source, train

VARIANT_SYNTAX = (
    "'base', or clauses joined by ';': without=L,L (layer numbers 1-7 or names conv3, fc6), "
    "units=LAYER=N,... (e.g. conv3=192,fc6=128), convK=FIELD:VALUE,... (kernel, stride, filters: ints; "
    "padding: an int, same or valid), name=LABEL"
)
CONV_FIELDS = ("kernel", "stride", "filters", "padding")
# The AlexNet step of Fig. 6: ZFNet's 7x7/2 first layer against AlexNet's 11x11/4; one scale
# down, the small model's 3x3/1 against 7x7/2. Other first layers: (2k + 1) x (2k + 1) / 2s.
FIRST_LAYER_STEP = {(3, 1): (7, 2), (7, 2): (11, 4)}


@dataclasses.dataclass
class Variant:
    """One row of the ablation: changes applied to the base config.

    Attributes:
        name: the row's label (unique within a run; also names its run directory).
        without: layer numbers removed (conv 1-5, fc 6-7), added to the base's.
        units: ``{layer: width}``, e.g. ``{"conv3": 192}``.
        convs: ``{conv layer: {field: value}}``, e.g. ``{"conv1": {"kernel": 7, "stride": 2}}``.
    """

    name: str
    without: tuple = ()
    units: dict = dataclasses.field(default_factory=dict)
    convs: dict = dataclasses.field(default_factory=dict)

    @property
    def is_base(self):
        """True when the variant changes nothing."""
        return not (self.without or self.units or self.convs)

    @property
    def changes_first_layer(self):
        return "conv1" in self.convs

    @property
    def text(self):
        """The variant in :func:`parse_variant` syntax (without the name)."""
        clauses = []
        if self.without:
            clauses.append("without=" + ",".join(str(n) for n in self.without))
        if self.units:
            clauses.append("units=" + ",".join(f"{k}={v}" for k, v in self.units.items()))
        for layer, fields in self.convs.items():
            clauses.append(f"{layer}=" + ",".join(f"{k}:{v}" for k, v in fields.items()))
        return ";".join(clauses) or "base"

    @property
    def slug(self):
        """A file-name-safe form of ``name`` (the variant's run directory)."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "variant"

    def apply(self, base):
        """The :class:`~zfkeras.training.TrainConfig` of this variant of ``base``.

        Widths and conv changes the base gives for layers this variant removes are dropped
        (``ModelSpec.with_units`` refuses removed layers). ValueError names the variant.
        """
        removed = set(base.without) | set(self.without)
        gone = {f"fc{n}" if n in (6, 7) else f"conv{n}" for n in removed}
        units = {k: v for k, v in base.units.items() if k not in gone}
        units.update(self.units)
        convs = {k: dict(v) for k, v in base.convs.items() if k not in gone}
        for layer, fields in self.convs.items():
            convs.setdefault(layer, {}).update(fields)
        try:
            return base.replace(without=tuple(sorted(removed)), units=units, convs=convs)
        except ValueError as error:
            raise ValueError(f"variant {self.name!r}: {str(error).splitlines()[0]}") from None

    def to_dict(self):
        return {
            "name": self.name,
            "text": self.text,
            "without": list(self.without),
            "units": dict(self.units),
            "convs": {k: dict(v) for k, v in self.convs.items()},
        }


def _layer_number(token):
    token = token.strip()
    for prefix in ("conv", "fc", ""):
        rest = token[len(prefix) :] if token.startswith(prefix) else None
        if rest is not None and rest.isdigit() and (prefix != "fc" or rest in ("6", "7")):
            number = int(rest)
            if 1 <= number <= 7 and (prefix != "conv" or number <= 5):
                return number
    raise ValueError(f"{token!r} is not a layer (1-7, conv1-conv5, fc6, fc7)")


def _conv_value(field, value):
    if field == "padding" and value in ("same", "valid"):
        return value
    if not value.isdigit():
        raise ValueError(f"{field}:{value} needs an int{' or same/valid' if field == 'padding' else ''}")
    return int(value)


def parse_variant(text):
    """A :class:`Variant` from its text (:data:`VARIANT_SYNTAX`); ValueError naming the bad text.

    The name defaults to the text itself, e.g. ``"without=3,4"``.
    """
    text = str(text).strip()
    if text == "base":
        return Variant("base")
    name, without, units, convs = None, [], {}, {}
    try:
        for clause in filter(None, (part.strip() for part in text.split(";"))):
            key, sep, value = clause.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"clause {clause!r} has no '='")
            if key == "name":
                name = value.strip() or None
            elif key == "without":
                without += [_layer_number(token) for token in value.split(",") if token.strip()]
            elif key == "units":
                for layer, width in parse_pairs(value, "=", "LAYER=UNITS like conv3=192"):
                    if not width.isdigit() or int(width) < 1:
                        raise ValueError(f"{layer}={width}: units must be a positive int")
                    units[layer] = int(width)
            elif re.fullmatch(r"conv\d+", key):
                fields = convs.setdefault(key, {})
                for field, field_value in parse_pairs(value, ":", "FIELD:VALUE like kernel:7"):
                    if field not in CONV_FIELDS:
                        raise ValueError(f"unknown conv field {field!r} (use {', '.join(CONV_FIELDS)})")
                    fields[field] = _conv_value(field, field_value)
            else:
                raise ValueError(f"unknown clause {key!r}")
        if not (without or units or convs):
            raise ValueError("no change given")
    except ValueError as error:
        raise ValueError(f"variant {text!r}: {error}; use {VARIANT_SYNTAX}") from None
    clauses = [part.strip() for part in text.split(";") if part.strip() and not part.strip().startswith("name=")]
    return Variant(name or ";".join(clauses), tuple(sorted(set(without))), units, convs)


def coarse_first_layer(spec):
    """``(kernel, stride)`` of the AlexNet-like first layer compared with ``spec``'s (Sec. 4.1)."""
    conv = spec.convs[0]
    if conv is None:
        raise ValueError(f"{spec.name} has no conv1 to compare")
    return FIRST_LAYER_STEP.get((conv.kernel, conv.stride), (2 * conv.kernel + 1, 2 * conv.stride))


def default_variants(spec):
    """The paper's Table 3 rows adapted to ``spec`` (the base ModelSpec), then the Sec. 4.1 row.

    base; without fc6,fc7; without conv3,conv4; without conv3,conv4,fc6,fc7; conv3-5 twice as wide;
    fc6/fc7 half as wide; conv1 with a larger kernel and stride (:func:`coarse_first_layer`).
    Rows that need a layer ``spec`` lacks are left out.
    """
    convs, fc = spec.convs, spec.fc

    def present(*numbers):
        return all((fc[n - 6] if n >= 6 else (n <= len(convs) and convs[n - 1])) is not None for n in numbers)

    variants = [Variant("base")]
    if present(6, 7):
        variants.append(Variant("without fc6,fc7", without=(6, 7)))
    if present(3, 4):
        variants.append(Variant("without conv3,conv4", without=(3, 4)))
    if present(3, 4, 6, 7):
        variants.append(Variant("without conv3,conv4,fc6,fc7", without=(3, 4, 6, 7)))
    if present(3, 4, 5):
        wide = {f"conv{n}": 2 * convs[n - 1].filters for n in (3, 4, 5)}
        variants.append(Variant(f"wider conv3-5 ({','.join(map(str, wide.values()))})", units=wide))
    if present(6, 7):
        narrow = {f"fc{n}": max(1, fc[n - 6] // 2) for n in (6, 7)}
        variants.append(Variant(f"narrower fc6,fc7 ({','.join(map(str, narrow.values()))})", units=narrow))
    if present(1):
        kernel, stride = coarse_first_layer(spec)
        variants.append(Variant(f"conv1 {kernel}x{kernel}/{stride}", convs={"conv1": {"kernel": kernel, "stride": stride}}))
    return variants


def trainable_params(model):
    """Number of trainable weights of ``model`` (the mean image and optimizer state not counted)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def sample_source(source, count, seed):
    """A seeded random ``count`` of ``source``'s examples (kept in source order), as a Source.

    The examples are those :func:`zfkeras.training.split_source` would hold out with the same seed.
    ``count`` >= the number of examples returns ``source`` itself.
    """
    total = source.num_examples
    if not total:
        raise ValueError(f"cannot sample {source.name}: its number of examples is unknown")
    if count is None or count >= total:
        return source
    if count < 1:
        raise ValueError(f"images must be >= 1, got {count}")
    _, chosen = split_source(source, count / total, seed)
    return dataclasses.replace(chosen, name=f"{source.name} (random {count} of {total}, seed {seed})")


@dataclasses.dataclass
class VariantResult:
    """One row of the ablation. Errors are fractions in [0, 1] (None without validation data).

    ``first_layer`` is a :class:`zfkeras.analysis.first_layer.FirstLayerReport` for the base and conv1
    variants (else None); ``reused`` says the run was found finished and not retrained.
    """

    variant: Variant
    config: object
    run_dir: str
    params: int
    train_top1_error: float
    val_top1_error: float
    val_top5_error: float
    test_top1_error: float
    epochs: int
    train_seconds: float
    reused: bool
    first_layer: object = None

    def to_dict(self):
        row = {"variant": self.variant.to_dict(), "params": self.params}
        row.update(
            {
                key: getattr(self, key)
                for key in ("train_top1_error", "val_top1_error", "val_top5_error", "test_top1_error", "epochs", "train_seconds", "reused", "run_dir")
            }
        )
        row["config"] = self.config.to_dict()
        row["first_layer"] = self.first_layer.to_dict() if self.first_layer is not None else None
        return row


def _finished_run(run, config, train_source):
    """The finished model in :class:`RunDir` ``run`` if it was trained with ``config`` on
    ``train_source``; None if there is none; ValueError if it was trained differently (never
    silently reused or overwritten)."""
    import keras

    if not run.finished:
        return None
    record = run.read_config()
    # Keys a run from an older zfkeras did not record count as their defaults (precision: float32).
    before = {**TrainConfig().to_dict(), **record.get("config", {}), "data": record.get("data"), "num_train": record.get("num_train")}
    now = {**config.to_dict(), "data": train_source.name, "num_train": train_source.num_examples}
    if now["precision"] == "auto":  # auto takes the precision the run was trained in
        now["precision"] = before["precision"]
    changed = [key for key in now if key != "strategy" and before.get(key) != now[key]]
    if changed:
        key = changed[0]
        raise ValueError(f"{run.path} holds a finished run with {key}={before.get(key)!r}, not {now[key]!r}; remove it or use another runs directory")
    return keras.saving.load_model(run.model_file, compile=False)


def _errors(probe, source, input_shape, batch_size):
    size, _, channels = input_shape
    batches = eval_dataset(source, size, channels, batch_size, crops="center", cache=False).as_numpy_iterator()
    return evaluate({"model": probe}, batches, batch_size=batch_size)["models"]["model"]


def run_ablation(
    base,
    variants,
    train_source,
    test_source,
    runs_dir,
    *,
    val_source=None,
    diagnose_images=1000,
    max_maps=64,
    callbacks=None,
    on_variant=None,
    strategy=None,
    metadata=None,
    batch_size=256,
):
    """Train and evaluate each variant of ``base``; reuse runs already finished in ``runs_dir``.

    Args:
        base: the base :class:`~zfkeras.training.TrainConfig` (architecture, epochs, seed, recipe).
        variants: :class:`Variant` list with distinct names (e.g. :func:`default_variants`).
        train_source: training Source. Unless ``val_source`` is given, ``base.val_split`` of it is
            held out (:func:`zfkeras.training.split_source`, seeded by ``base.seed``) for validation.
        test_source: the test Source (test top-1 error, and the images the first layers are
            diagnosed on).
        runs_dir: each variant's run goes to ``runs_dir/<variant.slug>``; a finished one (its
            ``model.keras`` written, same config and data) is loaded instead of retrained.
        diagnose_images: test images scanned for the first-layer diagnostics.
        max_maps: second-layer maps projected for aliasing (the first ``max_maps``).
        callbacks: ``callable(variant) -> [keras.callbacks.Callback]`` for its training.
        on_variant: ``callable(index, variant, stage)`` with stage ``"train"``, ``"reuse"``,
            ``"evaluate"`` or ``"diagnose"`` (progress reports).
        strategy, metadata: passed to :func:`zfkeras.training.train`.
        batch_size: images per evaluation batch.

    Returns:
        list of :class:`VariantResult`, in the order of ``variants``.
    """
    slugs = [v.slug for v in variants]
    if len(set(slugs)) < len(slugs):
        twice = next(v.name for v in variants if slugs.count(v.slug) > 1)
        raise ValueError(f"two variants share the name {twice!r}; give one another name (name=LABEL)")
    configs = [variant.apply(base) for variant in variants]  # every variant checked before any training
    fit_source = train_source
    if val_source is None and base.val_split:
        fit_source, val_source = split_source(train_source, base.val_split, base.seed)
    report = on_variant or (lambda index, variant, stage: None)
    sources = {"train": fit_source, "val": val_source, "test": test_source}
    results = []
    for index, (variant, config) in enumerate(zip(variants, configs)):
        run = RunDir(os.path.join(runs_dir, variant.slug))
        model = _finished_run(run, config, fit_source)
        reused = model is not None
        report(index, variant, "reuse" if reused else "train")
        if not reused:
            extra = callbacks(variant) if callbacks else ()
            metadata_ = {"ablation_variant": variant.to_dict(), **(metadata or {})}
            model, _ = train(config, fit_source, val_source, run.path, callbacks=extra, strategy=strategy, metadata=metadata_)
        report(index, variant, "evaluate")
        config = config.replace(precision=run.read_config()["config"].get("precision", "float32"))  # what auto chose
        probe = KerasProbe(model, class_names=train_source.class_names)
        result = _evaluate_variant(variant, config, run, probe, sources, batch_size, reused)
        if (variant.is_base or variant.changes_first_layer) and len(probe.layer_names) >= 2:
            report(index, variant, "diagnose")
            images = ImageBatches(test_source, config.input_shape, batch_size, diagnose_images)
            count = model.get_layer(probe.layer_names[1]).filters
            result.first_layer = first_layer_report(probe, model, images, range(min(count, max_maps)), batch_size=batch_size)
        results.append(result)
    return results


def _evaluate_variant(variant, config, run, probe, sources, batch_size, reused):
    """The :class:`VariantResult` of one trained variant: its errors on each split and its run's record."""
    history = run.read_history()
    errors = {split: _errors(probe, source, config.input_shape, batch_size) if source is not None else {} for split, source in sources.items()}
    return VariantResult(
        variant=variant,
        config=config,
        run_dir=run.path,
        params=trainable_params(probe.model),
        train_top1_error=errors["train"]["top1_error"],
        val_top1_error=errors["val"].get("top1_error"),
        val_top5_error=errors["val"].get("top5_error"),
        test_top1_error=errors["test"]["top1_error"],
        epochs=len(history["epoch"]),
        train_seconds=float(sum(history["seconds"])),
        reused=reused,
        first_layer=None,
    )
