"""The package keeps a few library notices (recsys.NOTICES) out of users' logs, and nothing else."""

import subprocess
import sys

# each notice produced the way a training run produces it: torch.fx's, fbgemm_gpu's (torchrec imports it),
# Lightning's tip (a Trainer)
PRODUCE = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
    "{recsys}"
    "import torch.fx, torchrec, pytorch_lightning as pl\n"
    "torch.fx._symbolic_trace.is_fx_tracing()\n"
    "pl.Trainer(logger=False, enable_progress_bar=False, enable_checkpointing=False)\n"
    "logging.getLogger('torch.fx._symbolic_trace').warning('another fx warning')\n"
    "logging.info('another root message')\n"
)


def _stderr(with_recsys: bool) -> str:
    code = PRODUCE.format(recsys="import recsys\n" if with_recsys else "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr


def test_the_notices_are_dropped_and_other_messages_kept():
    from recsys import NOTICES

    err = _stderr(with_recsys=True)
    for _, start in NOTICES:
        assert start not in err
    assert "another fx warning" in err and "another root message" in err
    assert "GPU available: False" in err  # Lightning's other lines stay


def test_without_recsys_each_library_still_prints_its_notice():
    # guards the match strings: if a library rewords its notice, this fails and the entry is stale
    from recsys import NOTICES

    err = _stderr(with_recsys=False)
    for name, start in NOTICES:
        assert start in err, (name, start)
