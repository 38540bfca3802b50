"""How much the exact logit lens moves a checkpoint's promoted tokens against the old formula.

    .venv/bin/python benchmarks/compare_logit_lens.py data/demo_run/checkpoints/step_001024

For every MLP unit of every layer: the top-10 promoted tokens of `precompute.model.unembed.direct_effects` (the
write direction centred for a LayerNorm, the effect centred over the vocabulary) against the old
``W_U @ (g * w_out)`` (no centring). Prints how many of the 10 each unit keeps (mean, worst, share keeping all).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from precompute.model import find_mlp_sites, load_checkpoint
from precompute.model.unembed import (
    direct_effects,
    down_columns,
    final_norm,
    final_norm_scale,
    subtracts_mean,
    unembedding,
)


def main(path: str) -> int:
    model = load_checkpoint(path, device="cpu", dtype="float32").model
    w_u = unembedding(model).float()
    kept = []
    with torch.no_grad():
        for site in find_mlp_sites(model):
            units = torch.arange(site.n_neurons)
            cols = down_columns(site, units)
            old = w_u @ (cols * final_norm_scale(model, cols.shape[0])[:, None])
            new = direct_effects(model, site, units)
            top_new, top_old = new.topk(10, dim=0).indices, old.topk(10, dim=0).indices
            kept += [len(set(top_new[:, j].tolist()) & set(top_old[:, j].tolist())) for j in range(len(units))]
    kept_t = torch.tensor(kept, dtype=torch.float)
    print(
        f"{path}: final norm {type(final_norm(model)).__name__} (centred: "
        f"{subtracts_mean(final_norm(model), cols.shape[0])}); {len(kept)} units; top-10 promoted tokens kept "
        f"by the exact lens: mean {kept_t.mean():.2f} of 10, worst {int(kept_t.min())}, all 10 kept by "
        f"{(kept_t == 10).float().mean():.1%} of units"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "data/demo_run/checkpoints/step_001024"))
