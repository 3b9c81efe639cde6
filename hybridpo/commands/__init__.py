"""One module per `hybridpo` sub-command.

Each module defines `add_arguments(parser)` and `run(args) -> int`. `hybridpo.cli` reads argv and
dispatches; command modules receive parsed arguments and never touch sys.argv themselves.
"""
