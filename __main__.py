# `python -m tessera`: hands over to the composition root.
from tessera.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
