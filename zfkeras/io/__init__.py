"""What every other package leans on, with no TensorFlow: atomic writes (:mod:`.atomic`), argument
checks with one-line messages (:mod:`.validation`) and arrays turned into pictures (:mod:`.display`)."""
