"""`aios models`: the built-in presets and the Qwen/Llama models in the local HF cache."""

from __future__ import annotations

from . import console
from .errors import guarded
from .outputs import TableOrJson, check_format


@guarded
def models(format: TableOrJson = "table") -> None:
    """List presets and cached HF models with parameter count and weight bytes per dtype."""
    from engines.model.sources import cached_repos, read_config
    from engines.model.config import PRESETS
    from engines.errors import ModelError

    check_format(format, ("table", "json"))
    rows = []
    for name, cfg in PRESETS.items():
        rows.append({"model": name, "source": "preset", "path": None, "config": cfg})
    for repo, snap in cached_repos():
        try:
            cfg = read_config(snap)
        except ModelError:
            continue  # not a model aios can run
        rows.append({"model": repo, "source": "hf-cache", "path": str(snap), "config": cfg})
    out = [{
        "model": r["model"], "source": r["source"], "path": r["path"], "arch": r["config"].arch,
        "num_params": r["config"].num_params(), "num_layers": r["config"].num_layers,
        "hidden_size": r["config"].hidden_size,
        "weight_bytes": {dt: r["config"].weight_bytes(dt) for dt in ("float32", "bfloat16")},
    } for r in rows]
    if format == "json":
        import json

        print(json.dumps(out, indent=2))
        return
    from rich.table import Table

    from .fmt import fmt_bytes

    t = Table(title="models", title_justify="left",
              caption="presets: exact shapes of the real models, random weights from a fixed seed (gibberish "
                      "text); names with a '/' are in the local HF cache")
    t.add_column("model", no_wrap=True, min_width=18)
    t.add_column("arch", no_wrap=True)
    for col in ("params", "layers", "fp32", "bf16/fp16"):
        t.add_column(col, justify="right", no_wrap=True)
    for o in out:
        n = o["num_params"]
        params = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
        t.add_row(o["model"], o["arch"], params, str(o["num_layers"]),
                  fmt_bytes(o["weight_bytes"]["float32"]), fmt_bytes(o["weight_bytes"]["bfloat16"]))
    console.stdout().print(t)
