"""The run's chart: codec, storage and loop ratios in one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ("write_chart",)


def write_chart(path: Path, results: dict[str, Any]) -> bool:
    """Draw the codec, storage and loop ratios into a PNG (matplotlib, Agg backend).

    :param path: the destination
    :param results: one run's results
    :return: whether a chart was written (``False`` without matplotlib)
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    codecs = results.get("codecs", {}).get("cases", {})
    variants = [v for v in results.get("codecs", {}).get("variants", []) if v != "pickle-5"]
    names = list(codecs)
    width = 0.8 / max(1, len(variants))
    for panel, key, title in (
        (axes[0][0], "total", "encode+decode time (record) vs pickle-5"),
        (axes[0][1], "record_size", "stored size vs pickle-5"),
    ):
        for i, variant in enumerate(variants):
            values = [codecs[n]["variants"][variant].get("ratio", {}).get(key, 0.0) for n in names]
            panel.bar([x + i * width for x in range(len(names))], values, width, label=variant)
        panel.axhline(1.0, color="black", linewidth=0.8)
        panel.set_xticks([x + width * (len(variants) - 1) / 2 for x in range(len(names))])
        panel.set_xticklabels(names)
        panel.set_ylabel("x pickle protocol 5 (lower is better)")
        panel.set_title(title)
        panel.legend(fontsize=8)
    storage = results.get("storage", {})
    ops = storage.get("operations", {})
    panel = axes[1][0]
    stores = [store["name"] for store in storage.get("stores", [])]
    groups = [(op, size) for size in ("small", "medium", "big") for op in ("save", "load")]
    listing = storage.get("listing", {})
    for size, by_count in listing.items():
        top = max(by_count, key=int)
        groups.append((f"list {int(top):,}", size))
    width = 0.8 / max(1, len(stores))
    for i, store in enumerate(stores):
        values = []
        for op, size in groups:
            if op.startswith("list"):
                top = max(listing[size], key=int)
                stats = listing[size][top].get(store)
            else:
                stats = ops.get(op, {}).get(size, {}).get(store)
            values.append(stats["p50_s"] * 1e3 if stats else 0.0)
        panel.bar([x + i * width for x in range(len(groups))], values, width, label=store)
    panel.set_yscale("log")
    panel.set_xticks([x + width * (len(stores) - 1) / 2 for x in range(len(groups))])
    panel.set_xticklabels([f"{op}\n{size}" for op, size in groups], fontsize=8)
    panel.set_ylabel("p50, ms (log)")
    panel.set_title("storage operations")
    panel.legend(fontsize=7, ncol=2)
    panel = axes[1][1]
    loop = results.get("loop", {})
    labels: list[str] = []
    values = []
    for name, entry in loop.get("restore", {}).get("variants", {}).items():
        if name != "direct":
            labels.append(f"restore: {name}")
            values.append(entry["ratio"])
    for case, entry in loop.get("unbundle", {}).items():
        labels.append(f"unbundle {case}")
        values.append(entry["unbundle"]["variants"]["unbundle"]["ratio"])
        labels.append(f"load_process {case}")
        values.append(entry["load"]["variants"]["load_process"]["ratio"])
    panel.barh(labels, values, color="tab:purple")
    panel.axvline(1.0, color="black", linewidth=0.8)
    panel.set_xscale("log")
    panel.set_xlabel("x baseline (direct futures / plumpy unbundle / PicklePersister), log")
    panel.set_title("loop re-materialisation and whole-graph load")
    machine = results.get("machine", {})
    fig.suptitle(
        f"loopaware_persist benchmarks ({results.get('config', {}).get('name')}) — "
        f"{machine.get('cpu')}, {machine.get('cores')} cores, Python {machine.get('python')}"
    )
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    tmp.replace(path)
    return True
