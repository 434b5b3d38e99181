"""``python -m mixlab`` (and ``torchrun -m mixlab``) runs the command-line interface."""

from mixlab.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
