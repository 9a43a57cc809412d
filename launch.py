"""Start the Studio web app: the same as `python -m studio ui` (try --help)."""

import sys

from studio.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["ui", *sys.argv[1:]]))
