"""The project's error class: one line that names the file, what was found and the fix."""


class MilopypError(ValueError):
    """Bad input or configuration. The message is shown to the user as it is, on one line."""
