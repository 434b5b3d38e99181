"""``python -m mixlab.cli`` runs the command-line interface (as ``python -m mixlab`` does)."""

from mixlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
