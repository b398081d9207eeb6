"""Layer-wise linear probes on activation stores."""

from probes.design import ProbeDesign, build_design
from probes.fit import CLASSIFIERS, majority_baseline_correct, out_of_fold_predictions, sequence_bootstrap_ci
from probes.labels import TASKS, position_bucket, positions_in_sequence, task_targets, top_k_classes
from probes.ridge import LeaveOneOutRidgeClassifier
from probes.run import compare_probes, probe_hooks, read_design_rows, run_probes

__all__ = [
    "CLASSIFIERS",
    "LeaveOneOutRidgeClassifier",
    "TASKS",
    "ProbeDesign",
    "build_design",
    "compare_probes",
    "majority_baseline_correct",
    "out_of_fold_predictions",
    "position_bucket",
    "positions_in_sequence",
    "probe_hooks",
    "read_design_rows",
    "run_probes",
    "sequence_bootstrap_ci",
    "task_targets",
    "top_k_classes",
]
