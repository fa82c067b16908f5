"""The namespace of task modules: `watchrun.task.<task>` is the task `<task>`'s code.

Importing this package (which pickle does on its own when it reads a value that refers to a
class or function a task defines) installs the finder that builds those modules from the
project's files; see `watchrun.executors.taskmodules`.
"""

from watchrun.executors.taskmodules import install

install()
