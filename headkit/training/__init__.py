"""Backend-neutral training: the protocol, the rules, the state file, the result and progress.

No TensorFlow and no Estimator: a backend implements
:class:`~headkit.training.protocol.Backend`, and :func:`train_and_evaluate`
drives it.
"""

from headkit.training.loop import generic_loop, train_and_evaluate
from headkit.training.progress import ProgressDisplay, quiet_tensorflow
from headkit.training.protocol import Backend, LoopPlan
from headkit.training.result import Evaluation, TrainResult
from headkit.training.rules import BestExport, EarlyStopping

__all__ = ["train_and_evaluate", "generic_loop", "Backend", "LoopPlan", "EarlyStopping",
           "BestExport", "TrainResult", "Evaluation", "ProgressDisplay", "quiet_tensorflow"]
