"""Run every benchmark: `python -m bench`."""

from __future__ import annotations

import sys

from bench import convert


def main() -> int:
    return convert.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
