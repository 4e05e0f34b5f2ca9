"""The one error type for mistakes a user can fix (bad params, bad files, no network, no GPU)."""


class PipelineError(Exception):
    """Printed as a single line at the stage boundary (see `pipeline.core.cli.run_stage`), never as a traceback."""
