"""The training side of the tasks: one module per task (its data, network, loss, validation score and
defaults), found through :mod:`idl.train.tasks.registry`. Importing this package registers the
built-in tasks."""

from idl.train.tasks import classification, instance, regression, semantic  # noqa: F401
