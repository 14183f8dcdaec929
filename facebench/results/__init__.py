"""Results: the SQLite store, evaluating one model on one protocol through it (``evaluate``), the
matrix of (model, protocol) cells (``cells``) and the environment every run records."""
