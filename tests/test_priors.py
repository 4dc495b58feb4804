from __future__ import annotations

import pytest
import torch

from service.priors import combined_prior, edge_energy, gaussian_kernel_5x5, l2, total_variation
from service.reference import MultiScaleEdgeEnergy
from service.spec import PriorTerm


def test_gaussian_kernel_is_the_lectures() -> None:
    g = gaussian_kernel_5x5(torch.float64)
    assert g.shape == (5, 5)
    assert torch.isclose(g.sum(), torch.tensor(1.0, dtype=torch.float64))
    t = torch.arange(-2, 3, dtype=torch.float64)
    assert torch.allclose(g[2] / g[2, 2], torch.exp(-(t**2) / 2))


@pytest.mark.parametrize("size", [(224, 224), (64, 64), (37, 51), (6, 9)])
def test_fast_edge_energy_equals_the_literal_form(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 3, *size, dtype=torch.float64)
    literal = MultiScaleEdgeEnergy().double()
    per_image = torch.stack([literal(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(edge_energy(x), per_image, rtol=1e-6, atol=1e-9)  # the literal kernel is float32-rounded


def test_fast_edge_energy_gradient_equals_the_literal_form() -> None:
    torch.manual_seed(1)
    x1 = torch.randn(1, 3, 40, 40, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    MultiScaleEdgeEnergy().double()(x1).backward()
    edge_energy(x2).sum().backward()
    assert x1.grad is not None and x2.grad is not None
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-6, atol=1e-6)


def test_edge_energy_is_zero_for_a_flat_interior_and_positive_for_noise() -> None:
    assert float(edge_energy(torch.zeros(1, 3, 32, 32))) == 0.0
    assert float(edge_energy(torch.randn(1, 3, 32, 32))) > 0


def test_tv_and_l2() -> None:
    x = torch.zeros(2, 3, 4, 4)
    x[0, 0, 0, 0] = 1.0
    assert total_variation(x).tolist() == [2.0, 0.0]
    assert l2(x).tolist() == [1.0, 0.0]


def test_combined_prior_weights_and_none() -> None:
    x = torch.randn(2, 3, 16, 16)
    h = combined_prior([PriorTerm(name="tv", weight=0.5), PriorTerm(name="l2", weight=2.0)])
    assert torch.allclose(h(x), 0.5 * total_variation(x) + 2.0 * l2(x))
    assert combined_prior([PriorTerm(name="none")])(x).tolist() == [0.0, 0.0]
