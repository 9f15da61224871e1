"""The paper's Sec. 5 experiments: :mod:`.ablation` (Table 3), :mod:`.transfer` (Tables 4-5, Fig. 9),
:mod:`.layer_probes` (Table 7), and their shared pieces :mod:`.folds` and :mod:`.linear`."""
