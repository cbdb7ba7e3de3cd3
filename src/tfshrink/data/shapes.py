"""Input shapes the converter can take: every dim known. One rule for convert and convert_qat:
an --input-shape override first (checked against the known dims), then batch 1 for an unknown
first dim, then the --preprocess image size for an unknown height and width; any other unknown dim
is a UserError that says which --input-shape to give."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tfshrink.data.calibration import InputSpec
from tfshrink.errors import UserError
from tfshrink.model.base import shape_text

__all__ = ["fill_shapes", "shape_text"]


def _np_dtype(dtype: str, name: str, where: str) -> str:
    try:
        return np.dtype(dtype).name
    except TypeError:
        raise UserError(f"{where}: input {name!r} is {dtype}, which TFLite inputs cannot take from numpy",
                        "convert between numeric tensors (--inputs)") from None


def fill_shapes(inputs: Sequence[tuple[str, str, Sequence[int | None] | None]],
                overrides: Mapping[str, Sequence[int]], where: str,
                image_size: tuple[int, int] | None = None, image_input: str | None = None,
                ) -> tuple[list[InputSpec], list[str]]:
    """(the inputs (name, dtype, shape or None) with every dim known, the inputs whose batch was
    set to 1). `overrides` are keyed by node name; `image_size` (width, height) fills the unknown
    height and width of a 4-D input (`image_input`, or any when None)."""
    specs: list[InputSpec] = []
    batch_fixed: list[str] = []
    for name, dtype, shape in inputs:
        override = overrides.get(name) or overrides.get(name.split(":")[0])
        if override is not None:
            given = f"--input-shape {name}={','.join(map(str, override))}"
            if shape is not None and len(shape) != len(override):
                raise UserError(f"{given} has rank {len(override)}, the input has rank {len(shape)} "
                                f"{shape_text(shape)}", "give every dim")
            if shape is not None and any(k is not None and k != d for k, d in zip(shape, override, strict=True)):
                raise UserError(f"{given} contradicts its known shape {shape_text(shape)}",
                                "only unknown dims (?) can be set")
            specs.append(InputSpec(name, _np_dtype(dtype, name, where), tuple(int(d) for d in override)))
            continue
        if shape is None:
            raise UserError(f"{where}: input {name!r} has unknown rank", f"give its shape with --input-shape {name}=1,...")
        dims = list(shape)
        if dims and dims[0] is None:
            # Batch 1: with an unknown batch a Flatten/Reshape keeps SHAPE / STRIDED_SLICE / PACK
            # ops on int32 shapes in the converted model.
            dims[0] = 1
            batch_fixed.append(name)
        if image_size is not None and len(dims) == 4 and image_input in (None, name):
            for axis, size in ((1, image_size[1]), (2, image_size[0])):
                if dims[axis] is None:
                    dims[axis] = size
        if any(d is None for d in dims):
            example = ",".join("1" if i == 0 else ("N" if d is None else str(d)) for i, d in enumerate(dims))
            raise UserError(f"{where}: input {name!r} has unknown dims {shape_text(shape)}",
                            f"fix them with --input-shape {name}={example}")
        specs.append(InputSpec(name, _np_dtype(dtype, name, where), tuple(int(d) for d in dims)))
    return specs, batch_fixed
