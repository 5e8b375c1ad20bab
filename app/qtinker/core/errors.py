"""The one exception type the CLI and UI show to users as a single line."""


class QTinkerError(Exception):
    """A problem the user can fix: the message names the file, field or value and the fix.

    The CLI prints it as one line (`qtinker: <message>`) and exits with status 2;
    the UI shows it verbatim. Anything else that escapes is a bug and keeps its traceback.
    """
