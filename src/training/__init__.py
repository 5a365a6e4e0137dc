"""Training and evaluation loops shared by the scripts."""
from src.training.evaluate import EvalResult, evaluate, predict, task_loss
from src.training.optim import make_optimizer, step_milestones

__all__ = ["EvalResult", "evaluate", "predict", "task_loss", "make_optimizer", "step_milestones"]
