"""The paper's Sec. 4 analyses, one module per figure or table; each takes a Probe or arrays and
returns a dataclass (``to_dict()`` for JSON):

- :mod:`.top_activations` Fig. 2 (the top-k activations of every map, projected);
- :mod:`.evolution` Fig. 4; :mod:`.invariance` Fig. 5; :mod:`.first_layer` Fig. 6 / Sec. 4.1;
- :mod:`.occlusion` Fig. 7; :mod:`.correspondence` Table 1; :mod:`.evaluate` Table 2 (top-1/top-5,
  10 crops, ensembles); :mod:`.summary` a report's confusion matrix;
- :mod:`.feature_visualization` beside Fig. 2: the image that maximises a unit, by optimization
  (Olah et al., Distill 2017), as OpenAI Microscope shows it next to the data.
"""
