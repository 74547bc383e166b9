"""Fit LRM- and D-NPEFF on the ranks of a gloo process group; run by test_npeff_distributed via torchrun.

Usage: python -m torch.distributed.run --standalone --nproc_per_node=P npeff_dist_worker.py IN.pkl OUT_DIR
IN.pkl holds (lrm_pefs, diag_pefs, kwargs); each rank writes OUT_DIR/rank{r}.npz.
"""
import pickle
import sys
from pathlib import Path

import numpy as np
import torch.distributed as dist

from analysis.npeff import fit_d_npeff, fit_lrm_npeff


def main(inputs: str, out_dir: str) -> None:
    dist.init_process_group("gloo")
    with open(inputs, "rb") as f:
        lrm_pefs, diag_pefs, kwargs = pickle.load(f)
    lrm = fit_lrm_npeff(lrm_pefs, **kwargs["lrm"])
    diag = fit_d_npeff(diag_pefs, **kwargs["diag"])
    np.savez(Path(out_dir) / f"rank{dist.get_rank()}.npz", lrm_W=lrm.W, lrm_G=lrm.G, lrm_kept=lrm.kept,
             lrm_losses=lrm.losses, d_W=diag.W, d_H=diag.H, d_kept=diag.kept, d_losses=diag.losses)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
