"""The tasks on the inference side, one module each, found through :mod:`.registry`.

Importing this package registers the built-in tasks: semantic, instance (U-Net) and detection (Mask
R-CNN), regression, classification, and ``package`` for bioimage.io packages made elsewhere.
"""

from idl.infer.tasks import classification, instance, package, regression, semantic  # noqa: F401
