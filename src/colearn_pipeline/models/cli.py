"""Print the parameter counts of the four nets as a Markdown table.

Usage: ``python -m colearn_pipeline.models [--width 64] [--depth 4] [--baseline-skips]``
(:mod:`colearn_pipeline.models.__main__` calls :func:`main`).
"""

from __future__ import annotations

import argparse

from colearn_pipeline.models.nets import DEFAULTS, MODEL_NAMES, build_model, count_parameters

#: Column -> attribute names of the sub-modules counted in it.
_PARTS = {
    "encoder(s)": ("ct_encoder", "pet_encoder", "encoder"),
    "co-learning units": ("colearn_units",),
    "reconstruction": ("reconstruction",),
    "1x1 head": ("head",),
}


def parameter_table(**kwargs) -> str:
    """Markdown table of trainable parameters per net and per component."""
    lines = [
        "| net | " + " | ".join(_PARTS) + " | total |",
        "|---|" + "---:|" * (len(_PARTS) + 1),
    ]
    for name in MODEL_NAMES:
        net = build_model(name, **kwargs)
        cells = []
        for attrs in _PARTS.values():
            n = sum(count_parameters(getattr(net, a)) for a in attrs if hasattr(net, a))
            cells.append(f"{n:,}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {count_parameters(net):,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print :func:`parameter_table` for the nets built with the given width, depth and classes."""
    parser = argparse.ArgumentParser(description="Parameter counts of the co-learning net and the baselines.")
    parser.add_argument("--width", type=int, default=DEFAULTS["width"])
    parser.add_argument("--depth", type=int, default=DEFAULTS["depth"])
    parser.add_argument("--num-classes", type=int, default=DEFAULTS["num_classes"])
    parser.add_argument("--baseline-skips", action="store_true")
    args = parser.parse_args(argv)
    print(
        parameter_table(
            width=args.width, depth=args.depth, num_classes=args.num_classes, baseline_skips=args.baseline_skips
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
