"""--objective mse: gradient training of an affine stitch on the MSE to the end network's activation converges to the
closed-form least-squares fit (ps_inv), checked against a bound from the gradient at the stopping point."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from src.errors import UserError
from src.similarity import LeastSquaresFit
from src.stitching.batches import CachedBatches, FrontCache
from src.stitching.frank import FrankensteinNet
from src.stitching.affine import make_stitch
from src.stitching.objectives import check_objective, objective_loss
from src.stitching.train import StitchSettings, train_stitch

EPS32 = float(np.finfo(np.float32).eps)


def _net(out_channels: int, kernel: int, stride: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(4, out_channels, kernel, stride=stride, padding=kernel // 2), act=nn.Tanh(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(out_channels, 3)))


class _OneBatch:
    """A loader of one full batch, unshuffled and unaugmented (what FrontCache accepts)."""

    augment = shuffle = False

    def __init__(self, x, y):
        self.x, self.y, self.num_samples = x, y, x.shape[0]

    def __iter__(self):
        yield self.x, self.y


def _augmented(rows: torch.Tensor) -> np.ndarray:
    rows = rows.double().numpy()
    return np.hstack([rows, np.ones((rows.shape[0], 1))])


@pytest.mark.parametrize("stride,kind", [(1, "conv1x1"), (2, "strided_conv")])
def test_mse_training_converges_to_the_least_squares_fit(one_thread, stride, kind):
    # front: tanh of each of 4 independent input channels at 8x8 (a well-conditioned design);
    # end: 3 tanh channels of a random 3x3 conv at 8x8 (1x1 stitch) or 4x4 (2x2 stride-2 stitch).
    front_model, end_model = _net(4, 1, 1, seed=0), _net(3, 3, stride, seed=1)
    with torch.no_grad():
        front_model.conv.weight.copy_(torch.eye(4)[:, :, None, None])
        front_model.conv.bias.zero_()
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(256, 4, 8, 8, generator=gen), torch.randint(0, 3, (256,), generator=gen)
    with torch.no_grad():
        front_act, end_act = front_model.conv(x).tanh(), end_model.conv(x).tanh()
    stitch = make_stitch(front_act.shape[1:], end_act.shape[1:])
    assert stitch.kind.name == kind
    frank = FrankensteinNet(front_model, end_model, "act", "act", stitch)

    # The loss is mean over rows x outputs of (X~ theta - Y)^2 with X~ = [design rows, 1]: its Hessian is
    # 2 / (rows * outputs) X~^T X~ per output, so theta - theta* = H^-1 grad and
    # ||theta - theta*||_F <= ||X~^T (X~ Theta^T - Y)||_F / lambda_min(X~^T X~)   (exact for any Theta).
    rows_x, rows_y = stitch.design(front_act, end_act)
    design, target = _augmented(rows_x), rows_y.double().numpy()
    gram = design.T @ design
    eigen = np.linalg.eigvalsh(gram)
    lam_min, lam_max = eigen[0], eigen[-1]
    theta_star = np.linalg.lstsq(design, target, rcond=None)[0].T  # outputs x (inputs + 1), independent of the project

    # The project's closed form (what -i ps_inv and the result's 'ps_inv' are) is that minimiser, to float64 precision.
    fit = LeastSquaresFit()
    fit.update(rows_x, rows_y)
    ps_inv = fit.solve()
    ps_theta = np.hstack([np.asarray(ps_inv["w"]).reshape(stitch.out_features, -1), np.asarray(ps_inv["b"])[:, None]])
    assert np.linalg.norm(ps_theta - theta_star) <= 1e-9 * (lam_max / lam_min) * np.linalg.norm(theta_star)

    # Full-batch Nesterov SGD at lr = 1 / lambda_max(H) (stable), step schedule, on the cached activations.
    rows, outputs = design.shape[0], target.shape[1]
    lr = 1.0 / (2.0 * lam_max / (rows * outputs))
    cache = FrontCache(frank.front, _OneBatch(x, y), "cpu")
    batches = CachedBatches(frank, cache, [], True, batch_size=256, seed=0)
    settings = StitchSettings(epochs=300, lr=lr, weight_decay=0.0, optimizer="sgd", schedule="step", warmup_epochs=0.0,
                              l1=0.0, cka_reg=0.0, target_type="hard", temperature=1.0, objective="mse",
                              save_frequency=10)
    train_stitch(frank, batches, [(x, y)], settings, progress=False)
    after = stitch.param_dict()
    theta = np.hstack([after["w"].reshape(stitch.out_features, -1), after["b"][:, None]]).astype(np.float64)

    gradient = design.T @ (design @ theta.T - target)
    bound = np.linalg.norm(gradient) / lam_min
    distance = np.linalg.norm(theta - theta_star)
    assert distance <= bound * (1 + 1e-6)  # the theorem, as a check of theta* and of the gradient
    # Converged: float32 training stops where its gradient is rounding noise, about eps32 x sqrt(summed terms) of
    # its size, amplified by the conditioning lambda_max / lambda_min into the weights.
    converged = (lam_max / lam_min) * np.sqrt(rows) * EPS32 * np.linalg.norm(theta_star)
    assert bound <= converged, (bound, converged, distance)

    # Same accuracy: a prediction can only differ where the least-squares logit margin is below 2 max |logit change|.
    ps_stitch = stitch.fresh()
    ps_stitch.set_affine(ps_inv["w"], ps_inv["b"])
    with torch.no_grad():
        logits = frank(x)
        ps_logits = frank.end(None, ps_stitch(front_act))
    top2 = ps_logits.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    change = (logits - ps_logits).abs().max()
    sure = margin > 2 * change
    assert sure.float().mean() > 0.9  # the check below covers almost every sample
    assert (logits.argmax(1)[sure] == ps_logits.argmax(1)[sure]).all()
    acc, ps_acc = ((l.argmax(1) == y).float().mean().item() for l in (logits, ps_logits))
    assert abs(acc - ps_acc) <= (~sure).float().mean().item()


def test_mse_objective_is_the_mean_squared_error_to_the_receivers_activation():
    gen = torch.Generator().manual_seed(0)
    stitched, expected = torch.randn(5, 3, 4, 4, generator=gen), torch.randn(5, 3, 4, 4, generator=gen)
    loss = objective_loss("mse", None, stitched, {"end_target": expected}, "hard", 1.0, False)
    assert loss.item() == pytest.approx(((stitched.double() - expected.double()) ** 2).mean().item(), rel=1e-6)
    logits, labels = torch.randn(5, 10, generator=gen), torch.randint(0, 10, (5,), generator=gen)
    task = objective_loss("task", logits, stitched, {"labels": labels, "teachers": {}}, "hard", 1.0, False)
    assert task.item() == pytest.approx(-torch.log_softmax(logits.double(), 1)[torch.arange(5), labels].mean().item(),
                                        rel=1e-6)


def test_objective_both_is_for_matrices_only():
    check_objective("both", matrix=True)
    with pytest.raises(UserError, match="unknown --objective 'both'; choose one of task, mse .*stitch_matrix.py"):
        check_objective("both")
