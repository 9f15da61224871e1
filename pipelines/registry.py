"""The ``zf`` commands by name: where each lives and its one-line help. Commands are imported
only when run (:func:`command`), so ``zf --help`` stays fast; ``zf demo`` runs others through it."""

import importlib

# command name -> "module:function" (modules under pipelines/commands/)
COMMANDS = {
    "demo": "pipelines.commands.demo:demo",
    "project": "pipelines.commands.project:project",
    "train": "pipelines.commands.train:train",
    "export": "pipelines.commands.export:export",
    "evaluate": "pipelines.commands.evaluate:evaluate",
    "visualize": "pipelines.commands.visualize:visualize",
    "atlas": "pipelines.commands.atlas:atlas",
    "evolution": "pipelines.commands.evolution:evolution",
    "filters": "pipelines.commands.filters:filters",
    "occlusion": "pipelines.commands.occlusion:occlusion",
    "invariance": "pipelines.commands.invariance:invariance",
    "correspondence": "pipelines.commands.correspondence:correspondence",
    "transfer": "pipelines.commands.transfer:transfer",
    "layers": "pipelines.commands.layer_probes:layers",
    "ablate": "pipelines.commands.ablate:ablate",
    "report": "pipelines.commands.report:report",
    "prepare": "pipelines.commands.prepare:prepare",
    "emoji": "pipelines.commands.emoji:emoji",
    "localization": "pipelines.commands.localization:localization",
    "sanity": "pipelines.commands.sanity:sanity",
    "faithfulness": "pipelines.commands.faithfulness:faithfulness",
    "toolbox": "pipelines.commands.toolbox:toolbox",
    "findings": "pipelines.commands.findings:findings",
}

HELP = {
    "demo": "Train, export, evaluate and visualize on the default data.",
    "project": "Project the strongest feature maps of images to pixels.",
    "train": "Train a ZFNet-family model (paper Sec. 3 recipe).",
    "export": "Export a .keras model to a SavedModel directory.",
    "evaluate": "Top-1/top-5 error of one or more models (single and 10-crop).",
    "visualize": "Top-9 activations projected to pixels (Fig. 2).",
    "atlas": "Every unit of every layer as a browsable static site (top-9, statistics, selectivity).",
    "evolution": "Feature evolution across training checkpoints (Fig. 4).",
    "filters": "First-layer filters and architecture diagnostics (Fig. 6).",
    "occlusion": "Occlusion sensitivity maps (Fig. 7).",
    "invariance": "Feature invariance to translation, scale, rotation (Fig. 5).",
    "correspondence": "Part correspondence analysis (Table 1).",
    "transfer": "Pretrained features vs training from scratch on new data (Tables 4-5, Fig. 9).",
    "layers": "How discriminative each layer's features are (Table 7).",
    "ablate": "Architecture variants on one budget (Table 3) and the first-layer comparison (Sec. 4.1).",
    "report": "One HTML page about one model: architecture, training, accuracy and the paper's figures.",
    "prepare": "Write a data source as sharded TFRecords of resized JPEGs (--data tfrecord:DIR).",
    "localization": "Where occlusion hurts, against object boxes (Fig. 7 made quantitative).",
    "emoji": "Build Emoji-64, the many-class colour analogue of ImageNet (1,560 classes, 64x64).",
    "sanity": "Do the projections depend on the weights? Randomisation tests (Adebayo et al. 2018).",
    "faithfulness": "Deletion and insertion curves of occlusion and projection maps (Petsiuk et al. 2018).",
    "findings": "Check each of the paper's findings on a reproduction's records (docs/reproduction.md).",
    "toolbox": "The live Deep Visualization Toolbox in the browser: webcam, maps, projections, occlusion.",
}


def command(name):
    """The Click command ``zf NAME`` (imported now)."""
    module, function = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), function)
