"""What every other package leans on, with no TensorFlow: atomic writes (:mod:`.atomic`), argument
checks with one-line messages (:mod:`.validation`), arrays turned into pictures (:mod:`.display`),
and TensorFlow's C++ log lines kept off stderr (:mod:`.quiet`, which imports TensorFlow only when asked)."""
