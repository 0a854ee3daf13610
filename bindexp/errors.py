"""The one base class for mistakes a user can fix: bad settings, impossible tasks, unloadable
models, bad sweep files. Runners print such an error as one `error:` line and exit with status 2;
anything else is a bug and keeps its traceback. No imports: every layer may use it."""


class BindexpError(ValueError):
    """A request bindexp cannot satisfy, explained in one line."""


class TaskError(BindexpError):
    """An impossible or malformed task request. The message is one line, fit for a CLI."""


class ModelError(BindexpError):
    """A model that cannot be loaded or used as asked. The message is one line, fit for a CLI."""


class InputError(BindexpError):
    """Bad input found after the settings parsed (a sweep file, an empty set of runs, a run folder)."""
