"""The training side of the tasks: one module per task (its data, network, loss, validation score and
defaults), found through :mod:`idl.train.tasks.registry`. Importing this package registers the
built-in tasks."""

# registered in the order users see them listed
# isort: off
from idl.train.tasks import semantic, instance, regression, classification  # noqa: F401
# isort: on
