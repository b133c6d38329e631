"""The tasks on the inference side, one module each, found through :mod:`.registry`.

Importing this package registers the built-in tasks: semantic, instance (U-Net) and detection (Mask
R-CNN), regression, classification, and ``package`` and ``tensors`` for bioimage.io packages made
elsewhere (one tensor each way, or several).
"""

# registered in the order users see them listed
# isort: off
from idl.infer.tasks import semantic, instance, regression, classification, package, tensors  # noqa: F401
# isort: on
