"""The package keeps torch's is_fx_tracing notice out of users' logs, and nothing else."""

import subprocess
import sys


def test_is_fx_tracing_notice_dropped_other_warnings_kept():
    code = (
        "import logging, recsys, torch.fx\n"  # torch installs its own handler: the real case
        "torch.fx._symbolic_trace.is_fx_tracing()\n"
        "logging.getLogger('torch.fx._symbolic_trace').warning('another fx warning')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "is_fx_tracing will return true" not in out.stderr
    assert "another fx warning" in out.stderr


def test_without_recsys_torch_prints_the_notice():
    # guards the filter's match string: if torch rewords the notice, this fails and the filter is stale
    code = (
        "import logging, torch.fx\n"
        "torch.fx._symbolic_trace.is_fx_tracing()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "is_fx_tracing will return true" in out.stderr
