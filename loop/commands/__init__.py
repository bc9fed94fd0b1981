"""One module per `evalloop` command (trl's `make_parser` pattern): `make_parser(subparsers)`
adds the command's parser with its flags and returns it, `run(args) -> int` does the work by
calling library functions (heavy imports inside, so `--help` stays fast). loop/cli.py lists the
modules in COMMANDS, binds each parser to its `run` and maps errors to exit codes; helpers the
commands share are in `common.py`."""
