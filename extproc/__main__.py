"""``python -m extproc``: see :mod:`extproc.cli`."""

from extproc.cli import main

# Guarded: the capture process is started with multiprocessing's "spawn", which
# imports this module again under another name.
if __name__ == "__main__":
    raise SystemExit(main())
