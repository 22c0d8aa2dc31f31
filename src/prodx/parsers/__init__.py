"""Pure functions of the text of host files, command outputs and findings' evidence, each
with a sample in its docstring that runs as a doctest."""
