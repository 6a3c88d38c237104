"""Errors that reach the user as one line (exit status 2), never a traceback."""


class InputError(Exception):
    """Bad user input: a missing/unreadable/empty file, no face, a wrong checkpoint, ...

    The message is one line that names the file (or flag), says what is wrong and what to do. The CLI prints
    ``error: <message>`` on stderr and exits with status 2.
    """

    def __init__(self, message: str, path: object | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path is not None else message)
