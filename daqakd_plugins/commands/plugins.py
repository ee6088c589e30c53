"""``daqakd plugins``: every plugin, where it came from, its hooks, each backend's availability, and every
registry (backends, augmentations, metrics, losses, architectures, generators, search spaces) with who registered each name."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plugins", help="list plugins, their hooks, backend availability and every registry")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def collect() -> dict[str, Any]:
    from ..plugins import (
        backend_status,
        get_augmentations,
        get_backends,
        get_loss_components,
        get_loss_presets,
        get_metrics,
        plugin_records,
        registered_by,
    )

    owners = registered_by()
    return {
        "plugins": [
            {"name": r.name, "module": r.module, "distribution": r.distribution, "version": r.version,
             "builtin": r.builtin, "hooks": r.hooks}
            for r in plugin_records()
        ],
        "backends": [backend_status(b) for b in get_backends().values()],
        "augmentations": sorted(get_augmentations()),
        "metrics": sorted(get_metrics()),
        "loss_components": sorted(get_loss_components()),
        "loss_presets": sorted(get_loss_presets()),
        "architectures": sorted(owners["architectures"]),
        "generators": sorted(owners["generators"]),
        "search_spaces": sorted(owners["search_spaces"]),
        "registered_by": owners,  # registry -> name -> the plugin that registered it
    }


def run(args: argparse.Namespace) -> int:
    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print("Plugins:")
    for r in info["plugins"]:
        src = "built-in" if r["builtin"] else f"{r['distribution'] or '?'} {r['version'] or ''}".strip()
        print(f"  {r['name']:<40} {src}")
        print(f"      hooks: {', '.join(r['hooks']) or '(none)'}")
    print("\nBackends:")
    for b in info["backends"]:
        if b["available"]:
            state = f"available ({b['module']} {b['version']})"
        else:
            state = f"NOT available -> {b['install']}"
        impl = "" if b["implemented"] else "  [adapter reports availability only]"
        print(f"  {b['backend']:<22} {state}{impl}")
        plans = b.get("bit_plans")
        ws = plans["per_layer_weight_bits"] if plans else []
        print(f"      bits: W{b['weight_bits'][0]}-{b['weight_bits'][1]} A{b['act_bits'][0]}-{b['act_bits'][1]}; "
              + (f"per layer (--layer-bits): weights {','.join(map(str, ws))}"
                 + (", input activations" if plans["per_layer_act_bits"] else ", no per-layer activations")
                 if plans else "no per-layer widths"))
    print(f"\nAugmentations ({len(info['augmentations'])}): {', '.join(info['augmentations'])}")
    print(f"Metrics: {', '.join(info['metrics']) or '(none)'}")
    print(f"Loss components: {', '.join(info['loss_components']) or '(none)'}")
    print(f"Loss presets: {', '.join(info['loss_presets']) or '(none)'}")
    print(f"Architectures: {', '.join(info['architectures']) or '(none)'}")
    print(f"Generators: {', '.join(info['generators']) or '(none)'}")
    print(f"Search spaces: {', '.join(info['search_spaces']) or '(none)'}")
    builtin = {r["name"] for r in info["plugins"] if r["builtin"]}
    third = {reg: {n: p for n, p in names.items() if p not in builtin} for reg, names in info["registered_by"].items()}
    if any(third.values()):
        print("\nRegistered by plugins other than the built-ins:")
        for reg, names in third.items():
            for n, p in names.items():
                print(f"  {reg:<16} {n:<28} {p}")
    return 0
