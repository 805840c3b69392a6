"""Data-efficiency helpers: log-spaced sizes, nested stratified subsets, examples needed to reach an accuracy."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import Dataset, Subset

from bench.data_efficiency import (
    dataset_labels,
    epochs_for,
    examples_needed,
    examples_to_reach,
    log_sizes,
    stratified_indices,
    stratified_subset,
)
from bench.datasets.common import TensorImageDataset
from bench.errors import UsageError


def test_log_sizes():
    assert log_sizes() == [5, 16, 50, 158, 500]
    assert log_sizes(10, 1000, 3) == [10, 100, 1000]
    assert log_sizes(1, 4, 10) == [1, 2, 3, 4]  # rounding repeats dropped
    assert log_sizes(7, 7, 1) == [7]
    for bad in ((0, 10, 3), (10, 5, 3), (5, 500, 1), (5, 500.0, 3)):
        with pytest.raises(UsageError):
            log_sizes(*bad)


def labelled(counts: list[int]) -> torch.Tensor:
    """Labels with counts[c] examples of class c, interleaved."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(5))]


def test_stratified_indices_balanced_nested_seeded():
    labels = labelled([30, 12, 20])
    previous: set[int] = set()
    for k in (1, 3, 5, 12):
        idx = stratified_indices(labels, k, seed=4)
        assert torch.bincount(labels[idx], minlength=3).tolist() == [k, k, k]
        assert idx.tolist() == sorted(set(idx.tolist()))  # sorted, no repeats
        assert previous <= set(idx.tolist())  # nested: the smaller subset is inside the larger
        previous = set(idx.tolist())
    assert torch.equal(stratified_indices(labels, 5, seed=4), stratified_indices(labels, 5, seed=4))
    assert not torch.equal(stratified_indices(labels, 5, seed=4), stratified_indices(labels, 5, seed=5))
    with pytest.raises(UsageError, match=r"class\(es\) 1 \(12\).*valid: 1\.\.12"):
        stratified_indices(labels, 13)
    with pytest.raises(UsageError, match="per_class"):
        stratified_indices(labels, 0)


class Plain(Dataset):
    """A dataset with neither `labels` nor `targets`: labels are read by iterating."""

    def __init__(self, labels: torch.Tensor) -> None:
        self.y = labels

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.zeros(1, 3, 3), int(self.y[i])


def test_stratified_subset_of_any_dataset():
    labels = labelled([8, 8])
    images = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1)
    data = TensorImageDataset(images, labels, info="meta")
    sub = stratified_subset(data, 3, seed=1)
    assert len(sub) == 6 and sub.info == "meta"
    assert sorted(int(sub[i][1]) for i in range(6)) == [0, 0, 0, 1, 1, 1]
    assert torch.equal(dataset_labels(sub), labels[list(sub.indices)])
    assert torch.equal(dataset_labels(Plain(labels)), labels)
    assert torch.equal(dataset_labels(Subset(Plain(labels), [3, 1])), labels[[3, 1]])
    assert stratified_subset(Plain(labels), 3, seed=1).indices == sub.indices  # same labels, same choice


def test_examples_to_reach_known_curves():
    sizes, acc = [5, 50, 500], [0.2, 0.6, 0.9]
    assert examples_to_reach(sizes, acc, 0.6) == pytest.approx(50)
    assert examples_to_reach(sizes, acc, 0.4) == pytest.approx(math.sqrt(5 * 50))  # halfway in log
    assert examples_to_reach(sizes, acc, 0.75) == pytest.approx(math.sqrt(50 * 500))
    assert examples_to_reach(sizes, acc, 0.9) == pytest.approx(500)
    assert examples_to_reach(sizes, acc, 0.95) is None
    assert examples_to_reach(sizes, acc, 0.1) == 5  # already there at the first size
    # not monotone: the first crossing counts
    assert examples_to_reach([1, 10, 100, 1000], [0.5, 0.8, 0.7, 0.9], 0.75) == pytest.approx(10 ** (5 / 6))
    assert examples_needed(sizes, acc, [0.6, 0.95]) == {0.6: pytest.approx(50), 0.95: None}


def test_examples_to_reach_rejects_bad_curves():
    for sizes, acc in (([5, 5], [0.1, 0.2]), ([50, 5], [0.1, 0.2]), ([0, 5], [0.1, 0.2]), ([5, 50], [0.1]),
                       ([5, 50], [0.1, math.nan]), ([], [])):
        with pytest.raises(UsageError):
            examples_to_reach(sizes, acc, 0.5)


def test_epochs_for_a_minimum_number_of_steps():
    assert epochs_for(50, 32, 8, 300) == 300  # 50 examples, batch 32: one step per epoch (last batch dropped)
    assert epochs_for(200, 32, 8, 300) == 50  # 6 steps per epoch
    assert epochs_for(5000, 32, 8, 300) == 8  # 156 steps per epoch: the epochs already give enough
    assert epochs_for(10, 32, 8, 20) == 20  # the whole set in one batch
    assert epochs_for(10, 32, 8) == 8
    with pytest.raises(UsageError):
        epochs_for(0, 32, 8, 300)
