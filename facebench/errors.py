"""One base for every error facebench raises on purpose.

Each message names what is wrong and where: the file and line, the sample,
the protocol or the device. ``FacebenchError`` lets callers (the command
line, a notebook) catch facebench's own errors apart from bugs; each subclass
also derives from the built-in it refines (``ValueError``, ``LookupError``,
``RuntimeError``), so ``except ValueError`` keeps working.

==========================  ==============================================
error                       raised for
==========================  ==============================================
``ProtocolError``           a protocol file off its schema, or an id clash
``AnnotationError``         a malformed annotation file or line
``ImageError``              an image that cannot be read
``AssetError``              a weight/data file that cannot be pulled or fails its hash
``RegistryError``           a model name or reference that resolves to nothing
``IncompatibleError``       a model a protocol cannot score (said before running)
``GroundTruthError``        ground truth the protocol cannot score as it says
``PredictionFileError``     a prediction file given to ``facebench score``
``InventoryError`` …        device-farm inventory, devices and tool output
``UsageError``              an argument that names nothing (dataset, split, detector)
==========================  ==============================================
"""

from __future__ import annotations


class FacebenchError(Exception):
    """Base of facebench's deliberate errors; the message names the file, sample or device."""


class UsageError(FacebenchError, ValueError):
    """An argument that names nothing facebench knows (a dataset, split, root or detector)."""
