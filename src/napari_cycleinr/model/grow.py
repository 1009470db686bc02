"""Growing a trained model: more encoder blocks appended, starting as identities, so fine-tuning begins from
exactly the trained function and only has to learn what the new blocks add (here: a wider in-plane view).

Training a larger model from scratch would throw away hours of training; a residual block whose last
convolution is zero adds nothing until its weights move, so the grown model's first validation equals the
source model's.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from napari_cycleinr.errors import CycleINRError
from napari_cycleinr.model.config import ModelConfig
from napari_cycleinr.model.cycleinr import CycleINR


def grow_model(source: CycleINR, config: ModelConfig) -> CycleINR:
    """A model of `config` holding all of `source`'s weights; its extra encoder blocks start as identities.

    `config` may differ from the source's only by more blocks, whose dilations follow the source's."""
    old = source.config
    if config.blocks < old.blocks or config.block_dilations[: old.blocks] != old.block_dilations:
        raise CycleINRError(
            f"cannot grow a model with dilations {list(old.block_dilations)} into one with "
            f"{list(config.block_dilations)}: the new encoder must start with the old blocks"
        )
    if replace(config, blocks=old.blocks, dilations=old.block_dilations) != replace(old, dilations=old.block_dilations):
        raise CycleINRError("growing adds encoder blocks only: every other model option must equal the checkpoint's")
    grown = CycleINR(config).to(next(source.parameters()).device)
    missing, unexpected = grown.load_state_dict(source.state_dict(), strict=False)
    assert not unexpected, unexpected
    with torch.no_grad():
        for block in list(grown.encoder.body)[old.blocks :]:
            block.through_plane.weight.zero_()
            block.through_plane.bias.zero_()
    return grown
