"""Errors meant for the person at the terminal: the CLI prints them as one line, without a traceback."""


class CAIError(RuntimeError):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class BackendUnavailable(CAIError):
    """A backend's library is missing or its server cannot be reached."""
