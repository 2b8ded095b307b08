"""The one description of a network: a version's name plus its architecture options.

Builders, ``create_model``, the LightningModules (their ``--help`` defaults), checkpoints
(``to_dict()``, a plain dict that ``torch.load(weights_only=True)`` reads), ``load_model``, export
and the report all read a :class:`ModelDescription`, so an option is declared, defaulted and
validated here only. Each version registers its own defaults (``register_model``); this module
imports no model file.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["ModelDescription", "describe", "add_version", "version_names", "STEMS", "NUM_DOWNSAMPLINGS"]

#: Input stems -> how many of the first stride-2 layers run at stride 1: the papers' ImageNet stem,
#: and the CIFAR adaptation that keeps early resolution (4x4 final map at 32x32).
STEMS = {"imagenet": 0, "cifar": 2}
#: Every MobileNet here has five stride-2 layers (output stride 32).
NUM_DOWNSAMPLINGS = 5
#: Options that are training choices, not architecture: a checkpoint may differ from a config in these.
TRAINING_OPTIONS = ("dropout",)

# name -> (defaults, {option: valid values} for the options only that version has)
_VERSIONS: dict[str, tuple[ModelDescription, dict[str, tuple[Any, ...]]]] = {}
#: Options that only some versions have: None means "this version has no such option".
VERSION_OPTIONS = ("activation",)


@dataclass(frozen=True)
class ModelDescription:
    """Everything that fixes a network's architecture (weights aside).

    Attributes:
        name: A registered version (``list_models()``).
        num_classes: Output classes.
        width_mult: Width multiplier (> 0); every layer's channels become ``make_divisible(w * c)``.
        stem: ``imagenet`` (the papers) or ``cifar`` (the first two stride-2 layers at stride 1).
        downsamples_removed: Overrides the stem's number of early stride-2 layers run at stride 1.
        dropout: Dropout before the classifier.
        activation: V1 only: ``relu`` (the paper) or ``relu6``.
    """

    name: str
    num_classes: int = 1000
    width_mult: float = 1.0
    stem: str = "imagenet"
    downsamples_removed: int | None = None
    dropout: float = 0.2
    activation: str | None = None

    def validate(self) -> ModelDescription:
        """Raises ``ValueError`` naming the wrong value and the valid ones; returns self."""
        if self.name not in _VERSIONS:
            raise ValueError(f"unknown model {self.name!r}; valid models: {', '.join(version_names())}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if not isinstance(self.width_mult, (int, float)) or not self.width_mult > 0:
            raise ValueError(f"width_mult must be > 0 (e.g. 0.25, 0.5, 0.75, 1.0, 1.4), got {self.width_mult!r}")
        if self.stem not in STEMS:
            raise ValueError(f"unknown stem {self.stem!r}; valid stems: {', '.join(STEMS)}")
        removed = self.downsamples_removed
        if removed is not None and not (isinstance(removed, int) and 0 <= removed <= NUM_DOWNSAMPLINGS):
            raise ValueError(f"downsamples_removed must be in 0..{NUM_DOWNSAMPLINGS}, got {removed!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        choices = _VERSIONS[self.name][1]
        for option in VERSION_OPTIONS:
            value = getattr(self, option)
            if option not in choices:
                if value is not None:
                    raise ValueError(f"unknown option(s) {option} for {self.name}; valid: {', '.join(self.options())}")
            elif value not in choices[option]:
                raise ValueError(f"unknown {option} {value!r} for {self.name}; valid: {', '.join(choices[option])}")
        return self

    @property
    def strides_removed(self) -> int:
        """How many of the first stride-2 layers run at stride 1: the stem's default unless given."""
        return STEMS[self.stem] if self.downsamples_removed is None else self.downsamples_removed

    def architecture_differences(self, other: ModelDescription) -> list[str]:
        """The architecture options (every field but the training options) on which the two differ."""
        a, b = self.to_dict(), other.to_dict()
        keys = [f.name for f in dataclasses.fields(self) if f.name not in TRAINING_OPTIONS]
        return [k for k in keys if a.get(k) != b.get(k)]

    def options(self) -> list[str]:
        """The option names this version takes (``name`` aside)."""
        choices = _VERSIONS[self.name][1] if self.name in _VERSIONS else {}
        return [
            f.name
            for f in dataclasses.fields(self)
            if f.name != "name" and (f.name not in VERSION_OPTIONS or f.name in choices)
        ]

    def replace(self, **changes: Any) -> ModelDescription:
        """A validated copy with some options changed; an option this version lacks is refused."""
        unknown = set(changes) - set(self.options())
        if unknown:
            raise ValueError(
                f"unknown option(s) {', '.join(sorted(unknown))} for {self.name}; valid: {', '.join(self.options())}"
            )
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (what checkpoints and ONNX metadata store); options the version lacks are left out."""
        return {"name": self.name, **{k: getattr(self, k) for k in self.options()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelDescription:
        """Reads ``to_dict()``'s output; options it lacks (older checkpoints) take the version's defaults."""
        data = dict(data)
        if "name" not in data:
            raise ValueError(f"a model description needs a name; valid models: {', '.join(version_names())}")
        if data.get("dropout", 0.0) is None:  # older create_model calls: None meant the version's default
            del data["dropout"]
        return describe(data.pop("name")).replace(**data)


def describe(name: str, **options: Any) -> ModelDescription:
    """The version's defaults, with ``options`` changed (validated)."""
    if name not in _VERSIONS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(version_names())}")
    defaults = _VERSIONS[name][0]
    return defaults.replace(**options) if options else defaults


def add_version(defaults: ModelDescription, choices: dict[str, tuple[Any, ...]] | None = None) -> None:
    """Declares a version's defaults and the valid values of its own options (``register_model`` calls it)."""
    if defaults.name in _VERSIONS:
        raise ValueError(f"a model named {defaults.name!r} is already registered")
    _VERSIONS[defaults.name] = (defaults, dict(choices or {}))
    defaults.validate()


def version_names() -> list[str]:
    return sorted(_VERSIONS)
