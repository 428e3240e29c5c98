"""One exception type for problems the user can fix.

The CLI and the notebooks print its message as one sentence (what is wrong, what to do)
instead of a traceback.
"""


class MalariaError(Exception):
    """A problem with the user's input or environment, explained in one sentence."""
