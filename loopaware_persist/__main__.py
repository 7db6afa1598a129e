"""``python -m loopaware_persist``: the operator CLI, as the ``loopaware-persist`` script."""

from ._cli import main

if __name__ == "__main__":
    main()
