"""``facebench score``: reading prediction files users bring and scoring them without running a model."""
