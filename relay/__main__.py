"""Entry point for `python -m relay`."""

from relay.cli import main

raise SystemExit(main())
