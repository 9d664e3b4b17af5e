"""The one exception type the build pipeline raises for problems a user can fix."""

from __future__ import annotations


class BuildError(Exception):
    """A problem with the inputs or the machine, worded for the person running ``nemo-build``.

    The message names what is wrong and what is accepted or what to do; the CLI prints it without a
    traceback and exits with status 2.
    """
