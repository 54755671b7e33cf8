"""attnlab: what does each attention variant cost, and what accuracy does it buy, as sequences get long?

Public plugin API:

    from attnlab import Attention, Capabilities, Range, register_attention, build_attention, available_attentions

Hyperparameter ranges are declared in the signature: `window: Annotated[int, Range(ge=1)] = 128`.
"""

from attnlab.host.threads import prefer_passive_openmp

prefer_passive_openmp()  # before torch is imported: OpenMP reads its wait policy once (attnlab/host/threads.py)

from attnlab.attention import (  # noqa: E402
    Attention,
    Capabilities,
    GateSpec,
    Range,
    available_attentions,
    build_attention,
    get_attention_class,
    register_attention,
)
from attnlab.errors import AttnlabError  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "Attention",
    "AttnlabError",
    "Capabilities",
    "GateSpec",
    "Range",
    "available_attentions",
    "build_attention",
    "get_attention_class",
    "register_attention",
]
