"""watchrun: a task runner for iterative Python work."""

__version__ = "0.1.0"
