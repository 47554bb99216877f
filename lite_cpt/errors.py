"""Errors a user can cause and fix; the CLI prints them as one line, without a traceback."""


class UserError(Exception):
    """A problem with the user's input (recipe, paths, data, GPU size) and how to fix it."""
