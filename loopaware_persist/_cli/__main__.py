"""``python -m loopaware_persist._cli``, as before the CLI became a package."""

from . import main

if __name__ == "__main__":
    main()
