"""The benchmark suite: ``python -m benchmarks`` or ``make bench`` (see ``README.md``).

It lives beside the package, not in it (as attrs' ``bench/`` and msgspec's
``benchmarks/`` do): the wheel ships ``loopaware_persist`` only, and the suite
uses its public API (``_private`` names the two exceptions and why). Run it
from a checkout with the ``bench`` extra installed. Nothing heavy is imported
until :func:`run` is called.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ("run",)


def run(
    *,
    quick: bool = False,
    out_dir: Path | str = Path("bench-results"),
    progress: bool = True,
    profile: bool = False,
    preset: str | None = None,
) -> int:
    """Run the benchmarks and write ``results.json``, ``results.md`` and ``results.png``.

    :param quick: the CI-sized run (large cases at 1 MB, fewer checkpoints and rounds)
    :param out_dir: where the results go (created if missing)
    :param progress: draw a progress bar on stderr when it is a terminal
    :param profile: profile each missed target with pyinstrument into ``out_dir``
    :param preset: ``"full"``, ``"quick"`` or ``"smoke"`` (overrides ``quick``)
    :raises ValueError: for an unknown preset
    :return: the process exit status (0: the run completed; missed targets are reported,
        not failed)
    """
    from ._config import Config
    from ._suite import run_suite

    name = preset or ("quick" if quick else "full")
    presets = {"full": Config.full, "quick": Config.quick, "smoke": Config.smoke}
    if name not in presets:
        msg = f"Unknown benchmark preset {name!r}; use one of {', '.join(presets)}."
        raise ValueError(msg)
    run_suite(presets[name](), Path(out_dir), progress=progress, profile=profile)
    return 0
