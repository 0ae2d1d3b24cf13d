"""The model-file tooling: everything that reads checkpoints or writes GGUF files, none of which
recognizing speech needs.

* :mod:`~nemotron_cpp.gguf.layout`: the two GGUF layouts (tensor names, shapes, types, metadata) and
  the one writer that produces both.
* :mod:`~nemotron_cpp.gguf.nemo_checkpoint`: reads a NeMo ``.nemo`` archive without PyTorch.
* :mod:`~nemotron_cpp.gguf.convert`: ``.nemo`` to GGUF (``nemotron-cpp convert``).
* :mod:`~nemotron_cpp.gguf.quantize`: a GGUF file to another weight type (``nemotron-cpp quantize``).
* :mod:`~nemotron_cpp.gguf.random_model`: random-weight test models (``nemotron_cpp.testing``), and
  the numpy reference decoder that tunes their joint and that the tests replay decisions with.

Importing these modules needs nothing beyond the package itself, and ``import nemotron_cpp`` loads
none of them. Writing a file needs the ``convert`` extra (``pip install 'nemotron-cpp[convert]'``: the
``gguf`` package, and PyYAML to read a ``.nemo`` config), imported only when a file is written or read.
"""
