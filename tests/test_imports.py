"""The dependency rule: the analysis side never loads MLX; activations imports nothing of ours."""

from __future__ import annotations

import subprocess
import sys


def modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}; import sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_psiloscope_and_probes_do_not_import_mlx():
    loaded = modules_after("import psiloscope, probes, psiloscope.cli, psiloscope.report")
    assert not any(m == "mlx" or m.startswith("mlx.") or m.startswith("mlx_lm") for m in loaded)


def test_activations_imports_nothing_of_ours():
    loaded = modules_after("import activations")
    assert not {"psiloscope", "trainer", "probes"} & loaded
