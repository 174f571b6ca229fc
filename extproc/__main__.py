"""``python -m extproc``: see :mod:`extproc.cli`."""

from extproc.cli import main

raise SystemExit(main())
