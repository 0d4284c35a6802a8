"""Run the CLI in-process and capture what it prints: shared by the command tests."""

import io
from contextlib import redirect_stderr, redirect_stdout

from llmsizer.cli import main


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `llmsizer *argv`."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()
