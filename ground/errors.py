"""User-facing errors: the CLI prints the message as one line and exits with code 2."""


class AuditorError(Exception):
    """Bad input or an environment problem the user can fix. Never shown as a traceback."""

    exit_code = 2


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message: what a one-line error report shows."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:limit]
