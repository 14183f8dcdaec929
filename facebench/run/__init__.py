"""Running models: the harness (batched forward, pre/post-processing on threads, per-item failures),
the face box a landmark model is given (``face_boxes``, ``framing``) and one-item prediction (``predict``)."""
