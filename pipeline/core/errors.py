"""The one error type for mistakes a user can fix (bad params, bad files, no network, no GPU)."""


class PipelineError(Exception):
    """Printed as a single line at the stage boundary (see `pipeline.core.cli.run_stage`), never as a traceback."""


def first_line(error: BaseException) -> str:
    """A library's error as one line of a PipelineError: its message's first line, or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
