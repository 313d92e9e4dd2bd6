"""`python -m callbot` is the `callbot` command."""

from callbot.signalling.cli import main

raise SystemExit(main())
