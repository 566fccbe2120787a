"""Receptive fields of the CIFAR ResNet-18 blocks and the thesis's patch sizes (Fig. 5.4).

Receptive fields. With r_0 = 1, j_0 = 1, a k x k conv of stride s maps
r <- r + (k - 1) * j and j <- j * s (1x1 shortcut convs do not widen anything):

    stem 3x3 conv:             r = 3,                      j = 1
    stage 1 (4 convs, s 1):    r = 3 + 4 * 2 * 1   = 11,   j = 1
    stage 2 (first conv s 2):  r = 11 + 2 * 1 + 3 * 2 * 2 = 25,   j = 2
    stage 3:                   r = 25 + 2 * 2 + 3 * 2 * 4 = 53,   j = 4
    stage 4:                   r = 53 + 2 * 4 + 3 * 2 * 8 = 109,  j = 8

so the true receptive fields are 11, 25, 53, 109 (`TRUE_RECEPTIVE_FIELDS`, checked by a
gradient test). The thesis's patch sizes 11, 19, 27, 35 (= 3 + 8b: "each BasicBlock adds two
3x3 convs, each conv adds 2 pixels", which ignores that a conv after a stride-2 layer adds
2 * j input pixels) are exact only for block 1. We keep the thesis's sizes as the patch sizes
(`RECEPTIVE_FIELDS`, the thesis's values): the central position's true receptive field
contains the whole patch (see `true_window`), so every patch pixel affects the objective, and
the part of the true field outside the patch is the conv's zero padding, i.e. fixed at 0 --
the optimized patch is a central crop of the true receptive field, as in the reference code.
`BLOCK_STRIDES` is the total stride j of the feature map after each block.
"""
from __future__ import annotations

from typing import Sequence

# Patch sizes of the thesis (docs/science.md): 3 + 8 * block. See the module docstring for why they
# are smaller than the true receptive fields for blocks 2-4.
RECEPTIVE_FIELDS: dict[int, int] = {1: 11, 2: 19, 3: 27, 4: 35}
# Total stride of the feature map after each block: stage strides 1, 2, 2, 2 multiplied.
BLOCK_STRIDES: dict[int, int] = {1: 1, 2: 2, 3: 4, 4: 8}
# True receptive field of one feature-map position after each block (derived above).
TRUE_RECEPTIVE_FIELDS: dict[int, int] = {1: 11, 2: 25, 3: 53, 4: 109}

BLOCKS = (1, 2, 3, 4)


def check_block(block: int) -> None:
    if block not in RECEPTIVE_FIELDS:
        raise ValueError(f"block must be one of {list(BLOCKS)}, got {block!r}")


def derive_receptive_field(
    block: int, stage_strides: Sequence[int] = (1, 2, 2, 2), blocks_per_stage: int = 2
) -> tuple[int, int]:
    """(receptive field, total stride) after `block` stages, from the architecture.

    Stem: one 3x3 conv of stride 1; every BasicBlock: a 3x3 conv (with the stage's stride
    in the first block of a stage) then a 3x3 conv of stride 1.
    """
    check_block(block)
    r, j = 3, 1  # stem conv
    for stride in stage_strides[:block]:
        for i in range(blocks_per_stage):
            r += 2 * j  # conv1 (3x3) sees the input grid before its stride
            j *= stride if i == 0 else 1
            r += 2 * j  # conv2 (3x3, stride 1)
    return r, j


def central_position(block: int) -> int:
    """Index (row = column) of the feature-map position whose activation is maximized."""
    check_block(block)
    return (RECEPTIVE_FIELDS[block] - 1) // (2 * BLOCK_STRIDES[block])


def true_window(block: int, position: int | None = None) -> tuple[int, int]:
    """Inclusive input-pixel range [lo, hi] (per axis) that feature position `position`
    after `block` depends on; defaults to `central_position(block)`. With padding 1 in every
    3x3 conv, position p is centred on input pixel p * stride. Parts of the range outside
    the input are zero padding."""
    check_block(block)
    if position is None:
        position = central_position(block)
    centre = position * BLOCK_STRIDES[block]
    half = (TRUE_RECEPTIVE_FIELDS[block] - 1) // 2
    return centre - half, centre + half
