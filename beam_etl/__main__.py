"""``python -m beam_etl`` — see :mod:`beam_etl.cli`."""

import sys

from beam_etl.cli import main

if __name__ == "__main__":
    sys.exit(main())
