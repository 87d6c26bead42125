"""Stand-ins for jaxtyping's ``Float``, ``Integer`` and ``Bool`` in the code an Arlow export
carries (:mod:`arlm.export.remote_code`), which must load where only torch and transformers are.

``Float[Tensor, "batch seq"]`` is ``typing.Annotated[Tensor, "batch seq"]``: the annotation keeps
its documented shape and, like jaxtyping's without a type checker, checks nothing at run time.
"""

from typing import Annotated, Any, Tuple


class _ShapedArray:
    """``Kind[array_type, "shape"]`` -> ``Annotated[array_type, "shape"]``."""

    def __class_getitem__(cls, params: Tuple[Any, str]) -> Any:
        array_type, shape = params
        return Annotated[array_type, shape]


class Float(_ShapedArray):
    """A floating-point array of the given shape."""


class Integer(_ShapedArray):
    """An integer array of the given shape."""


class Bool(_ShapedArray):
    """A boolean array of the given shape."""
