"""``python -m loopaware_persist.aiida``: the ``aiida`` commands of ``loopaware-persist``."""

from ._cli import main

if __name__ == "__main__":
    main()
