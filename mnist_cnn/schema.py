"""What every typed section of params.yaml shares: strict, frozen pydantic
models, and the registries that turn a ``type:``/``name:`` key into a class.

Types are strict: unknown keys are errors (a typo is never ignored), values
are never coerced (a boolean or a string where a number belongs is refused),
and .inf and .nan are not numbers a model can train with.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Tag

Activation = Literal["sigmoid", "relu", "tanh", "softmax", "linear"]


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def tagged_union(registry: dict[str, type[Frozen]], field: str, what: str) -> Any:
    """A pydantic union of ``registry``'s classes, chosen by each value's
    ``field`` (``type: conv2d`` -> the class registered as ``conv2d``). An
    unknown value is an error naming the known ones (mnist_cnn.cli.checks). Tags
    hold ":" (never part of a key) so error paths can drop them; an unknown
    value is the error type ``{what}_type``."""
    def tag(value: Any) -> str | None:
        kind = value.get(field) if isinstance(value, dict) else getattr(value, field, None)
        return f"{what}:{kind}" if isinstance(kind, str) and kind in registry else None

    members = tuple(Annotated[cls, Tag(f"{what}:{name}")] for name, cls in registry.items())
    return Annotated[Union[members],  # noqa: UP007 (a tuple of members: no | form)
                     Discriminator(tag, custom_error_type=f"{what}_type",
                                   custom_error_message=f"unknown {what}")]
