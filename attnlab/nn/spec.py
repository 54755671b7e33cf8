"""Which attention variant (and hyperparameters) each attention role of a model uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from attnlab.attention import get_attention_class
from attnlab.attention.base import Capabilities, capability_error
from attnlab.attention.registry import validate_hyperparameters
from attnlab.errors import CapabilityError

# Role -> (capabilities it needs, the config key a user sets to override it).
ROLES: dict[str, tuple[tuple[str, ...], str]] = {
    "encoder_self": (("key_padding_mask",), "model.encoder.self_attention"),
    "decoder_self": (("causal",), "model.decoder.self_attention"),
    "cross": (("cross", "key_padding_mask"), "model.decoder.cross_attention"),
}


@dataclass(frozen=True)
class AttentionSpec:
    """A variant name and its validated hyperparameters."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | str) -> AttentionSpec:
        """From `cfg.attention` ({name: ..., <params>}) or a bare variant name."""
        if isinstance(cfg, str):
            return cls(cfg, validate_hyperparameters(cfg, {}))
        params = {k: v for k, v in dict(cfg).items() if k != "name"}
        return cls(cfg["name"], validate_hyperparameters(cfg["name"], params))

    def for_role(self, role: str, override: str | None) -> AttentionSpec:
        """The spec a role uses: the override's defaults when one is set, else this spec; checks capabilities."""
        spec = self if override in (None, self.name) else AttentionSpec.from_config(override)
        needed, key = ROLES[role]
        cls = get_attention_class(spec.name)
        for capability in needed:
            if not getattr(cls.capabilities, capability):
                base = capability_error(cls, capability)
                role_words = role.replace("_", " ") + " attention"
                raise CapabilityError(
                    f"{base} (needed by {role_words}); keep attention={spec.name} elsewhere and set "
                    f"{key}=<variant> for this role, e.g. {key}={_first_able(capability, spec.name)}"
                )
        return spec

    @property
    def capabilities(self) -> Capabilities:
        return get_attention_class(self.name).capabilities


def _first_able(capability: str, exclude: str) -> str:
    from attnlab.attention.registry import variants_with

    able = [n for n in variants_with(capability) if n != exclude]
    return "multihead" if "multihead" in able else (able[0] if able else "multihead")
